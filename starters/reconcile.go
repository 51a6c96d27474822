package starters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"

	"intake"
	"intake/metrics"
)

// Orphans is what the reconciler needs from the store.
type Orphans interface {
	StaleAccepted(ctx context.Context, before time.Time, limit int) ([]intake.DeliveryRecord, error)
	MarkOrphaned(ctx context.Context, id string, f intake.Failure) (bool, error)
	InsertAudit(ctx context.Context, entries []intake.AuditEntry) error
}

// ErrWorkflowClosed types deliveries whose workflow ended without recording an outcome
// (terminated, timed out, or its history is gone).
const ErrWorkflowClosed = "WorkflowClosed"

// Reconciler repairs deliveries left "accepted": a delivery whose workflow closed without
// recording its outcome becomes failed (replayable) with the reason, never accepted forever.
type Reconciler struct {
	Client client.Client
	Store  Orphans
	Log    *slog.Logger
	// Every is how often it looks; After is how old an accepted delivery must be to be looked at.
	Every, After time.Duration
}

// Run reconciles until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := r.Once(ctx); err != nil && ctx.Err() == nil {
				r.Log.Warn("reconciling deliveries failed", "err", err)
			} else if n > 0 {
				r.Log.Info("deliveries reconciled", "failed", n)
			}
		}
	}
}

// Once looks at up to 100 stale accepted deliveries and fails those whose workflow is closed.
func (r *Reconciler) Once(ctx context.Context) (int, error) {
	stale, err := r.Store.StaleAccepted(ctx, time.Now().Add(-r.After), 100)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range stale {
		desc, err := r.Client.DescribeWorkflowExecution(ctx, d.WorkflowID, d.RunID)
		var nf *serviceerror.NotFound
		reason := ""
		switch {
		case errors.As(err, &nf):
			reason = "its workflow " + d.WorkflowID + " no longer exists"
		case err != nil:
			return n, fmt.Errorf("describe %s: %w", d.WorkflowID, err)
		default:
			status := desc.GetWorkflowExecutionInfo().GetStatus()
			if status == enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING {
				continue
			}
			reason = "its workflow " + d.WorkflowID + " ended (" + status.String() + ") without recording an outcome"
		}
		f := intake.Failure{Type: ErrWorkflowClosed, Message: reason + "; replay it to process it again"}
		changed, err := r.Store.MarkOrphaned(ctx, d.ID, f)
		if err != nil {
			return n, err
		}
		if !changed {
			continue // its workflow recorded an outcome meanwhile
		}
		entry := intake.AuditEntry{
			ID: rejectAuditID("orphan\x00" + d.ID + "\x00" + d.RunID), Action: intake.ActionCreate, ResourceType: "delivery",
			Trigger: intake.AuditTrigger{At: time.Now().UTC(), By: intake.AuditBy{IntegrationID: d.Integration}, Origin: d.Origin},
			Message: f.Message, Status: intake.StatusFailure, DeliveryID: d.ID, WorkflowID: d.WorkflowID,
		}
		if err := r.Store.InsertAudit(ctx, []intake.AuditEntry{entry}); err != nil {
			return n, err
		}
		metrics.Deliveries.WithLabelValues(d.Integration, d.Origin, intake.DeliveryFailed).Inc()
		r.Log.Warn("delivery failed: its workflow closed without an outcome", "delivery_id", d.ID, "workflow_id", d.WorkflowID, "reason", reason)
		n++
	}
	return n, nil
}
