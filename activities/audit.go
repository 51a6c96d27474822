package activities

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"go.temporal.io/sdk/activity"

	"intake"
	"intake/metrics"
	"intake/store"
)

// AuditInput is what the audit step records for one run.
type AuditInput struct {
	Ref      Ref                 `json:"ref"`
	At       time.Time           `json:"at"`
	Delivery intake.Delivery     `json:"delivery"`
	Result   intake.IngestResult `json:"result"`
	Failure  *intake.Failure     `json:"failure,omitempty"`
}

// Audit records one entry per entity change (filtered mappings write none) and the delivery's
// outcome. Entry IDs are derived from workflow ID, run ID, mapping and item, so a retry writes
// nothing twice while a redelivery or replay (a new run) gets entries of its own.
func (a *Activities) Audit(ctx context.Context, in AuditInput) error {
	countRetry(ctx)
	return a.audit(ctx, in)
}

func (a *Activities) audit(ctx context.Context, in AuditInput) error {
	if err := a.Store.InsertAudit(ctx, AuditEntries(in)); err != nil {
		return fmt.Errorf("audit %s: %w", in.Ref.DeliveryID, err)
	}
	err := a.Store.RecordOutcome(ctx, in.Delivery, store.DeliveryOutcome{
		Status: in.Result.Outcome, WorkflowID: in.Ref.WorkflowID, RunID: in.Ref.RunID, Error: in.Failure,
		Mappings: in.Result.Mappings, Entities: in.Result.Entities,
	})
	if err != nil {
		return err
	}
	metrics.Deliveries.WithLabelValues(in.Ref.Integration, in.Ref.Origin, in.Result.Outcome).Inc()
	if in.Delivery.ReplayOf == "" && !in.Delivery.ReceivedAt.IsZero() {
		metrics.DeliveryDuration.WithLabelValues(in.Ref.Integration, in.Ref.Origin, in.Result.Outcome).
			Observe(time.Since(in.Delivery.ReceivedAt).Seconds())
	}
	if a.Log != nil {
		attrs := []any{"integration", in.Ref.Integration, "origin", in.Ref.Origin, "delivery_id", in.Ref.DeliveryID,
			"workflow_id", in.Ref.WorkflowID, "run_id", in.Ref.RunID, "outcome", in.Result.Outcome, "entities", len(in.Result.Entities)}
		if in.Failure != nil {
			attrs = append(attrs, "error_type", in.Failure.Type, "error", in.Failure.Message)
		}
		a.Log.Info("delivery finished", attrs...)
	}
	return nil
}

// countRetry counts attempts after the first, so store trouble shows on /metrics.
func countRetry(ctx context.Context) {
	if info := activity.GetInfo(ctx); info.Attempt > 1 {
		metrics.ActivityRetries.WithLabelValues(info.ActivityType.Name).Inc()
	}
}

// AuditEntries builds the entries of a run.
func AuditEntries(in AuditInput) []intake.AuditEntry {
	out := make([]intake.AuditEntry, 0, len(in.Result.Entities)+1)
	idBase := in.Ref.WorkflowID
	if in.Ref.Batched {
		idBase += "\x00" + in.Ref.DeliveryID
	}
	if f := in.Failure; f != nil && len(in.Result.Entities) == 0 {
		// The delivery failed before any entity (signature, configuration): one entry for it.
		action := intake.ActionCreate
		if f.Type == intake.ErrSignatureInvalid {
			action = intake.ActionAuthenticate
		}
		out = append(out, intake.AuditEntry{
			ID: AuditID(idBase, in.Ref.RunID, -1, -1), Action: action, ResourceType: "delivery",
			Trigger:    intake.AuditTrigger{At: in.At, By: intake.AuditBy{IntegrationID: in.Ref.Integration}, Origin: in.Ref.Origin},
			Message:    f.Message,
			Status:     intake.StatusFailure,
			DeliveryID: in.Ref.DeliveryID,
			WorkflowID: in.Ref.WorkflowID,
		})
	}
	for _, c := range in.Result.Entities {
		e := intake.AuditEntry{
			ID:           AuditID(idBase, in.Ref.RunID, c.Mapping, c.Item),
			Action:       actionOf(c),
			ResourceType: "entity",
			Trigger: intake.AuditTrigger{
				At: in.At, By: intake.AuditBy{IntegrationID: in.Ref.Integration}, Origin: in.Ref.Origin,
			},
			Context:    intake.AuditContext{EntityTemplate: c.Template, Entity: c.Identifier},
			Message:    c.Message,
			Status:     intake.StatusSuccess,
			Details:    c.Details,
			DeliveryID: in.Ref.DeliveryID,
			WorkflowID: in.Ref.WorkflowID,
		}
		if c.Failed() {
			e.Status = intake.StatusFailure
		}
		out = append(out, e)
	}
	return out
}

func actionOf(c intake.EntityChange) string {
	switch {
	case c.Operation == intake.OperationDelete:
		return intake.ActionDelete
	case c.Outcome == intake.OutcomeSkipped:
		return intake.ActionSkip
	case c.Outcome == intake.OutcomeUpdated || c.Outcome == intake.OutcomeUnchanged:
		return intake.ActionUpdate
	}
	return intake.ActionCreate
}

// AuditID is a hex digest, stable for a (workflow, run, mapping, item).
func AuditID(workflowID, runID string, mapping, item int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%d", workflowID, runID, mapping, item))
	return hex.EncodeToString(sum[:16])
}
