package store

import (
	"context"
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
