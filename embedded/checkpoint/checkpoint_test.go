package checkpoint_test

import (
	"database/sql"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	_ "modernc.org/sqlite"

	"intake/embedded/checkpoint"
)

func size(t *testing.T, file string) int64 {
	st, err := os.Stat(file)
	require.NoError(t, err)
	return st.Size()
}

// A server writing with wal_autocheckpoint=0 leaves its data in the log; the checkpointer copies
// it into the database, and the log is reused instead of growing with every write.
func TestCheckpointerCopiesTheLogAndKeepsItBounded(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "server.sqlite")
	db, err := sql.Open("sqlite", "file:"+file+"?_pragma=journal_mode(wal)&_pragma=synchronous(normal)&_pragma=wal_autocheckpoint(0)")
	require.NoError(t, err)
	defer db.Close()
	db.SetMaxOpenConns(1)
	_, err = db.Exec("CREATE TABLE t (v TEXT)")
	require.NoError(t, err)
	row := strings.Repeat("x", 1000)
	write := func() {
		tx, err := db.Begin()
		require.NoError(t, err)
		for i := 0; i < 2000; i++ {
			_, err := tx.Exec("INSERT INTO t VALUES (?)", row)
			require.NoError(t, err)
		}
		require.NoError(t, tx.Commit())
	}
	write()
	assert.Less(t, size(t, file), int64(100_000), "without checkpoints the rows stay in the log")

	cp := checkpoint.Start(slog.New(slog.NewTextHandler(io.Discard, nil)), filepath.Join(dir, "*.sqlite"))
	defer cp.Stop()
	require.Eventually(t, func() bool { return size(t, file) > 2_000_000 }, 30*time.Second, 50*time.Millisecond,
		"the rows reach the database file")
	walAfterFirst := size(t, file+"-wal")

	// A writer that finds the whole log copied starts it over: ten more rounds of the same
	// writes leave the log at most a round or two large, not eleven.
	for i := 0; i < 10; i++ {
		before := size(t, file)
		write()
		require.Eventually(t, func() bool { return size(t, file) > before+1_000_000 }, 30*time.Second, 50*time.Millisecond)
	}
	assert.Less(t, size(t, file+"-wal"), 3*walAfterFirst, "the log is reused, not grown")
	var n int
	require.NoError(t, db.QueryRow("SELECT count(*) FROM t").Scan(&n))
	assert.Equal(t, 22000, n)
}
