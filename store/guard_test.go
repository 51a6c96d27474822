package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"intake/store"
)

// mergeLoop reads an entity, adds one property and writes it back at the revision it read,
// again on every conflict, as the Upsert activity does.
func mergeLoop(ctx context.Context, s *store.Store, id, key string, value any) error {
	for {
		got, err := s.EntitiesByID(ctx, []string{id})
		if err != nil {
			return err
		}
		props := map[string]any{}
		var rev int64
		if d := got[id]; d != nil {
			for k, v := range d.Properties {
				props[k] = v
			}
			rev = d.Rev
		}
		props[key] = value
		err = s.WriteEntities(ctx, []store.EntityWrite{{Rev: rev, Doc: &store.EntityDoc{ID: id, Template: "t", Identifier: id[2:], Properties: props, Relations: map[string]any{}}}})
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
}

// The revision guard holds across processes: two stores (two connection pools, two write
// locks, as two worker processes have) against one FerretDB.
func TestRevisionGuardAcrossProcesses(t *testing.T) {
	a, emb, _ := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
	require.NoError(t, err)
	defer b.Close(context.Background())
	raw, err := mongo.Connect(options.Client().ApplyURI(emb.URI()))
	require.NoError(t, err)
	defer raw.Disconnect(context.Background())
	claims := raw.Database("intake").Collection("entity_claims")

	t.Run("racing writers split over two processes lose no merge", func(t *testing.T) {
		const writers = 16
		var wg sync.WaitGroup
		errs := make([]error, writers)
		for i := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := []*store.Store{a, b}[i%2]
				errs[i] = mergeLoop(ctx, s, "t/race2", fmt.Sprintf("k%02d", i), i)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "writer %d", i)
		}
		got, err := a.EntitiesByID(ctx, []string{"t/race2"})
		require.NoError(t, err)
		assert.Len(t, got["t/race2"].Properties, writers, "%v", got["t/race2"].Properties)
		assert.Equal(t, int64(writers), got["t/race2"].Rev)
		n, err := claims.CountDocuments(ctx, bson.D{})
		require.NoError(t, err)
		assert.Zero(t, n, "every claim is released after its write")
	})

	doc := func(id, v string) *store.EntityDoc {
		return &store.EntityDoc{ID: id, Template: "t", Identifier: id[2:], Properties: map[string]any{"v": v}, Relations: map[string]any{}}
	}
	rev := func(id string) int64 {
		got, err := b.EntitiesByID(ctx, []string{id})
		require.NoError(t, err)
		require.Contains(t, got, id)
		return got[id].Rev
	}

	t.Run("an entity deleted and created again continues its revisions", func(t *testing.T) {
		require.NoError(t, a.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/phoenix", "1")}}))
		require.NoError(t, b.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/phoenix", "2"), Rev: 1}}))
		require.NoError(t, a.WriteEntities(ctx, []store.EntityWrite{{Delete: "t/phoenix", Rev: 2}}))
		require.NoError(t, b.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/phoenix", "reborn")}}))
		assert.Equal(t, int64(4), rev("t/phoenix"))
		// A writer that read revision 1 or 2 of the first life matches nothing of the second.
		assert.ErrorIs(t, a.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/phoenix", "stale"), Rev: 1}}), store.ErrConflict)
		assert.ErrorIs(t, a.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/phoenix", "stale"), Rev: 2}}), store.ErrConflict)
		// Deleted and created again within one call.
		require.NoError(t, a.WriteEntities(ctx, []store.EntityWrite{{Delete: "t/phoenix", Rev: 4}, {Doc: doc("t/phoenix", "again")}}))
		assert.Equal(t, int64(6), rev("t/phoenix"))
	})

	t.Run("a claim held by a live writer is a conflict; an orphaned one is passed over", func(t *testing.T) {
		require.NoError(t, a.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/orphan", "1")}}))
		_, err := claims.InsertOne(ctx, bson.D{{Key: "_id", Value: "t/orphan#2"}, {Key: "at", Value: time.Now().UTC()}})
		require.NoError(t, err)
		assert.ErrorIs(t, b.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/orphan", "2"), Rev: 1}}), store.ErrConflict,
			"another writer holds revision 2")

		// Its holder died two minutes ago without writing: revision 2 is skipped.
		_, err = claims.UpdateOne(ctx, bson.D{{Key: "_id", Value: "t/orphan#2"}}, bson.D{{Key: "$set", Value: bson.D{{Key: "at", Value: time.Now().Add(-2 * time.Minute).UTC()}}}})
		require.NoError(t, err)
		require.NoError(t, b.WriteEntities(ctx, []store.EntityWrite{{Doc: doc("t/orphan", "2"), Rev: 1}}))
		assert.Equal(t, int64(3), rev("t/orphan"))
		n, err := claims.CountDocuments(ctx, bson.D{})
		require.NoError(t, err)
		assert.Zero(t, n, "the orphan is deleted once passed over")
	})
}
