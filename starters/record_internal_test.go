package starters

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/store"
)

// The receiver's records of accepted deliveries, against the embedded store: each written
// RecordEvery after its accept, not sooner; one whose workflow recorded the delivery first is
// left as the workflow wrote it; what is queued at shutdown is written before the recorder ends.
func TestAcceptedRecords(t *testing.T) {
	emb, err := store.StartEmbedded(t.TempDir(), "127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(emb.Stop)
	ctx := context.Background()
	st, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("k"))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.Close(context.Background()) })

	a := &Acceptor{Store: st, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), RecordAtOnce: true}
	rctx, stop := context.WithCancel(ctx)
	done := a.StartRecording(rctx)
	delivery := func(key string) intake.Delivery {
		return intake.Delivery{ID: "rec." + key, Integration: "rec", Key: key, Origin: intake.OriginWebhook,
			Body: []byte(`{}`), Headers: map[string]string{}, ReceivedAt: time.Now().UTC()}
	}
	status := func(d intake.Delivery) string {
		r, err := st.GetDelivery(ctx, d.ID)
		if err != nil {
			return err.Error()
		}
		return r.Status
	}

	running, finished := delivery("running"), delivery("finished")
	queued := time.Now()
	a.accepted <- store.Accepted{Delivery: running, WorkflowID: "wf-running", RunID: "r"}
	a.accepted <- store.Accepted{Delivery: finished, WorkflowID: "wf-finished", RunID: "r"}
	require.NoError(t, st.RecordOutcome(ctx, finished, store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "wf-finished", RunID: "r"}))
	time.Sleep(RecordEvery / 2)
	assert.Equal(t, store.ErrNotFound.Error(), status(running), "not written before RecordEvery")
	require.Eventually(t, func() bool { return status(running) == intake.StatusAccepted }, 5*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(queued), RecordEvery)
	assert.Equal(t, intake.DeliverySucceeded, status(finished), "the workflow's record is kept")

	last := delivery("at-shutdown")
	a.accepted <- store.Accepted{Delivery: last, WorkflowID: "wf-last", RunID: "r"}
	stop()
	<-done
	assert.Equal(t, intake.StatusAccepted, status(last), "written before the recorder ends")
}
