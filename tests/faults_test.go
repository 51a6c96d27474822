package tests

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake/store"
)

// The store stopped for 60 s while 500 deliveries arrive: every sender gets its 202, and once the
// store is back every delivery succeeds exactly once (Upsert and Audit retry with backoff).
func TestStoreOutage(t *testing.T) {
	dbDir, dbAddr := t.TempDir(), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	emb, err := store.StartEmbedded(dbDir, dbAddr, quiet)
	require.NoError(t, err)
	defer func() { emb.Stop() }()
	s := startDev(t, "INTAKE_MONGODB_URI="+emb.URI())
	putIntegration(t, s, `{"identifier":"outage_hook","allow_unsigned":true,
	  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)

	const n = 500
	emb.Stop()
	stopped := time.Now()
	var accepted atomic.Int64
	fanOut(8, 0, n, func(i int) {
		code, out := postPath(t, s, "outage_hook", "", []byte(fmt.Sprintf(`{"id":"out-%03d","name":"T%d"}`, i, i)), nil)
		if assert.Equal(t, http.StatusAccepted, code, "%v", out) {
			accepted.Add(1)
		}
	})
	require.Equal(t, int64(n), accepted.Load(), "every sender got its 202 while the store was down")
	t.Logf("%d deliveries accepted with the store down in %s", n, time.Since(stopped).Round(time.Second))
	time.Sleep(time.Until(stopped.Add(60 * time.Second)))

	emb, err = store.StartEmbedded(dbDir, dbAddr, quiet)
	require.NoError(t, err)
	back := time.Now()
	count := func(path string) int {
		var items []map[string]any
		s.request("GET", path, nil, true, &items)
		return len(items)
	}
	require.Eventually(t, func() bool {
		return count("/api/v1/audit_logs?integration=outage_hook&status=SUCCESS&limit=1000") >= n
	}, 5*time.Minute, time.Second)
	t.Logf("all %d succeeded %s after the store came back", n, time.Since(back).Round(time.Second))
	time.Sleep(3 * time.Second) // anything processed twice would show up now
	assert.Equal(t, n, count("/api/v1/audit_logs?integration=outage_hook&status=SUCCESS&limit=1000"), "none doubled")
	assert.Equal(t, 0, count("/api/v1/audit_logs?integration=outage_hook&status=FAILURE&limit=1000"))
	assert.Equal(t, n, count("/api/v1/entities?template=team&limit=1000"), "none lost")
	assert.Equal(t, n, count("/api/v1/deliveries?integration=outage_hook&status=succeeded&limit=1000"))
}
