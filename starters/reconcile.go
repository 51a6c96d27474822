package starters

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"

	"intake"
	"intake/metrics"
	"intake/store"
)

// Orphans is what the reconciler needs from the store.
type Orphans interface {
	GetDelivery(ctx context.Context, id string) (*intake.DeliveryRecord, error)
	MarkOrphaned(ctx context.Context, id string, f intake.Failure) (bool, error)
	InsertAudit(ctx context.Context, entries []intake.AuditEntry) error
}

// ErrWorkflowClosed types deliveries whose workflow ended without recording an outcome
// (terminated, timed out, canceled).
const ErrWorkflowClosed = "WorkflowClosed"

// Reconciler repairs deliveries left "accepted": a delivery whose workflow closed without
// recording its outcome becomes failed (replayable) with the reason, never accepted forever.
//
// It asks Temporal, not the store, which runs those are: an ingest workflow that completes or
// fails has recorded its outcome first, so only runs that were terminated, timed out or canceled
// can leave a record behind, and visibility lists them by close time. The store is then read by
// _id only. Looking in the store for records still "accepted" instead would scan every record
// on FerretDB, which filters by _id alone: measured, that scan once a minute took about 6 % of the
// embedded stack's CPU under load with 4,000 records, and it grows with every record kept.
type Reconciler struct {
	Client client.Client
	Store  Orphans
	Log    *slog.Logger
	// Namespace is where the ingest workflows run (for the visibility query).
	Namespace string
	// Every is how often it looks; Lookback is how far back in close times the first look
	// goes (a worker that was down meanwhile catches up on what closed while it was).
	Every, Lookback time.Duration

	since time.Time
}

// overlap makes each look start a little before the previous one's time: a close is listed
// in visibility a moment after it happens.
const overlap = time.Minute

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

// Once lists the ingest runs that closed without completing or failing since the last look
// and fails the deliveries they left accepted. It answers how many it failed.
func (r *Reconciler) Once(ctx context.Context) (int, error) {
	now := time.Now().UTC()
	if r.since.IsZero() {
		r.since = now.Add(-r.Lookback)
	}
	q := fmt.Sprintf("WorkflowType = 'IngestWorkflow' AND ExecutionStatus IN ('Terminated', 'TimedOut', 'Canceled') AND CloseTime >= '%s'",
		r.since.Add(-overlap).Format(time.RFC3339Nano))
	n := 0
	var token []byte
	for {
		res, err := r.Client.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
			Namespace: r.Namespace, Query: q, PageSize: 100, NextPageToken: token})
		if err != nil {
			return n, fmt.Errorf("list closed ingest workflows: %w", err)
		}
		for _, ex := range res.GetExecutions() {
			failed, err := r.repair(ctx, ex.GetExecution().GetWorkflowId(), ex.GetExecution().GetRunId(), ex.GetStatus())
			if err != nil {
				return n, err
			}
			if failed {
				n++
			}
		}
		if token = res.GetNextPageToken(); len(token) == 0 {
			break
		}
	}
	r.since = now
	return n, nil
}

// repair fails the delivery of run workflowID/runID if its record still says accepted by that run.
func (r *Reconciler) repair(ctx context.Context, workflowID, runID string, status enumspb.WorkflowExecutionStatus) (bool, error) {
	id, ok := strings.CutPrefix(workflowID, ingestPrefix)
	if !ok {
		return false, nil
	}
	d, err := r.Store.GetDelivery(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil // never recorded (or expired): nothing is left accepted
	}
	if err != nil {
		return false, err
	}
	if d.Status != intake.StatusAccepted || d.RunID != runID {
		return false, nil // recorded, or accepted by a later run of the same delivery
	}
	reason := "its workflow " + workflowID + " ended (" + status.String() + ") without recording an outcome"
	f := intake.Failure{Type: ErrWorkflowClosed, Message: reason + "; replay it to process it again"}
	changed, err := r.Store.MarkOrphaned(ctx, d.ID, f)
	if err != nil || !changed {
		return false, err // !changed: an outcome was recorded meanwhile
	}
	entry := intake.AuditEntry{
		ID: rejectAuditID("orphan\x00" + d.ID + "\x00" + d.RunID), Action: intake.ActionCreate, ResourceType: "delivery",
		Trigger: intake.AuditTrigger{At: time.Now().UTC(), By: intake.AuditBy{IntegrationID: d.Integration}, Origin: d.Origin},
		Message: f.Message, Status: intake.StatusFailure, DeliveryID: d.ID, WorkflowID: d.WorkflowID,
	}
	if err := r.Store.InsertAudit(ctx, []intake.AuditEntry{entry}); err != nil {
		return false, err
	}
	metrics.Deliveries.WithLabelValues(d.Integration, d.Origin, intake.DeliveryFailed).Inc()
	r.Log.Warn("delivery failed: its workflow closed without an outcome", "delivery_id", d.ID, "workflow_id", workflowID, "reason", reason)
	return true, nil
}
