package store

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// writeTurn lets one write at a time through, in arrival order, except that a write that answers
// a sender (a delivery's record at accept) goes before the workers' writes that are waiting.
type writeTurn struct {
	mu     sync.Mutex
	busy   bool
	first  []chan struct{} // waiting writes that answer a sender
	others []chan struct{}
}

// acquire waits for the turn; an error means the caller gave up and holds nothing.
func (t *writeTurn) acquire(ctx context.Context, first bool) error {
	t.mu.Lock()
	if !t.busy {
		t.busy = true
		t.mu.Unlock()
		return nil
	}
	granted := make(chan struct{})
	queue := &t.others
	if first {
		queue = &t.first
	}
	*queue = append(*queue, granted)
	t.mu.Unlock()
	select {
	case <-granted:
		return nil
	case <-ctx.Done():
		t.mu.Lock()
		i := slices.Index(*queue, granted)
		if i >= 0 {
			*queue = slices.Delete(*queue, i, i+1)
		}
		t.mu.Unlock()
		if i < 0 { // granted meanwhile: pass it on
			t.release()
		}
		return fmt.Errorf("wait for the store: %w", ctx.Err())
	}
}

// release hands the turn to the next waiting write, those that answer a sender first.
func (t *writeTurn) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, queue := range []*[]chan struct{}{&t.first, &t.others} {
		if len(*queue) > 0 {
			next := (*queue)[0]
			*queue = (*queue)[1:]
			close(next) // the turn stays busy: it passes to next
			return
		}
	}
	t.busy = false
}
