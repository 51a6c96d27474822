package store

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"intake"
)

// deliveryDoc keeps the raw body as text so operators can read it in the database too.
type deliveryDoc struct {
	ID          string                  `bson:"_id"`
	Integration string                  `bson:"integration"`
	Key         string                  `bson:"key"`
	Origin      string                  `bson:"origin"`
	Status      string                  `bson:"status"`
	Body        string                  `bson:"body"`
	Encoding    string                  `bson:"body_encoding,omitempty"`
	ContentType string                  `bson:"content_type,omitempty"`
	Headers     map[string]string       `bson:"headers"`
	Meta        map[string]any          `bson:"meta,omitempty"`
	ReceivedAt  time.Time               `bson:"received_at"`
	UpdatedAt   time.Time               `bson:"updated_at"`
	WorkflowID  string                  `bson:"workflow_id"`
	RunID       string                  `bson:"run_id"`
	Error       *intake.Failure         `bson:"error,omitempty"`
	Mappings    []intake.MappingOutcome `bson:"mappings,omitempty"`
	Entities    []intake.EntityChange   `bson:"entities,omitempty"`
	Replays     []intake.ReplayRun      `bson:"replays,omitempty"`
}

func (d *deliveryDoc) record() intake.DeliveryRecord {
	enc := d.Encoding
	if enc == "" {
		enc = intake.BodyJSON // written before encodings existed: the receiver took JSON only
	}
	var body json.RawMessage
	switch {
	case enc == intake.BodyJSON && json.Valid([]byte(d.Body)):
		body = json.RawMessage(d.Body)
	case enc == intake.BodyJSON: // never fail a list on one bad record
		enc = intake.BodyText
		fallthrough
	default:
		body, _ = json.Marshal(d.Body)
	}
	return intake.DeliveryRecord{
		ID: d.ID, Integration: d.Integration, Key: d.Key, Origin: d.Origin, Status: d.Status,
		Body: body, BodyEncoding: enc, ContentType: d.ContentType,
		Headers: unescapeStrings(d.Headers), Meta: unescapeMap(d.Meta), ReceivedAt: d.ReceivedAt.UTC(), UpdatedAt: d.UpdatedAt.UTC(),
		WorkflowID: d.WorkflowID, RunID: d.RunID, Error: d.Error, Mappings: d.Mappings,
		Entities: escapeChanges(d.Entities, unescapeMap), Replays: d.Replays,
	}
}

// encodeBody keeps any body: JSON as it is, UTF-8 text as text, other bytes as base64 (BSON
// strings must be UTF-8).
func encodeBody(b []byte) (string, string) {
	switch {
	case !utf8.Valid(b):
		// First: json.Valid accepts invalid UTF-8 inside strings, which the store would keep
		// with U+FFFD in place of the bytes received.
	case len(b) > 0 && json.Valid(b):
		return string(b), intake.BodyJSON
	default:
		return string(b), intake.BodyText
	}
	return base64.StdEncoding.EncodeToString(b), intake.BodyBase64
}

// insertFields are what a delivery record holds from its receipt on.
func insertFields(d intake.Delivery) bson.D {
	body, enc := encodeBody(d.Body)
	return bson.D{
		{Key: "integration", Value: d.Integration}, {Key: "key", Value: d.Key}, {Key: "origin", Value: d.Origin},
		{Key: "body", Value: body}, {Key: "body_encoding", Value: enc}, {Key: "content_type", Value: d.Headers["content-type"]},
		{Key: "headers", Value: escapeStrings(d.Headers)}, {Key: "meta", Value: escapeMap(d.Meta)},
		{Key: "received_at", Value: d.ReceivedAt.UTC()},
	}
}

// RecordAccepted notes a delivery whose workflow was started; an existing record is kept.
func (s *Store) RecordAccepted(ctx context.Context, d intake.Delivery, workflowID, runID string) error {
	set := append(insertFields(d),
		bson.E{Key: "status", Value: intake.StatusAccepted}, bson.E{Key: "workflow_id", Value: workflowID},
		bson.E{Key: "run_id", Value: runID}, bson.E{Key: "updated_at", Value: time.Now().UTC()})
	err := s.writeFirst(ctx, func() error {
		_, err := s.db.Collection(colDeliveries).UpdateOne(ctx, bson.D{{Key: "_id", Value: d.ID}},
			bson.D{{Key: "$setOnInsert", Value: set}}, options.UpdateOne().SetUpsert(true))
		return err
	})
	if err != nil {
		return fmt.Errorf("record delivery %s: %w", d.ID, err)
	}
	return nil
}

// Accepted is a delivery whose workflow started, for RecordAcceptedMany.
type Accepted struct {
	Delivery          intake.Delivery
	WorkflowID, RunID string
}

// RecordAcceptedMany inserts the records of accepted deliveries in bulk. A record that exists
// already (its workflow finished first and recorded the outcome) is kept as it is; one whose
// outcome this process recorded is not even sent. Under load that is half of them, and on
// FerretDB a bulk insert with one duplicate in it is undone and redone one document at a time.
func (s *Store) RecordAcceptedMany(ctx context.Context, as []Accepted) error {
	for _, a := range as {
		s.queued.take(a.Delivery.ID) // from here on its outcome updates the record
	}
	as = slices.DeleteFunc(slices.Clone(as), func(a Accepted) bool { return s.finished.has(a.Delivery.ID) })
	now := time.Now().UTC()
	for start := 0; start < len(as); start += BulkChunk {
		chunk := as[start:min(start+BulkChunk, len(as))]
		docs := make([]any, len(chunk))
		for i, a := range chunk {
			doc := append(bson.D{{Key: "_id", Value: a.Delivery.ID}}, insertFields(a.Delivery)...)
			docs[i] = append(doc, bson.E{Key: "status", Value: intake.StatusAccepted}, bson.E{Key: "workflow_id", Value: a.WorkflowID},
				bson.E{Key: "run_id", Value: a.RunID}, bson.E{Key: "updated_at", Value: now})
		}
		err := s.writeFirst(ctx, func() error {
			return ignoreDuplicates(s.db.Collection(colDeliveries).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)))
		})
		if err != nil {
			return fmt.Errorf("record %d accepted deliveries: %w", len(docs), err)
		}
	}
	return nil
}

// ignoreDuplicates is the error of an unordered insert, but for documents that existed.
func ignoreDuplicates(res any, err error) error {
	_, err = duplicates(res, err)
	return err
}

// duplicates splits the error of an unordered insert: the indexes of the documents that existed
// already, and any other error.
func duplicates(_ any, err error) ([]int, error) {
	var bwe mongo.BulkWriteException
	if err == nil || !errors.As(err, &bwe) || bwe.WriteConcernError != nil {
		return nil, err
	}
	idx := make([]int, 0, len(bwe.WriteErrors))
	for _, we := range bwe.WriteErrors {
		if !mongo.IsDuplicateKeyError(we) {
			return nil, err
		}
		idx = append(idx, we.Index)
	}
	return idx, nil
}

// RecordRejected records a delivery that can never be processed (not JSON, too big, refused by
// Temporal) as failed with its reason; it has no workflow. Idempotent.
func (s *Store) RecordRejected(ctx context.Context, d intake.Delivery, f intake.Failure) error {
	set := bson.D{{Key: "status", Value: intake.DeliveryFailed}, {Key: "error", Value: f}, {Key: "updated_at", Value: time.Now().UTC()}}
	err := s.writeFirst(ctx, func() error {
		_, err := s.db.Collection(colDeliveries).UpdateOne(ctx, bson.D{{Key: "_id", Value: d.ID}},
			bson.D{{Key: "$set", Value: set}, {Key: "$setOnInsert", Value: insertFields(d)}}, options.UpdateOne().SetUpsert(true))
		return err
	})
	if err != nil {
		return fmt.Errorf("record rejected delivery %s: %w", d.ID, err)
	}
	return nil
}

// DeliveryOutcome is what a finished run says about its delivery.
type DeliveryOutcome struct {
	Status     string
	WorkflowID string
	RunID      string
	Error      *intake.Failure
	Mappings   []intake.MappingOutcome
	Entities   []intake.EntityChange
}

// Queued notes that this process's receiver holds the record of id's acceptance and has not
// written it yet (RecordAcceptedMany writes it): a workflow that ends before it does records
// the delivery whole, with one insert (RecordOutcome).
func (s *Store) Queued(id string) { s.queued.add(id) }

// RecordOutcome stores a run's outcome on its delivery (creating the record if the receiver
// could not). A replay updates the original delivery and is listed among its replays.
// Idempotent: a retried activity writes the same values. A delivery whose record this
// process's receiver has not written yet (Queued) gets its whole record in one insert, combined
// with others' waiting for the write turn: on FerretDB an upsert is a lookup, then an insert in
// a transaction of its own. Should the record exist after all (the receiver's bulk won the race,
// or an earlier run of the key wrote it), it is updated as any other.
func (s *Store) RecordOutcome(ctx context.Context, d intake.Delivery, o DeliveryOutcome) error {
	if d.ReplayOf == "" && s.records != nil && s.queued.take(d.ID) {
		err := s.records.do(ctx, s, []any{recordDoc(d, o)})
		if err == nil {
			s.finished.add(d.ID)
			return nil
		}
		if !mongo.IsDuplicateKeyError(err) {
			return fmt.Errorf("record delivery %s: %w", d.ID, err)
		}
	}
	id, update, upsert := outcomeUpdate(d, o)
	var err error
	if s.outcomes != nil {
		err = s.outcomes.do(ctx, s, []mongo.WriteModel{
			mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).SetUpdate(update).SetUpsert(upsert)})
	} else {
		var release func()
		if release, err = s.updating(ctx, 1); err != nil {
			return err
		}
		_, err = s.db.Collection(colDeliveries).UpdateOne(ctx, bson.D{{Key: "_id", Value: id}}, update,
			options.UpdateOne().SetUpsert(upsert))
		release()
	}
	if err != nil {
		return fmt.Errorf("record outcome of %s: %w", id, err)
	}
	s.finished.add(id)
	return nil
}

// RecordOutcomes is RecordOutcome for many deliveries (a batch's records), in bulk writes.
func (s *Store) RecordOutcomes(ctx context.Context, ds []intake.Delivery, os []DeliveryOutcome) error {
	for start := 0; start < len(ds); start += BulkChunk {
		end := min(start+BulkChunk, len(ds))
		models := make([]mongo.WriteModel, 0, end-start)
		for i := start; i < end; i++ {
			id, update, upsert := outcomeUpdate(ds[i], os[i])
			models = append(models, mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: id}}).
				SetUpdate(update).SetUpsert(upsert))
		}
		release, err := s.updating(ctx, len(models))
		if err != nil {
			return err
		}
		// the semaphore before the turn, as entity writes take them (see OneWriteAtATime)
		err = s.write(ctx, func() error {
			_, err := s.db.Collection(colDeliveries).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(false))
			return err
		})
		release()
		if err != nil {
			return fmt.Errorf("record outcomes of %d deliveries: %w", len(models), err)
		}
	}
	return nil
}

// outcomeFields are what a record holds of its run's outcome.
func outcomeFields(o DeliveryOutcome) bson.D {
	return bson.D{
		{Key: "status", Value: o.Status}, {Key: "error", Value: o.Error}, {Key: "mappings", Value: o.Mappings},
		{Key: "entities", Value: escapeChanges(o.Entities, escapeMap)}, {Key: "updated_at", Value: time.Now().UTC()},
		{Key: "workflow_id", Value: o.WorkflowID}, {Key: "run_id", Value: o.RunID},
	}
}

// recordDoc is d's whole record with its run's outcome, for an insert.
func recordDoc(d intake.Delivery, o DeliveryOutcome) bson.D {
	doc := append(bson.D{{Key: "_id", Value: d.ID}}, insertFields(d)...)
	return append(doc, outcomeFields(o)...)
}

// outcomeUpdate is the update that records o on d's record (the original's, for a replay).
func outcomeUpdate(d intake.Delivery, o DeliveryOutcome) (id string, update bson.D, upsert bool) {
	update = bson.D{{Key: "$set", Value: outcomeFields(o)}}
	if d.ReplayOf == "" {
		update = append(update, bson.E{Key: "$setOnInsert", Value: insertFields(d)})
		return d.ID, update, true
	}
	update = append(update, bson.E{Key: "$addToSet", Value: bson.D{{Key: "replays", Value: intake.ReplayRun{
		WorkflowID: o.WorkflowID, RunID: o.RunID, Status: o.Status}}}})
	return d.ReplayOf, update, false
}

// claimDoc marks a batch record as taken by one run (delivery_claims). It is small and only
// ever inserted: the record itself is written once, with its outcome, when the batch has run
// (RecordBatchOutcomes), which spares every record an update of a document holding its body.
type claimDoc struct {
	ID         string    `bson:"_id"`
	WorkflowID string    `bson:"workflow_id"`
	RunID      string    `bson:"run_id"`
	At         time.Time `bson:"at"`
}

// ClaimDeliveries claims a batch's deliveries for the run workflowID/runID, each only if no
// claim of it exists yet: claimed[i] tells whether delivery i is this run's to process (new, or
// claimed by an earlier attempt of the same run) or already another run's (a redelivered
// record). Claims are inserted, never replaced, so exactly one run claims each.
func (s *Store) ClaimDeliveries(ctx context.Context, ds []intake.Delivery, workflowID, runID string) ([]bool, error) {
	claimed := make([]bool, len(ds))
	now := time.Now().UTC()
	col := s.db.Collection(colDeliveryClaims)
	for start := 0; start < len(ds); start += BulkChunk {
		end := min(start+BulkChunk, len(ds))
		docs := make([]any, 0, end-start)
		for i := start; i < end; i++ {
			claimed[i] = true
			docs = append(docs, claimDoc{ID: ds[i].ID, WorkflowID: workflowID, RunID: runID, At: now})
		}
		var taken []int
		err := s.write(ctx, func() (err error) {
			taken, err = duplicates(col.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("claim %d deliveries: %w", len(docs), err)
		}
		for _, j := range taken {
			i := start + j
			var cur claimDoc
			if err := s.findOne(ctx, colDeliveryClaims, bson.D{{Key: "_id", Value: ds[i].ID}}).Decode(&cur); err != nil {
				return nil, fmt.Errorf("claim delivery %s: %w", ds[i].ID, err)
			}
			claimed[i] = cur.WorkflowID == workflowID && cur.RunID == runID
		}
	}
	return claimed, nil
}

// RecordBatchOutcomes writes the records of a batch's claimed deliveries, each with its outcome,
// in bulk inserts. A record that exists already (written by an earlier attempt of the run, or
// by another path) gets the outcome as RecordOutcome would set it; so does a replay's original.
func (s *Store) RecordBatchOutcomes(ctx context.Context, ds []intake.Delivery, os []DeliveryOutcome) error {
	var againD []intake.Delivery
	var againO []DeliveryOutcome
	for start := 0; start < len(ds); start += BulkChunk {
		end := min(start+BulkChunk, len(ds))
		var docs []any
		var idx []int
		for i := start; i < end; i++ {
			if ds[i].ReplayOf != "" {
				againD, againO = append(againD, ds[i]), append(againO, os[i])
				continue
			}
			docs = append(docs, recordDoc(ds[i], os[i]))
			idx = append(idx, i)
		}
		if len(docs) == 0 {
			continue
		}
		var existed []int
		err := s.write(ctx, func() (err error) {
			existed, err = duplicates(s.db.Collection(colDeliveries).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)))
			return err
		})
		if err != nil {
			return fmt.Errorf("record %d deliveries: %w", len(docs), err)
		}
		for _, j := range existed {
			againD, againO = append(againD, ds[idx[j]]), append(againO, os[idx[j]])
		}
	}
	return s.RecordOutcomes(ctx, againD, againO)
}

// GetDelivery returns one delivery record or ErrNotFound.
func (s *Store) GetDelivery(ctx context.Context, id string) (*intake.DeliveryRecord, error) {
	var d deliveryDoc
	err := s.findOne(ctx, colDeliveries, bson.D{{Key: "_id", Value: id}}).Decode(&d)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get delivery %s: %w", id, err)
	}
	r := d.record()
	return &r, nil
}

// ListDeliveries answers newest first, paged by a cursor on (received_at, _id).
func (s *Store) ListDeliveries(ctx context.Context, f intake.DeliveryFilter) ([]intake.DeliveryRecord, string, error) {
	filter := bson.D{}
	if f.Integration != "" {
		filter = append(filter, bson.E{Key: "integration", Value: f.Integration})
	}
	if f.Status != "" {
		filter = append(filter, bson.E{Key: "status", Value: f.Status})
	}
	if f.Origin != "" {
		filter = append(filter, bson.E{Key: "origin", Value: f.Origin})
	}
	docs, next, err := listNewestFirst(ctx, s, colDeliveries, filter, "received_at", f.From, f.To, f.Limit, f.Cursor,
		func(d *deliveryDoc) (time.Time, string) { return d.ReceivedAt, d.ID })
	if err != nil {
		return nil, "", err
	}
	out := make([]intake.DeliveryRecord, len(docs))
	for i := range docs {
		out[i] = docs[i].record()
	}
	return out, next, nil
}

// PageBytes bounds the documents one list page holds.
const PageBytes = 8 << 20

// listNewestFirst runs a list query sorted by (timeField, _id) descending, with an optional time
// range and cursor; key tells an item's sort key. next is "" on the last page.
func listNewestFirst[T any](ctx context.Context, s *Store, col string, filter bson.D, timeField string,
	from, to time.Time, limit int, cursor string, key func(*T) (time.Time, string)) ([]T, string, error) {
	rng := bson.D{}
	if !from.IsZero() {
		rng = append(rng, bson.E{Key: "$gte", Value: from})
	}
	if !to.IsZero() {
		rng = append(rng, bson.E{Key: "$lt", Value: to})
	}
	if len(rng) > 0 {
		filter = append(filter, bson.E{Key: timeField, Value: rng})
	}
	if cursor != "" {
		parts, err := decodeCursor(cursor, 2)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		t, err := time.Parse(time.RFC3339Nano, parts[0])
		if err != nil {
			return nil, "", ErrBadCursor
		}
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: timeField, Value: bson.D{{Key: "$lt", Value: t}}}},
			bson.D{{Key: timeField, Value: t}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: parts[1]}}}},
		}})
	}
	cur, err := s.db.Collection(col).Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: timeField, Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(limit+1)))
	if err != nil {
		return nil, "", fmt.Errorf("list %s: %w", col, err)
	}
	defer cur.Close(ctx)
	// A page stops at limit items or at about PageBytes of documents, whichever comes first, so
	// limit=1000 over large bodies cannot load a gigabyte; the cursor goes on from there.
	var out []T
	size, more := 0, false
	for cur.Next(ctx) {
		if len(out) == limit || size >= PageBytes {
			more = true
			break
		}
		var v T
		if err := cur.Decode(&v); err != nil {
			return nil, "", fmt.Errorf("list %s: %w", col, err)
		}
		out = append(out, v)
		size += len(cur.Current)
	}
	if err := cur.Err(); err != nil {
		return nil, "", fmt.Errorf("list %s: %w", col, err)
	}
	if !more {
		return out, "", nil
	}
	t, id := key(&out[len(out)-1])
	return out, encodeCursor(t.UTC().Format(time.RFC3339Nano), id), nil
}

// MarkOrphaned fails a delivery that is still "accepted" (and only then: an outcome recorded
// meanwhile wins).
func (s *Store) MarkOrphaned(ctx context.Context, id string, f intake.Failure) (bool, error) {
	res, err := s.db.Collection(colDeliveries).UpdateOne(ctx,
		bson.D{{Key: "_id", Value: id}, {Key: "status", Value: intake.StatusAccepted}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: intake.DeliveryFailed}, {Key: "error", Value: f},
			{Key: "updated_at", Value: time.Now().UTC()}}}})
	if err != nil {
		return false, fmt.Errorf("mark delivery %s failed: %w", id, err)
	}
	return res.ModifiedCount == 1, nil
}

// DeliveryCount is how many deliveries of one integration have one status.
type DeliveryCount struct {
	Integration string `json:"integration" bson:"integration"`
	Status      string `json:"status" bson:"status"`
	Count       int    `json:"count" bson:"count"`
}

// CountDeliveries counts the deliveries received in [from, to) by integration and status, sorted
// by integration then status (the console's overview).
func (s *Store) CountDeliveries(ctx context.Context, from, to time.Time) ([]DeliveryCount, error) {
	// Only the two grouped fields are read: bodies stay in the store.
	cur, err := s.db.Collection(colDeliveries).Find(ctx,
		bson.D{{Key: "received_at", Value: bson.D{{Key: "$gte", Value: from}, {Key: "$lt", Value: to}}}},
		options.Find().SetProjection(bson.D{{Key: "integration", Value: 1}, {Key: "status", Value: 1}}))
	if err != nil {
		return nil, fmt.Errorf("count deliveries: %w", err)
	}
	defer cur.Close(ctx)
	type key struct{ integration, status string }
	counts := map[key]int{}
	for cur.Next(ctx) {
		var d struct {
			Integration string `bson:"integration"`
			Status      string `bson:"status"`
		}
		if err := cur.Decode(&d); err != nil {
			return nil, fmt.Errorf("count deliveries: %w", err)
		}
		counts[key{d.Integration, d.Status}]++
	}
	if err := cur.Err(); err != nil {
		return nil, fmt.Errorf("count deliveries: %w", err)
	}
	out := make([]DeliveryCount, 0, len(counts))
	for k, n := range counts {
		out = append(out, DeliveryCount{Integration: k.integration, Status: k.status, Count: n})
	}
	slices.SortFunc(out, func(a, b DeliveryCount) int {
		return cmp.Or(cmp.Compare(a.Integration, b.Integration), cmp.Compare(a.Status, b.Status))
	})
	return out, nil
}

// recentIDs remembers the last recentCap IDs added, oldest forgotten first, but for those taken
// back (take). Forgetting is always safe for its users: the store then writes as if it never knew.
type recentIDs struct {
	mu   sync.Mutex
	set  map[string]int // ID → its place in ring
	ring []string
	next int
}

// recentCap covers minutes of deliveries at the rates one process reaches.
const recentCap = 1 << 14

func (r *recentIDs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.set == nil {
		r.set, r.ring = make(map[string]int, recentCap), make([]string, recentCap)
	}
	if _, ok := r.set[id]; ok {
		return
	}
	if old := r.ring[r.next]; old != "" && r.set[old] == r.next {
		delete(r.set, old) // unless taken meanwhile, or added again in another place
	}
	r.ring[r.next], r.set[id] = id, r.next
	r.next = (r.next + 1) % recentCap
}

func (r *recentIDs) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
	return ok
}

// take forgets id and reports whether it was remembered.
func (r *recentIDs) take(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.set[id]
	delete(r.set, id)
	return ok
}
