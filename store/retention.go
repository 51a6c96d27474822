package store

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Expire deletes delivery records received, and audit entries written, before their cutoffs
// (a zero cutoff keeps everything). One sweep works on MongoDB and on the embedded server alike,
// which has no TTL indexes.
func (s *Store) Expire(ctx context.Context, deliveriesBefore, auditBefore time.Time) (deliveries, audit int64, err error) {
	if !deliveriesBefore.IsZero() {
		res, err := s.db.Collection(colDeliveries).DeleteMany(ctx, bson.D{{Key: "received_at", Value: bson.D{{Key: "$lt", Value: deliveriesBefore}}}})
		if err != nil {
			return 0, 0, fmt.Errorf("expire deliveries: %w", err)
		}
		deliveries = res.DeletedCount
		// A batch record's claim goes with it (claims are kept as long as records, so a
		// redelivery within retention is still recognised).
		if _, err := s.db.Collection(colDeliveryClaims).DeleteMany(ctx, bson.D{{Key: "at", Value: bson.D{{Key: "$lt", Value: deliveriesBefore}}}}); err != nil {
			return deliveries, 0, fmt.Errorf("expire delivery claims: %w", err)
		}
	}
	if !auditBefore.IsZero() {
		res, err := s.db.Collection(colAudit).DeleteMany(ctx, bson.D{{Key: "trigger.at", Value: bson.D{{Key: "$lt", Value: auditBefore}}}})
		if err != nil {
			return deliveries, 0, fmt.Errorf("expire audit entries: %w", err)
		}
		audit = res.DeletedCount
	}
	return deliveries, audit, nil
}
