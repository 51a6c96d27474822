package store

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// A sole writer on FerretDB knows which entity IDs are stored: those stored before it started
// (loaded in pages), and those it writes. An ID it does not know is answered as absent without
// asking the server; the test shows it by storing an entity behind the store's back, which a
// lookup would have found. The insert planned from that wrong "absent" is a conflict, after which
// the entity is looked up and found.
func TestKnownEntityIDs(t *testing.T) {
	ctx := context.Background()
	s := turnStore(t)

	// stored before the sole writer starts: more than one page of the load
	const before = 2500
	docs := make([]any, before)
	for i := range docs {
		docs[i] = bson.D{{Key: "_id", Value: fmt.Sprintf("t/old-%d", i)}, {Key: "template", Value: "t"}, {Key: "rev", Value: int64(1)}}
	}
	_, err := s.db.Collection(colEntities).InsertMany(ctx, docs)
	require.NoError(t, err)

	s.SoleWriter(slog.Default())
	require.Eventually(t, func() bool {
		s.known.mu.Lock()
		defer s.known.mu.Unlock()
		return s.known.loaded
	}, 30*time.Second, 10*time.Millisecond)
	for _, i := range []int{0, 999, 1000, before - 1} {
		id := fmt.Sprintf("t/old-%d", i)
		assert.False(t, s.known.absent(id), id)
	}
	got, err := s.EntitiesByID(ctx, []string{"t/old-0", "t/old-2499", "t/never"})
	require.NoError(t, err)
	assert.Contains(t, got, "t/old-0", "a known entity is looked up")
	assert.Contains(t, got, "t/old-2499")
	assert.NotContains(t, got, "t/never")

	// behind the store's back: not known, so answered absent without a lookup
	behind := func(id string) {
		t.Helper()
		_, err := s.db.Collection(colEntities).InsertOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "template", Value: "t"},
			{Key: "identifier", Value: id[2:]}, {Key: "rev", Value: int64(1)}})
		require.NoError(t, err)
	}
	behind("t/sneaked")
	got, err = s.EntitiesByID(ctx, []string{"t/sneaked"})
	require.NoError(t, err)
	assert.NotContains(t, got, "t/sneaked", "an unknown ID is not looked up")

	// what it writes, it knows, even when its cache forgot the document
	write := func(w EntityWrite) error {
		return s.PlanAndWrite(ctx, Locks{Write: []string{w.id()}}, func(context.Context) ([]EntityWrite, error) {
			return []EntityWrite{w}, nil
		})
	}
	require.NoError(t, write(EntityWrite{Doc: &EntityDoc{ID: "t/new", Template: "t", Identifier: "new"}}))
	s.cache.drop("t/new")
	got, err = s.EntitiesByID(ctx, []string{"t/new"})
	require.NoError(t, err)
	require.Contains(t, got, "t/new")
	assert.Equal(t, int64(1), got["t/new"].Rev)

	// a delete forgets the ID once it applied
	require.NoError(t, write(EntityWrite{Delete: "t/new", Rev: 1}))
	assert.True(t, s.known.absent("t/new"))
	behind("t/new")
	got, err = s.EntitiesByID(ctx, []string{"t/new"})
	require.NoError(t, err)
	assert.NotContains(t, got, "t/new")

	// planned from a wrong "absent", the insert is a conflict; planned again, the entity is found
	err = write(EntityWrite{Doc: &EntityDoc{ID: "t/sneaked", Template: "t", Identifier: "sneaked"}})
	require.ErrorIs(t, err, ErrConflict)
	got, err = s.EntitiesByID(ctx, []string{"t/sneaked"})
	require.NoError(t, err)
	assert.Contains(t, got, "t/sneaked", "looked up once its insert failed")
}

// The set is a superset of what is stored, never a guess of absence: nothing is absent before it
// is loaded, and past maxKnown IDs it stops answering for good.
func TestKnownIDsBounds(t *testing.T) {
	var none *knownIDs
	assert.False(t, none.absent("t/a"), "without the set, every ID is looked up")
	none.add("t/a")
	none.remove("t/a")

	k := newKnownIDs()
	k.add("t/a")
	assert.False(t, k.absent("t/b"), "not loaded yet")
	k.ready()
	assert.True(t, k.absent("t/b"))
	assert.False(t, k.absent("t/a"))
	k.remove("t/a")
	assert.True(t, k.absent("t/a"))

	ids := make([]string, maxKnown+1)
	for i := range ids {
		ids[i] = fmt.Sprintf("t/%d", i)
	}
	k.add(ids...)
	assert.False(t, k.absent("t/b"), "over the bound, every ID is looked up")
	k.ready()
	assert.False(t, k.absent("t/b"), "and stays so")
	k.add("t/c")
	assert.Nil(t, k.ids, "the set is released")
}
