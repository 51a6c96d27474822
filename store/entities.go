package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"intake"
)

// EntityKey is an entity's _id: "{template}/{identifier}".
func EntityKey(template, identifier string) string { return template + "/" + identifier }

// EntityDoc is an entity as stored. LastRun and LastOutcome remember which workflow run wrote it
// last and what that was, so a retried activity reports the outcome of its first attempt.
type EntityDoc struct {
	ID          string         `bson:"_id"`
	Template    string         `bson:"template"`
	Identifier  string         `bson:"identifier"`
	Title       string         `bson:"title,omitempty"`
	Properties  map[string]any `bson:"properties"`
	Relations   map[string]any `bson:"relations"`
	CreatedAt   time.Time      `bson:"created_at"`
	UpdatedAt   time.Time      `bson:"updated_at"`
	EventTime   *time.Time     `bson:"event_time,omitempty"`
	CreatedBy   string         `bson:"created_by,omitempty"`
	UpdatedBy   string         `bson:"updated_by,omitempty"`
	LastRun     string         `bson:"last_run,omitempty"`
	LastOutcome string         `bson:"last_outcome,omitempty"`
	// Rev counts the writes of this entity: a write names the revision it read (optimistic
	// concurrency), so two deliveries merging into one entity never lose an update.
	Rev int64 `bson:"rev"`
}

// Entity converts to the API shape.
func (d *EntityDoc) Entity() intake.Entity {
	e := intake.Entity{
		Identifier: d.Identifier, Template: d.Template, Title: d.Title,
		Properties: d.Properties, Relations: d.Relations,
		CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, EventTime: d.EventTime,
		CreatedBy: d.CreatedBy, UpdatedBy: d.UpdatedBy,
	}
	if e.Properties == nil {
		e.Properties = map[string]any{}
	}
	if e.Relations == nil {
		e.Relations = map[string]any{}
	}
	return e
}

// EntitiesByID loads entities by _id (one $in query per chunk; on FerretDB one indexed lookup
// per id, or none for an entity a sole writer has in its cache); absent ones are missing from
// the map.
func (s *Store) EntitiesByID(ctx context.Context, ids []string) (map[string]*EntityDoc, error) {
	out := make(map[string]*EntityDoc, len(ids))
	if s.idOnly {
		for _, id := range ids {
			if s.cache != nil {
				if d := s.cache.get(id); d != nil {
					out[id] = d
					continue
				}
			}
			if s.known.absent(id) {
				continue
			}
			var d EntityDoc
			err := s.findOne(ctx, colEntities, bson.D{{Key: "_id", Value: id}}).Decode(&d)
			if errors.Is(err, mongo.ErrNoDocuments) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("find entity %s: %w", id, err)
			}
			d.loaded()
			out[id] = &d
			if s.cache != nil && holds(ctx, id) {
				s.cache.put(&d)
			}
		}
		return out, nil
	}
	for start := 0; start < len(ids); start += BulkChunk {
		chunk := ids[start:min(start+BulkChunk, len(ids))]
		cur, err := s.db.Collection(colEntities).Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: chunk}}}})
		if err != nil {
			return nil, fmt.Errorf("find entities: %w", err)
		}
		var docs []EntityDoc
		if err := cur.All(ctx, &docs); err != nil {
			return nil, fmt.Errorf("find entities: %w", err)
		}
		for i := range docs {
			docs[i].loaded()
			out[docs[i].ID] = &docs[i]
		}
	}
	return out, nil
}

// EntityWrite is one write of a bulk: a full document to store, or a delete of the _id in
// Delete. Rev is the revision the writer read (0: the entity did not exist); the write applies
// only if the stored entity is still at that revision. A stored Doc gets revision Rev+1.
type EntityWrite struct {
	Doc    *EntityDoc
	Delete string
	Rev    int64
}

// ErrConflict means an entity changed between read and write; read again and recompute.
var ErrConflict = errors.New("entity changed concurrently")

// WriteEntities applies writes in ordered bulk chunks, each addressed by _id and guarded by the
// revision it read. A chunk that does not apply in full returns ErrConflict (the writes before
// the conflicting one have been applied). A new entity (Rev 0) is inserted, so a second creator
// gets a duplicate key (ErrConflict) on any server. On MongoDB the guard of an existing one is
// part of each write's filter, which MongoDB applies atomically per document. On FerretDB,
// which matches a filter and then writes in two steps, each write first claims its revision
// with an insert (see guard.go), or, when this process is the store's sole writer
// (SoleWriter), the revisions are checked by _id under the process's locks of those entities,
// which is then enough.
func (s *Store) WriteEntities(ctx context.Context, writes []EntityWrite) error {
	// In-process writes of one entity go one at a time: it spares them conflicts with each
	// other. Correctness across processes comes from the filter (MongoDB) or the revision
	// claims (FerretDB).
	ids := make([]string, len(writes))
	for i, w := range writes {
		ids[i] = w.id()
	}
	locked := s.entityLocks.lock(Locks{Write: ids})
	defer locked.unlock()
	return s.writeLocked(ctx, writes, s.idOnly && s.soleWriter)
}

// PlanAndWrite writes what plan returns, as WriteEntities would; locks name the entities plan
// reads. When this process is the sole writer of a FerretDB store, plan runs under their locks:
// nothing can change what it read before its writes apply, so they need no revision check,
// which saves a lookup per entity. Deliveries of other entities plan and write meanwhile. A
// write the locks do not allow (see Locks) is ErrConflict: read again, with other locks.
func (s *Store) PlanAndWrite(ctx context.Context, locks Locks, plan func(context.Context) ([]EntityWrite, error)) error {
	if !s.idOnly || !s.soleWriter {
		writes, err := plan(ctx)
		if err != nil {
			return err
		}
		return s.WriteEntities(ctx, writes)
	}
	locked := s.entityLocks.lock(locks)
	defer locked.unlock()
	writes, err := plan(context.WithValue(ctx, lockedKey{}, locked)) // its reads may fill the cache
	if err != nil {
		return err
	}
	for _, w := range writes {
		if !locked.allows(w) {
			return fmt.Errorf("%w: the plan writes %s, which it did not lock for writing", ErrConflict, w.id())
		}
	}
	return s.writeLocked(ctx, writes, false)
}

// writeLocked is WriteEntities under the locks of the written entities; check re-reads the
// revisions (sole writer on FerretDB, when the writer read them before taking the locks).
func (s *Store) writeLocked(ctx context.Context, writes []EntityWrite, check bool) error {
	chain := map[string]*revState{} // FerretDB: what this call's earlier writes left of each entity
	for start := 0; start < len(writes); start += BulkChunk {
		chunk := writes[start:min(start+BulkChunk, len(writes))]
		if s.idOnly && !s.soleWriter {
			if err := s.writeClaimed(ctx, chunk, chain); err != nil {
				return err
			}
			continue
		}
		if check {
			if err := s.checkRevisions(ctx, chunk); err != nil {
				return err
			}
		}
		models := make([]mongo.WriteModel, 0, len(chunk))
		for _, w := range chunk {
			filter := bson.D{{Key: "_id", Value: w.id()}, {Key: "rev", Value: w.Rev}}
			if s.idOnly { // sole writer: checked under the lock
				filter = bson.D{{Key: "_id", Value: w.id()}}
			}
			switch {
			case w.Doc == nil:
				models = append(models, mongo.NewDeleteOneModel().SetFilter(filter))
			case w.Rev == 0:
				// Inserting is what makes "absent" the guard, and on FerretDB it costs a
				// fraction of an upsert.
				w.Doc.Rev = 1
				models = append(models, mongo.NewInsertOneModel().SetDocument(w.Doc.stored()))
			default:
				w.Doc.Rev = w.Rev + 1
				models = append(models, mongo.NewReplaceOneModel().SetFilter(filter).SetReplacement(w.Doc.stored()))
			}
		}
		release, err := s.updating(ctx, len(models))
		if err != nil {
			return err
		}
		var deleted []string
		for _, w := range chunk {
			if s.cache != nil {
				s.cache.drop(w.id()) // forgotten while written; kept again only once the write applied
			}
			if w.Doc != nil {
				s.known.add(w.id())
			} else {
				deleted = append(deleted, w.id())
			}
		}
		err = s.bulkWriteEntities(ctx, models)
		release()
		if err != nil {
			return err
		}
		s.known.remove(deleted...)
		if s.cache != nil {
			for _, w := range chunk {
				if w.Doc != nil {
					s.cache.put(w.Doc)
				}
			}
		}
	}
	return nil
}

// bulkWriteEntities runs guarded writes in order: ErrConflict when one did not apply. A sole
// writer with one write at a time combines them with the other deliveries' entity writes
// waiting for the turn: under its locks, each delivery's entities are its own.
func (s *Store) bulkWriteEntities(ctx context.Context, models []mongo.WriteModel) error {
	if s.entities != nil && s.soleWriter {
		return s.entities.do(ctx, s, models)
	}
	var failed map[int]error
	err := s.write(ctx, func() (err error) {
		failed, err = s.combinedEntityWrites(ctx, models)
		return err
	})
	for i := 0; err == nil && i < len(models); i++ {
		err = failed[i] // the first write that did not apply
	}
	return err
}

// combinedEntityWrites runs entity writes as one ordered bulk (several deliveries' when
// combined; see bulkWriteEntities). The first
// write that does not apply stops it, as it stops a delivery's own bulk: the delivery it belongs
// to, and every one after it (none of their writes ran), gets ErrConflict and plans again; the
// deliveries before it are written. A shortfall without an error (a replaced entity gone)
// cannot be placed: every delivery of the bulk plans again.
func (s *Store) combinedEntityWrites(ctx context.Context, models []mongo.WriteModel) (map[int]error, error) {
	res, err := s.db.Collection(colEntities).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true))
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError == nil && len(bwe.WriteErrors) > 0 {
		first := bwe.WriteErrors[0]
		failed := map[int]error{}
		for i := first.Index; i < len(models); i++ {
			failed[i] = ErrConflict
		}
		if !mongo.IsDuplicateKeyError(first) {
			failed[first.Index] = fmt.Errorf("write entity: %w", first)
		}
		return failed, nil
	}
	if err != nil {
		return nil, fmt.Errorf("write %d entities: %w", len(models), err)
	}
	if int(res.InsertedCount+res.MatchedCount+res.UpsertedCount+res.DeletedCount) < len(models) {
		return nil, ErrConflict
	}
	return nil, nil
}

// SoleWriter declares this process the only one that writes entities to the store (intake dev
// with its embedded server): on FerretDB the per-process entity locks with revision checks by _id
// is then enough, and each write saves the cross-process claims' three to four operations.
//
// On FerretDB it also starts loading the set of stored entity IDs (knownIDs) in the background.
func (s *Store) SoleWriter(log *slog.Logger) {
	s.soleWriter = true
	if !s.idOnly {
		return
	}
	s.cache = newEntityCache()
	s.known = newKnownIDs()
	ctx, cancel := context.WithCancel(context.Background())
	s.stopLoad = cancel
	go func() {
		if err := s.loadKnown(ctx); err != nil && ctx.Err() == nil {
			log.Warn("entity IDs not loaded: every new entity is looked up on the server", "error", err)
		}
	}()
}

// checkRevisions verifies, by indexed _id lookups, that every entity of the chunk is still at
// the revision its writer read (0: absent). The caller holds the entities' locks.
func (s *Store) checkRevisions(ctx context.Context, chunk []EntityWrite) error {
	seen := map[string]int64{} // a chunk may write one entity twice: the second expects the first's revision
	for _, w := range chunk {
		id := w.id()
		current, ok := seen[id]
		if !ok && s.known.absent(id) {
			current, ok = 0, true
		}
		if !ok {
			var d struct {
				Rev int64 `bson:"rev"`
			}
			err := s.findOne(ctx, colEntities, bson.D{{Key: "_id", Value: id}},
				options.FindOne().SetProjection(bson.D{{Key: "rev", Value: 1}})).Decode(&d)
			switch {
			case errors.Is(err, mongo.ErrNoDocuments):
				current = 0
			case err != nil:
				return fmt.Errorf("check revision of %s: %w", id, err)
			default:
				current = d.Rev
			}
		}
		if current != w.Rev {
			return ErrConflict
		}
		seen[id] = w.Rev + 1
		if w.Doc == nil {
			seen[id] = 0
		}
	}
	return nil
}

func (w EntityWrite) id() string {
	if w.Doc != nil {
		return w.Doc.ID
	}
	return w.Delete
}

// GetEntity returns one entity or ErrNotFound.
func (s *Store) GetEntity(ctx context.Context, template, identifier string) (*intake.Entity, error) {
	var d EntityDoc
	err := s.findOne(ctx, colEntities, bson.D{{Key: "_id", Value: EntityKey(template, identifier)}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get entity %s/%s: %w", template, identifier, err)
	}
	d.loaded()
	e := d.Entity()
	return &e, nil
}

// ListEntities pages through entities in _id order; next is "" on the last page.
func (s *Store) ListEntities(ctx context.Context, template string, limit int, cursor string) ([]intake.Entity, string, error) {
	filter := bson.D{}
	if template != "" {
		filter = append(filter, bson.E{Key: "template", Value: template})
	}
	if cursor != "" {
		parts, err := decodeCursor(cursor, 1)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$gt", Value: parts[0]}}})
	}
	cur, err := s.db.Collection(colEntities).Find(ctx, filter,
		options.Find().SetSort(bson.D{{Key: "_id", Value: 1}}).SetLimit(int64(limit+1)))
	if err != nil {
		return nil, "", fmt.Errorf("list entities: %w", err)
	}
	var docs []EntityDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, "", fmt.Errorf("list entities: %w", err)
	}
	next := ""
	if len(docs) > limit {
		docs = docs[:limit]
		next = encodeCursor(docs[limit-1].ID)
	}
	out := make([]intake.Entity, len(docs))
	for i := range docs {
		docs[i].loaded()
		out[i] = docs[i].Entity()
	}
	return out, next, nil
}
