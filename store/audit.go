package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"intake"
)

// InsertAudit writes entries that do not exist yet. IDs are deterministic, so a retried
// activity leaves exactly one entry per ID.
func (s *Store) InsertAudit(ctx context.Context, entries []intake.AuditEntry) error {
	// Entries never change and their IDs are deterministic: plain inserts, where an entry an
	// earlier attempt already wrote is a duplicate key (cheaper than upserts, and no update
	// operations for FerretDB to hold connections for).
	for start := 0; start < len(entries); start += BulkChunk {
		chunk := entries[start:min(start+BulkChunk, len(entries))]
		docs := make([]any, len(chunk))
		for i := range chunk {
			chunk[i].Trigger.At = chunk[i].Trigger.At.UTC().Truncate(time.Millisecond)
			docs[i] = chunk[i]
		}
		var err error
		if s.audits != nil {
			err = s.audits.do(ctx, s, docs)
		} else {
			err = ignoreDuplicates(s.db.Collection(colAudit).InsertMany(ctx, docs, options.InsertMany().SetOrdered(false)))
		}
		if err != nil {
			return fmt.Errorf("write %d audit entries: %w", len(docs), err)
		}
	}
	return nil
}

// ListAudit answers newest first, paged by a cursor on (trigger.at, _id).
func (s *Store) ListAudit(ctx context.Context, f intake.AuditFilter) ([]intake.AuditEntry, string, error) {
	filter := bson.D{}
	add := func(key, v string) {
		if v != "" {
			filter = append(filter, bson.E{Key: key, Value: v})
		}
	}
	add("context.entity_template", f.EntityTemplate)
	add("trigger.by.integration_id", f.Integration)
	add("trigger.origin", f.Origin)
	add("action", f.Action)
	add("status", f.Status)
	add("delivery_id", f.DeliveryID)
	out, next, err := listNewestFirst(ctx, s, colAudit, filter, "trigger.at", f.From, f.To, f.Limit, f.Cursor,
		func(e *intake.AuditEntry) (time.Time, string) { return e.Trigger.At, e.ID })
	if err != nil {
		return nil, "", err
	}
	for i := range out {
		out[i].Trigger.At = out[i].Trigger.At.UTC()
	}
	if out == nil {
		out = []intake.AuditEntry{}
	}
	return out, next, nil
}

// GetAudit reads one audit entry by its ID.
func (s *Store) GetAudit(ctx context.Context, id string) (*intake.AuditEntry, error) {
	var e intake.AuditEntry
	err := s.findOne(ctx, colAudit, bson.D{{Key: "_id", Value: id}}).Decode(&e)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get audit entry %s: %w", id, err)
	}
	e.Trigger.At = e.Trigger.At.UTC()
	return &e, nil
}
