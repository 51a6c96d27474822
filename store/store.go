// Package store is the only code that speaks to MongoDB: configuration documents, entities,
// audit entries and deliveries. Hot paths address documents by _id only (see design.md §4).
package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/semaphore"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Collection names.
const (
	colTemplates    = "templates"
	colIntegrations = "integrations"
	colEntities     = "entities"
	colAudit        = "audit_logs"
	colDeliveries   = "deliveries"
	colMeta         = "meta"
	// colDeliveryClaims holds which run took each batch record (ClaimDeliveries).
	colDeliveryClaims = "delivery_claims"
)

// Collections lists every collection the store uses (the embedded server indexes each).
var Collections = []string{colTemplates, colIntegrations, colEntities, colAudit, colDeliveries, colMeta, colClaims, colTombstones, colDeliveryClaims}

// BulkChunk bounds operations per bulk write: the embedded server deadlocks when one command
// upserts as many existing documents as it has pool connections (100).
const BulkChunk = 64

// ErrNotFound is returned when a document does not exist.
var ErrNotFound = errors.New("not found")

// Store wraps one MongoDB database.
type Store struct {
	client *mongo.Client
	db     *mongo.Database
	// keys encrypt integration secrets at rest: the first seals, every one is tried to open.
	keys [][]byte
	// entityLocks serialize this process's writes of one entity, which spares them conflicts
	// with each other; the revision guard itself holds across processes (guard.go).
	entityLocks entityLocks
	// idOnly is set on FerretDB, which uses its _id index only for a filter that is exactly one
	// scalar _id equality ({_id: x}); $in and {_id, rev} filters scan the whole table there.
	idOnly bool
	// updates bounds the update operations in flight on FerretDB, weighted by operation:
	// v1.24.2 holds one SQLite connection per operation of an update command until the command
	// ends, and hangs for good once its pool of 100 is used up (concurrent bulk updates do it).
	updates *semaphore.Weighted
	// reads bounds the lookups in flight on FerretDB (findOne).
	reads *semaphore.Weighted
	// soleWriter: no other process writes entities here (SoleWriter).
	soleWriter bool
	// cache keeps the entities a sole writer on FerretDB read and wrote (see entityCache)
	cache *entityCache
	// known are the entity IDs a sole writer on FerretDB stores (see knownIDs); stopLoad ends
	// their loading at Close.
	known    *knownIDs
	stopLoad context.CancelFunc
	// turn, when set, lets one write operation at a time reach the server (OneWriteAtATime);
	// audits, outcomes and entities then combine the writes of their kind waiting for it.
	turn     *writeTurn
	audits   *combiner[any]
	outcomes *combiner[mongo.WriteModel]
	entities *combiner[mongo.WriteModel] // sole writer only (combinedEntityWrites)
	// finished are the deliveries whose outcome this process recorded lately (RecordAcceptedMany)
	finished recentIDs
	// queued are the deliveries whose record of acceptance this process's receiver holds, not
	// yet written (Queued); records inserts such records whole, with their outcome. One
	// forgotten (over recentCap queued) is updated instead, as when another process holds it.
	queued  recentIDs
	records *combiner[any]
}

// OneWriteAtATime sends this process's write operations to the server one at a time, in the
// order they come, except that a delivery's record at accept goes before the workers' waiting
// writes: a sender waits for it, a workflow can wait. For the embedded FerretDB on SQLite, which
// has one writer per file: writes sent together there wait in SQLite's busy handler, which
// sleeps 1, 2, 5, 10 … 100 ms between tries, so under load an insert that takes a few
// milliseconds alone waited tens of them.
// Audit entries, delivery outcomes and (for a sole writer) entity writes that wait for the turn
// at the same time are written together, one bulk operation per kind (see combiner).
func (s *Store) OneWriteAtATime() {
	s.turn = &writeTurn{}
	s.audits = &combiner[any]{max: BulkChunk, run: func(ctx context.Context, docs []any) (map[int]error, error) {
		_, err := s.db.Collection(colAudit).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		return writeErrors(err, true)
	}}
	s.entities = &combiner[mongo.WriteModel]{max: BulkChunk / 2, run: s.combinedEntityWrites}
	s.records = &combiner[any]{max: BulkChunk, run: func(ctx context.Context, docs []any) (map[int]error, error) {
		_, err := s.db.Collection(colDeliveries).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
		return writeErrors(err, false) // a record that exists is its caller's to update
	}}
	// Outcomes update records that exist (accepted): FerretDB holds a connection for each
	// update of a bulk until the bulk ends, and a bulk of 150 of them hung it for good
	// (TestCombinedOutcomesOnFerretDB). Half a chunk leaves the pool room for everything else.
	s.outcomes = &combiner[mongo.WriteModel]{max: BulkChunk / 2, run: func(ctx context.Context, models []mongo.WriteModel) (map[int]error, error) {
		// Not s.updating: the turn already lets one write through at a time, and entity writes
		// take that semaphore before the turn, so taking it inside the turn would deadlock.
		_, err := s.db.Collection(colDeliveries).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
		return writeErrors(err, false)
	}}
}

// write runs op in this process's write turn (OneWriteAtATime), or at once.
func (s *Store) write(ctx context.Context, op func() error) error { return s.writeIn(ctx, false, op) }

// writeFirst is write for a write a sender waits for: it goes before the others waiting.
func (s *Store) writeFirst(ctx context.Context, op func() error) error {
	return s.writeIn(ctx, true, op)
}

func (s *Store) writeIn(ctx context.Context, first bool, op func() error) error {
	if s.turn == nil {
		return op()
	}
	if err := s.turn.acquire(ctx, first); err != nil {
		return err
	}
	defer s.turn.release()
	return op()
}

// maxReadsInFlight keeps FerretDB's lookups well under its pool of 100 connections.
const maxReadsInFlight = 32

// findOne is FindOne, with FerretDB's lookups bounded to maxReadsInFlight at a time: its pool
// of 100 connections is shared with the updates of a bulk, each of which holds one until the
// bulk ends. A Commit per delivery makes one lookup, and a worker runs up to a thousand local
// activities at once: in a hang under load, 99 lookups waited for a connection there while a
// bulk of outcomes held the rest. Lookups wait here instead, where waiting costs nothing.
func (s *Store) findOne(ctx context.Context, col string, filter any, opts ...options.Lister[options.FindOneOptions]) *mongo.SingleResult {
	if !s.idOnly {
		return s.db.Collection(col).FindOne(ctx, filter, opts...)
	}
	if err := s.reads.Acquire(ctx, 1); err != nil {
		return mongo.NewSingleResultFromDocument(bson.D{}, fmt.Errorf("wait for the store: %w", err), nil)
	}
	defer s.reads.Release(1)
	return s.db.Collection(col).FindOne(ctx, filter, opts...)
}

// maxUpdatesInFlight keeps FerretDB's update operations well under its pool of 100.
const maxUpdatesInFlight = 64

// updating waits until n more update operations may run (on FerretDB) and returns their release.
func (s *Store) updating(ctx context.Context, n int) (func(), error) {
	if !s.idOnly || n == 0 {
		return func() {}, nil
	}
	n = min(n, maxUpdatesInFlight)
	if err := s.updates.Acquire(ctx, int64(n)); err != nil {
		return nil, fmt.Errorf("wait for the store: %w", err)
	}
	return func() { s.updates.Release(int64(n)) }, nil
}

// Open connects, checks the server answers and creates the indexes. keys (see SecretKeys),
// newest first, encrypt integration secrets at rest; without one, secrets cannot be written.
func Open(ctx context.Context, uri, database string, keys ...[]byte) (*Store, error) {
	opts := options.Client().ApplyURI(uri).
		SetBSONOptions(&options.BSONOptions{DefaultDocumentMap: true}).
		SetServerSelectionTimeout(5 * time.Second).
		SetTimeout(30 * time.Second)
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", redactURI(uri), err)
	}
	s := &Store{client: client, db: client.Database(database), updates: semaphore.NewWeighted(maxUpdatesInFlight),
		reads: semaphore.NewWeighted(maxReadsInFlight)}
	for _, k := range keys {
		if len(k) > 0 {
			s.keys = append(s.keys, k)
		}
	}
	if err := s.Ping(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	var info bson.M
	if err := s.db.RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err == nil {
		_, s.idOnly = info["ferretdbVersion"]
	}
	if err := s.ensureIndexes(ctx); err != nil {
		_ = client.Disconnect(context.Background())
		return nil, err
	}
	return s, nil
}

// Close disconnects.
func (s *Store) Close(ctx context.Context) error {
	if s.stopLoad != nil {
		s.stopLoad()
	}
	return s.client.Disconnect(ctx)
}

// Ping checks the server answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, nil); err != nil {
		return fmt.Errorf("ping mongodb: %w", err)
	}
	return nil
}

// DatabaseName is the database the store writes to.
func (s *Store) DatabaseName() string { return s.db.Name() }

func (s *Store) ensureIndexes(ctx context.Context) error {
	idx := map[string][]mongo.IndexModel{
		colEntities: {
			{Keys: bson.D{{Key: "template", Value: 1}, {Key: "identifier", Value: 1}}, Options: options.Index().SetUnique(true)},
		},
		colAudit: {
			{Keys: bson.D{{Key: "trigger.at", Value: -1}}},
			{Keys: bson.D{{Key: "trigger.by.integration_id", Value: 1}}},
			{Keys: bson.D{{Key: "context.entity_template", Value: 1}}},
			{Keys: bson.D{{Key: "trigger.origin", Value: 1}}},
			{Keys: bson.D{{Key: "action", Value: 1}}},
			{Keys: bson.D{{Key: "status", Value: 1}}},
			{Keys: bson.D{{Key: "delivery_id", Value: 1}}},
		},
		colDeliveryClaims: {
			{Keys: bson.D{{Key: "at", Value: 1}}},
		},
		colDeliveries: {
			{Keys: bson.D{{Key: "integration", Value: 1}}},
			{Keys: bson.D{{Key: "status", Value: 1}}},
			{Keys: bson.D{{Key: "received_at", Value: -1}}},
			{Keys: bson.D{{Key: "origin", Value: 1}}},
		},
	}
	for _, name := range Collections {
		// Creating the collection up front lets the embedded server index it at start-up.
		if err := s.db.CreateCollection(ctx, name); err != nil && !isNamespaceExists(err) {
			return fmt.Errorf("create collection %s: %w", name, err)
		}
		if s.idOnly {
			// FerretDB v1.24.2 on SQLite answers every query but {_id: x} by a full scan, so a
			// secondary index only costs: each write recomputes it (a quarter of an update's
			// and a third of an insert's time on deliveries). Drop any an earlier version made.
			if err := dropIndexes(ctx, s.db.Collection(name), idx[name]); err != nil {
				return err
			}
			continue
		}
		if models := missingIndexes(ctx, s.db.Collection(name), idx[name]); len(models) > 0 {
			if _, err := s.db.Collection(name).Indexes().CreateMany(ctx, models); err != nil {
				return fmt.Errorf("create indexes on %s: %w", name, err)
			}
		}
	}
	return nil
}

// dropIndexes drops those of models that exist (by missingIndexes' names).
func dropIndexes(ctx context.Context, col *mongo.Collection, models []mongo.IndexModel) error {
	specs, err := col.Indexes().ListSpecifications(ctx)
	if err != nil {
		return fmt.Errorf("list indexes of %s: %w", col.Name(), err)
	}
	for _, sp := range specs {
		for _, m := range models {
			if sp.Name == indexName(m) {
				if err := col.Indexes().DropOne(ctx, sp.Name); err != nil {
					return fmt.Errorf("drop index %s of %s: %w", sp.Name, col.Name(), err)
				}
			}
		}
	}
	return nil
}

// indexName names an index after its keys ("status_1").
func indexName(m mongo.IndexModel) string {
	var parts []string
	for _, k := range m.Keys.(bson.D) {
		parts = append(parts, fmt.Sprintf("%s_%v", k.Key, k.Value))
	}
	return strings.Join(parts, "_")
}

// missingIndexes names each index after its keys and leaves out those that exist: re-sending
// createIndexes for existing indexes crashes FerretDB v1.24.2's connection after a restart.
func missingIndexes(ctx context.Context, col *mongo.Collection, models []mongo.IndexModel) []mongo.IndexModel {
	existing := map[string]bool{}
	if specs, err := col.Indexes().ListSpecifications(ctx); err == nil {
		for _, sp := range specs {
			existing[sp.Name] = true
		}
	}
	var out []mongo.IndexModel
	for _, m := range models {
		name := indexName(m)
		if existing[name] {
			continue
		}
		if m.Options == nil {
			m.Options = options.Index()
		}
		m.Options.SetName(name)
		out = append(out, m)
	}
	return out
}

func isNamespaceExists(err error) bool {
	var ce mongo.CommandError
	return errors.As(err, &ce) && (ce.Code == 48 || ce.Name == "NamespaceExists")
}

func redactURI(uri string) string {
	if i := strings.Index(uri, "@"); i > 0 {
		if j := strings.Index(uri, "://"); j > 0 && j < i {
			return uri[:j+3] + "***" + uri[i:]
		}
	}
	return uri
}

// Cursor helpers: a cursor is an opaque base64 of the last item's sort key.
func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, "\x00")))
}

func decodeCursor(c string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !utf8.Valid(b) {
		// Every cursor this API gives is UTF-8; other bytes would only reach the server as an
		// invalid BSON string.
		return nil, fmt.Errorf("invalid cursor")
	}
	parts := strings.Split(string(b), "\x00")
	if len(parts) != n {
		return nil, fmt.Errorf("invalid cursor")
	}
	return parts, nil
}

// ErrBadCursor marks a cursor the client made up.
var ErrBadCursor = errors.New("invalid cursor")
