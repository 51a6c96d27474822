package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/store"
)

// FerretDB v1.24.2 holds a connection per operation of an update command until the command
// ends and hangs for good once its pool of 100 is used up: ten batches claiming and recording
// the outcomes of 100 records each, all at once, must still finish.
func TestConcurrentBatchesDoNotHangTheServer(t *testing.T) {
	s, _, _ := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for g := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ds []intake.Delivery
			var outs []store.DeliveryOutcome
			for i := 0; i < 100; i++ {
				ds = append(ds, intake.Delivery{ID: fmt.Sprintf("conc.%d.%d", g, i), Integration: "conc", Key: fmt.Sprint(i),
					Origin: intake.OriginKafka, Body: []byte(`{"n":1}`), ReceivedAt: time.Now()})
				outs = append(outs, store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: fmt.Sprint("wf", g), RunID: "run"})
			}
			if _, err := s.ClaimDeliveries(ctx, ds, fmt.Sprint("wf", g), "run"); err != nil {
				errs[g] = err
				return
			}
			if errs[g] = s.RecordBatchOutcomes(ctx, ds, outs); errs[g] == nil {
				errs[g] = s.RecordBatchOutcomes(ctx, ds, outs) // a retry: bulk updates of existing records
			}
		}()
	}
	wg.Wait()
	for g, err := range errs {
		assert.NoError(t, err, "batch %d", g)
	}
	r, err := s.GetDelivery(ctx, "conc.9.99")
	require.NoError(t, err)
	assert.Equal(t, intake.DeliverySucceeded, r.Status)
}
