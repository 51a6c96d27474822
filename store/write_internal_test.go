package store

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
