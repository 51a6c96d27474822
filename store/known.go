package store

import (
	"context"
	"fmt"
	"sync"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// knownIDs is the set of entity IDs a sole writer's FerretDB store holds, so that planning a
// delivery of an entity never seen before does not ask the server: most deliveries under load
// create entities, and each such lookup cost about 0.4 ms of CPU (a round trip, a parsed SQL
// statement, an empty cursor), a twentieth of a whole delivery.
//
// It may hold IDs the store does not (which costs only the lookup it would have made), never
// the other way round, once loaded:
//   - every entity write goes through writeLocked, which adds the IDs it inserts or replaces
//     before the write and removes the IDs it deleted only after the delete applied;
//   - the load (loadKnown) scans every stored ID after the set started taking writes, so an entity
//     inserted meanwhile is in it, and one deleted meanwhile at worst stays in it.
//
// Should another process insert an entity after all (SoleWriter was wrong), the insert planned
// from "absent" fails as a duplicate, which the writer reads again (ErrConflict): its ID was
// added before the write, so the next plan looks it up.
//
// Past maxKnown IDs the set is dropped for good and every lookup asks the server again.
type knownIDs struct {
	mu     sync.Mutex
	ids    map[string]struct{}
	loaded bool // every stored ID is in ids: absence from it is absence from the store
	off    bool // over maxKnown
}

// maxKnown bounds the set: about 50 MB of IDs.
const maxKnown = 500_000

func newKnownIDs() *knownIDs { return &knownIDs{ids: map[string]struct{}{}} }

// absent reports whether id is surely not stored.
func (k *knownIDs) absent(id string) bool {
	if k == nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.ids[id]
	return k.loaded && !k.off && !ok
}

// add keeps ids, before they are written.
func (k *knownIDs) add(ids ...string) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.off {
		return
	}
	for _, id := range ids {
		k.ids[id] = struct{}{}
	}
	if len(k.ids) > maxKnown {
		k.off, k.ids = true, nil
	}
}

// remove forgets ids, once their deletes applied.
func (k *knownIDs) remove(ids ...string) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, id := range ids {
		delete(k.ids, id)
	}
}

// ready marks the set loaded.
func (k *knownIDs) ready() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.loaded = !k.off
}

// loadKnown adds every stored entity ID to s.known, a page at a time, then marks it loaded.
// Until then lookups ask the server, as they would without the set.
func (s *Store) loadKnown(ctx context.Context) error {
	k := s.known
	cur, err := s.db.Collection(colEntities).Find(ctx, bson.D{},
		options.Find().SetProjection(bson.D{{Key: "_id", Value: 1}}).SetBatchSize(1000))
	if err != nil {
		return fmt.Errorf("list entity ids: %w", err)
	}
	defer cur.Close(ctx)
	page := make([]string, 0, 1000)
	for cur.Next(ctx) {
		id, ok := cur.Current.Lookup("_id").StringValueOK()
		if !ok {
			continue // not an entity intake wrote: never looked up by a string ID
		}
		if page = append(page, id); len(page) == cap(page) {
			k.add(page...)
			page = page[:0]
		}
	}
	if err := cur.Err(); err != nil {
		return fmt.Errorf("list entity ids: %w", err)
	}
	k.add(page...)
	k.ready()
	return nil
}
