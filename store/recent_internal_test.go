package store

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
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
}
