package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
)

// combiner merges the writes of one kind that wait for the write turn (OneWriteAtATime) at the
// same time into one bulk operation: once the turn comes, every request queued by then (up to
// max items) runs as one operation, and each caller gets its part of the answer. With one SQLite
// writer behind the embedded store, an insert of twenty audit entries costs about what an
// insert of one does: under load, a hundred Commits waited in the turn, one small write each.
type combiner[T any] struct {
	// run writes items in one operation; failed maps an item's position to its own error
	// (the others were written), err is the error of them all.
	run func(ctx context.Context, items []T) (failed map[int]error, err error)
	// max bounds the items of one operation (a request is never split).
	max int

	mu      sync.Mutex
	queue   []*combined[T]
	leading bool
}

type combined[T any] struct {
	items []T
	err   error
	done  chan struct{}
}

// combineTimeout bounds one combined operation, its wait for the turn included: the store's
// own operation timeout.
const combineTimeout = 30 * time.Second

// do writes items, with whatever else waits, in s's write turn. A caller that gives up while
// waiting gets its context's error; its items may still be written (every combined write is
// idempotent, so the retry that follows finds them).
func (c *combiner[T]) do(ctx context.Context, s *Store, items []T) error {
	r := &combined[T]{items: items, done: make(chan struct{})}
	c.mu.Lock()
	c.queue = append(c.queue, r)
	if !c.leading {
		// A goroutine of its own, not the first caller, serves the queue: no caller then waits
		// for others' writes after its own, nor stops serving them when its context ends.
		c.leading = true
		go c.lead(s)
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lead runs combined operations until the queue is empty, one turn each, so that writes of
// other kinds get theirs in between.
func (c *combiner[T]) lead(s *Store) {
	for {
		c.mu.Lock()
		if len(c.queue) == 0 {
			c.leading = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), combineTimeout)
		err := s.write(ctx, func() error {
			c.mu.Lock()
			var group []*combined[T]
			n := 0
			for len(c.queue) > 0 && (len(group) == 0 || n+len(c.queue[0].items) <= c.max) {
				n += len(c.queue[0].items)
				group, c.queue = append(group, c.queue[0]), c.queue[1:]
			}
			c.mu.Unlock()
			c.runGroup(ctx, group, n)
			return nil
		})
		cancel()
		if err != nil {
			// The turn never came (the store hung): everyone queued gets the error.
			c.mu.Lock()
			group := c.queue
			c.queue = nil
			c.mu.Unlock()
			for _, r := range group {
				r.err = err
				close(r.done)
			}
		}
	}
}

func (c *combiner[T]) runGroup(ctx context.Context, group []*combined[T], n int) {
	items := make([]T, 0, n)
	for _, r := range group {
		items = append(items, r.items...)
	}
	failed, err := c.run(ctx, items)
	at := 0
	for _, r := range group {
		r.err = err
		for i := at; r.err == nil && i < at+len(r.items); i++ {
			r.err = failed[i] // the first of its own items that failed
		}
		at += len(r.items)
		close(r.done)
	}
}

// writeErrors splits the error of an unordered bulk write: the errors of single items by their
// position (duplicate keys are not errors: the item existed), and any other error.
func writeErrors(err error, dupOK bool) (map[int]error, error) {
	if err == nil {
		return nil, nil
	}
	var bwe mongo.BulkWriteException
	if !errors.As(err, &bwe) || bwe.WriteConcernError != nil {
		return nil, err
	}
	failed := map[int]error{}
	for _, we := range bwe.WriteErrors {
		if dupOK && mongo.IsDuplicateKeyError(we) {
			continue
		}
		failed[we.Index] = we
	}
	return failed, nil
}
