package store

import (
	"context"
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
	for start := 0; start < len(entries); start += BulkChunk {
		chunk := entries[start:min(start+BulkChunk, len(entries))]
		models := make([]mongo.WriteModel, len(chunk))
		for i := range chunk {
			chunk[i].Trigger.At = chunk[i].Trigger.At.UTC().Truncate(time.Millisecond)
			models[i] = mongo.NewUpdateOneModel().SetFilter(bson.D{{Key: "_id", Value: chunk[i].ID}}).
				SetUpdate(bson.D{{Key: "$setOnInsert", Value: chunk[i]}}).SetUpsert(true)
		}
		if _, err := s.db.Collection(colAudit).BulkWrite(ctx, models, options.BulkWrite().SetOrdered(true)); err != nil {
			return fmt.Errorf("write %d audit entries: %w", len(models), err)
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
