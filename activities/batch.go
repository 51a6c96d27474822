package activities

import (
	"context"
	"errors"
	"time"

	"go.temporal.io/sdk/temporal"

	"intake"
	"intake/metrics"
	"intake/store"
)

// BatchInput is what a batch workflow carries: records of one integration and one partition,
// in offset order, each a Delivery of its own.
type BatchInput struct {
	Integration string            `json:"integration"`
	Records     []intake.Delivery `json:"records"`
}

// ProcessBatchInput is a batch and the run it belongs to.
type ProcessBatchInput struct {
	BatchInput
	WorkflowID string    `json:"workflow_id"`
	RunID      string    `json:"run_id"`
	At         time.Time `json:"at"`
}

// BatchResult says, record by record, what became of a batch.
type BatchResult struct {
	Succeeded  int            `json:"succeeded"`
	Filtered   int            `json:"filtered"`
	Failed     int            `json:"failed"`
	Duplicates int            `json:"duplicates"`
	Records    []RecordResult `json:"records"`
}

// RecordResult is one record of a batch: its delivery's outcome and its entities' outcomes.
type RecordResult struct {
	DeliveryID string `json:"delivery_id"`
	// Outcome is succeeded, filtered or failed; a duplicate (another run already took the
	// record) has no outcome of its own here.
	Outcome   string          `json:"outcome,omitempty"`
	Duplicate bool            `json:"duplicate,omitempty"`
	Error     *intake.Failure `json:"error,omitempty"`
	Entities  []EntityOutcome `json:"entities,omitempty"`
}

// EntityOutcome is an entity change as the batch result lists it (without its fields).
type EntityOutcome struct {
	Template   string `json:"template"`
	Identifier string `json:"identifier"`
	Outcome    string `json:"outcome"`
	Message    string `json:"message,omitempty"`
}

// Outcome is the batch's search attribute: failed when any record failed, else succeeded when
// any succeeded, else filtered.
func (r *BatchResult) Outcome() string {
	switch {
	case r.Failed > 0:
		return intake.DeliveryFailed
	case r.Succeeded > 0:
		return intake.DeliverySucceeded
	}
	return intake.DeliveryFiltered
}

// ProcessBatch runs every step of a delivery for each record of a batch, with the store work
// done in bulk: map and validate each record (pure, as in the single-delivery workflow), claim
// the records (a record another run already took is a duplicate and is left alone, so a
// redelivered batch is processed once whatever its boundaries), write all entities in one
// plan, then write every audit entry and every delivery record with its outcome (inserted once:
// an update per record cost as much as the rest of the batch). A record that fails fails
// alone: its delivery is failed (replayable on its own), the others go on. Store errors are
// returned for Temporal to retry; a retried attempt finds its own claims and writes.
func (a *Activities) ProcessBatch(ctx context.Context, in ProcessBatchInput) (*BatchResult, error) {
	countRetry(ctx)
	n := len(in.Records)
	results := make([]intake.IngestResult, n)
	failures := make([]*intake.Failure, n)
	p, progErr := a.Catalog.Program(in.Integration)
	for i, d := range in.Records {
		results[i].DeliveryID = d.ID
		if progErr != nil {
			failures[i] = &intake.Failure{Type: intake.ErrConfig, Message: progErr.Error()}
			continue
		}
		mapped, err := a.MapWith(ctx, p, MapInput{Delivery: d})
		if err != nil {
			failures[i] = FailureOf(err)
			continue
		}
		results[i].Mappings = mapped.Mappings
		results[i].Entities, _ = a.Validate(ctx, mapped.Entities)
	}

	claimed, err := a.Store.ClaimDeliveries(ctx, in.Records, in.WorkflowID, in.RunID)
	if err != nil {
		return nil, err
	}

	// One plan for every claimed record's changes, in offset order: two records of one entity
	// apply one after the other, as two deliveries would.
	var all []intake.EntityChange
	var owner []int
	for i := range in.Records {
		if !claimed[i] || failures[i] != nil {
			continue
		}
		for _, c := range results[i].Entities {
			all = append(all, c)
			owner = append(owner, i)
		}
		results[i].Entities = results[i].Entities[:0]
	}
	batchRef := Ref{Integration: in.Integration, WorkflowID: in.WorkflowID, RunID: in.RunID, DeliveryID: in.WorkflowID}
	if AnyPending(all) {
		if all, err = a.upsert(ctx, UpsertInput{Ref: batchRef, Changes: all}); err != nil {
			return nil, err
		}
	}
	for j, c := range all {
		results[owner[j]].Entities = append(results[owner[j]].Entities, c)
	}

	out := &BatchResult{Records: make([]RecordResult, n)}
	var entries []intake.AuditEntry
	var done []intake.Delivery
	var outcomes []store.DeliveryOutcome
	for i, d := range in.Records {
		rec := &out.Records[i]
		rec.DeliveryID = d.ID
		if !claimed[i] {
			rec.Duplicate = true
			out.Duplicates++
			continue
		}
		if failures[i] == nil {
			failures[i] = EntityFailure(results[i].Entities)
		}
		results[i].Outcome = OutcomeOf(results[i], failures[i])
		ref := Ref{DeliveryID: d.ID, Integration: d.Integration, Origin: d.Origin, WorkflowID: in.WorkflowID, RunID: in.RunID, Batched: true}
		entries = append(entries, AuditEntries(AuditInput{Ref: ref, At: in.At, Delivery: d, Result: results[i], Failure: failures[i]})...)
		done = append(done, d)
		outcomes = append(outcomes, store.DeliveryOutcome{Status: results[i].Outcome, WorkflowID: in.WorkflowID, RunID: in.RunID,
			Error: failures[i], Mappings: results[i].Mappings, Entities: results[i].Entities})
		rec.Outcome, rec.Error = results[i].Outcome, failures[i]
		for _, c := range results[i].Entities {
			rec.Entities = append(rec.Entities, EntityOutcome{Template: c.Template, Identifier: c.Identifier, Outcome: c.Outcome, Message: c.Message})
		}
		switch rec.Outcome {
		case intake.DeliverySucceeded:
			out.Succeeded++
		case intake.DeliveryFiltered:
			out.Filtered++
		default:
			out.Failed++
		}
	}
	if err := a.Store.InsertAudit(ctx, entries); err != nil {
		return nil, err
	}
	if err := a.Store.RecordBatchOutcomes(ctx, done, outcomes); err != nil {
		return nil, err
	}

	for i, d := range done {
		metrics.Deliveries.WithLabelValues(d.Integration, d.Origin, outcomes[i].Status).Inc()
		if !d.ReceivedAt.IsZero() {
			metrics.DeliveryDuration.WithLabelValues(d.Integration, d.Origin, outcomes[i].Status).Observe(time.Since(d.ReceivedAt).Seconds())
		}
		if f := outcomes[i].Error; f != nil && a.Log != nil {
			a.Log.Info("delivery finished", "integration", d.Integration, "origin", d.Origin, "delivery_id", d.ID,
				"workflow_id", in.WorkflowID, "run_id", in.RunID, "outcome", outcomes[i].Status, "error_type", f.Type, "error", f.Message)
		}
	}
	if a.Log != nil {
		a.Log.Info("batch finished", "integration", in.Integration, "workflow_id", in.WorkflowID, "run_id", in.RunID,
			"records", n, "succeeded", out.Succeeded, "filtered", out.Filtered, "failed", out.Failed, "duplicates", out.Duplicates)
	}
	return out, nil
}

// FailureOf is the failure an error of a step stands for (nil for nil).
func FailureOf(err error) *intake.Failure {
	if err == nil {
		return nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return &intake.Failure{Type: appErr.Type(), Message: appErr.Message()}
	}
	return &intake.Failure{Type: "Error", Message: err.Error()}
}

// AnyPending reports whether any change is still to be written (not failed).
func AnyPending(changes []intake.EntityChange) bool {
	for i := range changes {
		if !changes[i].Failed() {
			return true
		}
	}
	return false
}
