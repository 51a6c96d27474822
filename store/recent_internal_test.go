package store

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRecentIDsForgetsTheOldestPastItsCapacity(t *testing.T) {
	var r recentIDs
	for i := 0; i < recentCap+10; i++ {
		r.add(fmt.Sprint(i))
		r.add(fmt.Sprint(i)) // again: no second place
	}
	for i := 0; i < 10; i++ {
		assert.False(t, r.has(fmt.Sprint(i)), "%d is forgotten", i)
	}
	for i := 10; i < recentCap+10; i++ {
		if !r.has(fmt.Sprint(i)) {
			t.Fatalf("%d is forgotten too early", i)
		}
	}
	assert.Len(t, r.set, recentCap)

	// taken back, then added again elsewhere in the ring: its old place, reused, forgets it not
	assert.True(t, r.take("20"))
	assert.False(t, r.take("20"), "taken once")
	assert.False(t, r.has("20"))
	r.add("20")
	for i := 0; r.ring[20] == "20"; i++ {
		r.add(fmt.Sprint("new", i))
	}
	assert.True(t, r.has("20"), "remembered from its new place")
	for i := 0; r.has("20"); i++ {
		require.Less(t, i, recentCap, "forgotten once its new place is reused")
		r.add(fmt.Sprint("newer", i))
	}
}
