package store

import (
	"context"
	"maps"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// entityCache keeps recently read and written entities of a sole writer on FerretDB
// (SoleWriter), so that planning a delivery reads most of them from memory instead of the
// server: most deliveries touch entities written or read a moment ago (the repository being
// edited, the team or user a relation points to), and each lookup there costs a round trip,
// a parsed SQL statement and a document decoded twice (about 0.4 ms of CPU).
//
// It holds what is stored, never a guess, because the sole writer writes without revision
// checks (its locks are the guard):
//   - every entity write goes through writeLocked, which drops the written IDs before the write
//     and puts the written documents back only once it applied, all under the writer's stripes;
//   - a document read from the server is kept only when the reader holds its entity's stripe
//     (PlanAndWrite), so no write of it can run between the read and the keeping (a write of an
//     existing entity needs the stripe exclusively; a placeholder insert only creates);
//   - absence is never kept: a placeholder may be created under a shared stripe at any time.
//
// It is bounded: past maxCached entries, arbitrary ones are dropped.
type entityCache struct {
	mu   sync.Mutex
	docs map[string]*EntityDoc
}

// maxCached bounds the cache: about 10–20 MB of typical entities.
const maxCached = 16384

func newEntityCache() *entityCache { return &entityCache{docs: map[string]*EntityDoc{}} }

// get answers a copy of the cached entity, or nil.
func (c *entityCache) get(id string) *EntityDoc {
	c.mu.Lock()
	d := c.docs[id]
	c.mu.Unlock()
	if d == nil {
		return nil
	}
	return d.clone()
}

// put keeps a copy of d as a read would give it back (times in UTC, to the millisecond).
func (c *entityCache) put(d *EntityDoc) {
	d = d.clone()
	d.CreatedAt, d.UpdatedAt = asStored(d.CreatedAt), asStored(d.UpdatedAt)
	if d.EventTime != nil {
		t := asStored(*d.EventTime)
		d.EventTime = &t
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.docs[d.ID]; !ok && len(c.docs) >= maxCached {
		for id := range c.docs { // map order is random: an arbitrary victim
			delete(c.docs, id)
			break
		}
	}
	c.docs[d.ID] = d
}

// drop forgets ids.
func (c *entityCache) drop(ids ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.docs, id)
	}
}

// clone copies a document deeply enough that neither copy's changes reach the other: its maps
// and slices, all the way down.
func (d *EntityDoc) clone() *EntityDoc {
	c := *d
	c.Properties, c.Relations = cloneMap(d.Properties), cloneMap(d.Relations)
	if d.EventTime != nil {
		t := *d.EventTime
		c.EventTime = &t
	}
	return &c
}

func cloneMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	c := maps.Clone(m)
	for k, v := range c {
		c[k] = cloneValue(v)
	}
	return c
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return cloneMap(v)
	case bson.M:
		return cloneMap(v)
	case bson.A:
		return cloneValue([]any(v))
	case []any:
		c := make([]any, len(v))
		for i, e := range v {
			c[i] = cloneValue(e)
		}
		return c
	default:
		return v
	}
}

// asStored is a time as BSON keeps it: milliseconds, read back in UTC.
func asStored(t time.Time) time.Time { return t.Truncate(time.Millisecond).UTC() }

// lockedKey marks the context PlanAndWrite gives its plan: which stripes the plan holds.
type lockedKey struct{}

// holds reports whether ctx comes from a PlanAndWrite that holds id's stripe.
func holds(ctx context.Context, id string) bool {
	h, ok := ctx.Value(lockedKey{}).(held)
	return ok && h.covers(id)
}
