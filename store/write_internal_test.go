package store

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
)

// With OneWriteAtATime a write waits for the one in progress; a caller that gives up while
// waiting gets an error and its write never runs.
func TestOneWriteAtATime(t *testing.T) {
	s := &Store{}
	s.OneWriteAtATime()
	inside, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- s.write(context.Background(), func() error { close(inside); <-release; return nil })
	}()
	<-inside

	var ran atomic.Int32
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := s.write(ctx, func() error { ran.Add(1); return nil })
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Zero(t, ran.Load(), "a write that gave up did not run")

	second := make(chan error, 1)
	go func() { second <- s.write(context.Background(), func() error { ran.Add(1); return nil }) }()
	select {
	case <-second:
		t.Fatal("a write ran while another held the turn")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	require.NoError(t, <-first)
	require.NoError(t, <-second)
	assert.Equal(t, int32(1), ran.Load())

	// without it, writes run at once
	free := &Store{}
	require.NoError(t, free.write(context.Background(), func() error { return nil }))
}

// A write a sender waits for goes before the workers' writes already waiting; among themselves,
// writes go in arrival order.
func TestWriteTurnOrder(t *testing.T) {
	s := &Store{}
	s.OneWriteAtATime()
	inside, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.write(context.Background(), func() error { close(inside); <-release; return nil })
	}()
	<-inside
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	enqueue := func(name string, first bool, queued int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := func() error { mu.Lock(); order = append(order, name); mu.Unlock(); return nil }
			if first {
				_ = s.writeFirst(context.Background(), op)
			} else {
				_ = s.write(context.Background(), op)
			}
		}()
		// queued before the next one comes
		require.Eventually(t, func() bool {
			s.turn.mu.Lock()
			defer s.turn.mu.Unlock()
			return len(s.turn.first)+len(s.turn.others) == queued
		}, 5*time.Second, time.Millisecond)
	}
	enqueue("worker 1", false, 1)
	enqueue("worker 2", false, 2)
	enqueue("accept 1", true, 3)
	enqueue("accept 2", true, 4)
	close(release)
	wg.Wait()
	assert.Equal(t, []string{"accept 1", "accept 2", "worker 1", "worker 2"}, order)
	assert.False(t, s.turn.busy, "the turn is free once every write is done")
}

// Writes of one kind that wait for the turn together run as one operation; each caller gets the
// error of its own items, and one that gives up while waiting leaves the others unharmed.
func TestCombinedWrites(t *testing.T) {
	s := &Store{}
	s.OneWriteAtATime()
	var mu sync.Mutex
	var runs [][]int
	c := &combiner[int]{max: 64, run: func(_ context.Context, items []int) (map[int]error, error) {
		mu.Lock()
		runs = append(runs, append([]int(nil), items...))
		mu.Unlock()
		failed := map[int]error{}
		for i, v := range items {
			if v < 0 {
				failed[i] = fmt.Errorf("item %d refused", v)
			}
		}
		return failed, nil
	}}
	inside, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.write(context.Background(), func() error { close(inside); <-release; return nil })
	}()
	<-inside

	errs := make([]chan error, 10)
	for i := range errs {
		errs[i] = make(chan error, 1)
		items := []int{2 * i, 2*i + 1}
		if i == 3 {
			items[1] = -1
		}
		go func() { errs[i] <- c.do(context.Background(), s, items) }()
	}
	require.Eventually(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == 10 }, 5*time.Second, time.Millisecond)
	gaveUp, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, c.do(gaveUp, s, []int{100}), context.Canceled)

	close(release)
	for i := range errs {
		err := <-errs[i]
		if i == 3 {
			assert.EqualError(t, err, "item -1 refused", "a caller gets its own item's error")
		} else {
			assert.NoError(t, err, "caller %d", i)
		}
	}
	require.Eventually(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return !c.leading }, 5*time.Second, time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, runs, 1, "the writes that waited together ran as one operation")
	assert.Len(t, runs[0], 21, "every waiting request's items, the one whose caller gave up included")
}

// Outcomes combined while the turn is held go in bulks FerretDB can run: more updates in one
// bulk than its pool has connections waited forever.
func TestCombinedOutcomesOnFerretDB(t *testing.T) {
	ctx := context.Background()
	s := devStore(t)
	const n = 150
	// The records exist (accepted), as they do when a workflow records its outcome: FerretDB
	// then holds a connection for each update of a bulk until the bulk ends.
	var accepted []Accepted
	for i := range n {
		accepted = append(accepted, Accepted{Delivery: outcomeDelivery(i), WorkflowID: "wf", RunID: "r"})
	}
	require.NoError(t, s.RecordAcceptedMany(ctx, accepted))

	inside, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.write(ctx, func() error { close(inside); <-release; return nil })
	}()
	<-inside
	errs := make(chan error, n+2*maxUpdatesInFlight)
	for i := range n {
		go func() {
			errs <- s.RecordOutcome(ctx, outcomeDelivery(i), DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "wf", RunID: "r"})
		}()
	}
	require.Eventually(t, func() bool { s.outcomes.mu.Lock(); defer s.outcomes.mu.Unlock(); return len(s.outcomes.queue) == n },
		10*time.Second, time.Millisecond)
	// Entity writes waiting for the turn meanwhile, holding FerretDB's update allowance: the
	// outcomes' bulk, in the turn, must not wait for it.
	const entities = 2 * maxUpdatesInFlight
	for i := range entities {
		go func() {
			doc := &EntityDoc{ID: fmt.Sprintf("t/%d", i), Template: "t", Identifier: fmt.Sprint(i), Properties: map[string]any{}, Relations: map[string]any{}}
			errs <- s.WriteEntities(ctx, []EntityWrite{{Doc: doc}})
		}()
	}
	require.Eventually(t, func() bool {
		if s.updates.TryAcquire(1) {
			s.updates.Release(1)
			return false
		}
		return true
	}, 10*time.Second, time.Millisecond)
	close(release)
	for range n + entities {
		require.NoError(t, <-errs)
	}
	for i := range n {
		rec, err := s.GetDelivery(ctx, fmt.Sprintf("o.%d", i))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, rec.Status)
	}
}

func outcomeDelivery(i int) intake.Delivery {
	return intake.Delivery{ID: fmt.Sprintf("o.%d", i), Integration: "o", Key: fmt.Sprint(i), Origin: intake.OriginWebhook,
		Body: []byte(`{}`), ReceivedAt: time.Now()}
}

// Entity writes of several deliveries waiting together run as one ordered bulk: the deliveries
// before the first write that fails are written, that one and those after it get ErrConflict
// (and nothing of the later ones is written), so each plans again as it would alone.
func TestCombinedEntityWrites(t *testing.T) {
	ctx := context.Background()
	s := devStore(t)
	doc := func(id string) *EntityDoc {
		return &EntityDoc{ID: "t/" + id, Template: "t", Identifier: id, Properties: map[string]any{}, Relations: map[string]any{}}
	}
	require.NoError(t, s.WriteEntities(ctx, []EntityWrite{{Doc: doc("taken")}}))

	inside, release := make(chan struct{}), make(chan struct{})
	go func() {
		_ = s.write(ctx, func() error { close(inside); <-release; return nil })
	}()
	<-inside
	results := map[string]chan error{}
	for _, id := range []string{"first", "taken", "after"} {
		results[id] = make(chan error, 1)
		go func() {
			// as a Commit writes: planned under its locks, no revision re-read
			results[id] <- s.PlanAndWrite(ctx, Locks{Write: []string{"t/" + id}}, func(context.Context) ([]EntityWrite, error) {
				return []EntityWrite{{Doc: doc(id)}}, nil
			})
		}()
		// queued in this order
		require.Eventually(t, func() bool {
			s.entities.mu.Lock()
			defer s.entities.mu.Unlock()
			return len(s.entities.queue) == len(results)
		},
			5*time.Second, time.Millisecond)
	}
	close(release)
	assert.NoError(t, <-results["first"])
	assert.ErrorIs(t, <-results["taken"], ErrConflict, "inserting an entity that exists is a conflict")
	assert.ErrorIs(t, <-results["after"], ErrConflict, "a write after the failed one never ran")
	got, err := s.EntitiesByID(ctx, []string{"t/first", "t/after"})
	require.NoError(t, err)
	assert.Contains(t, got, "t/first")
	assert.NotContains(t, got, "t/after")
	require.NoError(t, s.WriteEntities(ctx, []EntityWrite{{Doc: doc("after")}}), "planned again, it is written")
}

// devStore is a store on its own embedded FerretDB, set up as intake dev runs it: one write at a
// time, sole writer.
func devStore(t *testing.T) *Store {
	t.Helper()
	s := turnStore(t)
	s.SoleWriter(slog.Default())
	return s
}

// turnStore is devStore before it is declared the sole writer.
func turnStore(t *testing.T) *Store {
	t.Helper()
	emb, err := StartEmbedded(t.TempDir(), "127.0.0.1:0", slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	t.Cleanup(emb.Stop)
	s, err := Open(context.Background(), emb.URI(), "intake")
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	s.OneWriteAtATime()
	return s
}

// A batch's writes (its claims, its records, the outcomes of records that existed) and the
// record of a rejected delivery take the write turn like every other write: none reaches the
// server while another write holds it.
func TestBatchWritesTakeTheTurn(t *testing.T) {
	ctx := context.Background()
	s := devStore(t)
	ds := []intake.Delivery{outcomeDelivery(1), outcomeDelivery(2)}
	require.NoError(t, s.RecordAcceptedMany(ctx, []Accepted{{Delivery: ds[1], WorkflowID: "wf", RunID: "r"}}))
	outcomes := []DeliveryOutcome{{Status: intake.DeliverySucceeded, WorkflowID: "wf", RunID: "r"}, {Status: intake.DeliverySucceeded, WorkflowID: "wf", RunID: "r"}}

	for name, write := range map[string]func() error{
		"claims": func() error { _, err := s.ClaimDeliveries(ctx, ds, "wf", "r"); return err },
		// the second record exists: its outcome is an update (RecordOutcomes) after the insert
		"records": func() error { return s.RecordBatchOutcomes(ctx, ds, outcomes) },
		"rejected": func() error {
			return s.RecordRejected(ctx, outcomeDelivery(3), intake.Failure{Type: intake.ErrValidation, Message: "no"})
		},
	} {
		t.Run(name, func(t *testing.T) {
			inside, release := make(chan struct{}), make(chan struct{})
			held := make(chan error, 1)
			go func() { held <- s.write(ctx, func() error { close(inside); <-release; return nil }) }()
			<-inside
			done := make(chan error, 1)
			go func() { done <- write() }()
			var early bool
			select {
			case <-done:
				early = true
			case <-time.After(200 * time.Millisecond):
			}
			close(release)
			require.NoError(t, <-held)
			if !early {
				require.NoError(t, <-done)
			}
			assert.False(t, early, "written while another write held the turn")
		})
	}
	for i := 1; i <= 2; i++ {
		rec, err := s.GetDelivery(ctx, fmt.Sprintf("o.%d", i))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, rec.Status)
	}
	rec, err := s.GetDelivery(ctx, "o.3")
	require.NoError(t, err)
	assert.Equal(t, intake.DeliveryFailed, rec.Status)
}
