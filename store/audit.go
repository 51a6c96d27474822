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
	at := bson.D{}
	if !f.From.IsZero() {
		at = append(at, bson.E{Key: "$gte", Value: f.From})
	}
	if !f.To.IsZero() {
		at = append(at, bson.E{Key: "$lt", Value: f.To})
	}
	if len(at) > 0 {
		filter = append(filter, bson.E{Key: "trigger.at", Value: at})
	}
	if f.Cursor != "" {
		parts, err := decodeCursor(f.Cursor, 2)
		if err != nil {
			return nil, "", ErrBadCursor
		}
		t, err := time.Parse(time.RFC3339Nano, parts[0])
		if err != nil {
			return nil, "", ErrBadCursor
		}
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "trigger.at", Value: bson.D{{Key: "$lt", Value: t}}}},
			bson.D{{Key: "trigger.at", Value: t}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: parts[1]}}}},
		}})
	}
	cur, err := s.db.Collection(colAudit).Find(ctx, filter, options.Find().
		SetSort(bson.D{{Key: "trigger.at", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(f.Limit+1)))
	if err != nil {
		return nil, "", fmt.Errorf("list audit logs: %w", err)
	}
	var out []intake.AuditEntry
	if err := cur.All(ctx, &out); err != nil {
		return nil, "", fmt.Errorf("list audit logs: %w", err)
	}
	next := ""
	if len(out) > f.Limit {
		out = out[:f.Limit]
		last := out[f.Limit-1]
		next = encodeCursor(last.Trigger.At.UTC().Format(time.RFC3339Nano), last.ID)
	}
	for i := range out {
		out[i].Trigger.At = out[i].Trigger.At.UTC()
	}
	if out == nil {
		out = []intake.AuditEntry{}
	}
	return out, next, nil
}
