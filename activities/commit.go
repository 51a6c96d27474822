package activities

import (
	"context"
	"fmt"

	"intake"
)

// Commit is Upsert and Audit in one activity: it writes the delivery's entities, then audits
// every outcome and records the delivery's. One activity instead of two saves a workflow task
// and three history events per delivery. It is as idempotent as the two steps are apart: a
// retried attempt finds its own writes (LastRun) and reports what they did, and audit entry IDs
// are derived from the run. in.Result.Entities are the validated changes; the answer is the
// result as recorded, with the delivery's outcome and, when an entity failed, the failure.
func (a *Activities) Commit(ctx context.Context, in AuditInput) (*CommitResult, error) {
	countRetry(ctx)
	changes, err := a.upsert(ctx, UpsertInput{Ref: in.Ref, Changes: in.Result.Entities})
	if err != nil {
		return nil, err
	}
	in = Committed(in, changes)
	if err := a.audit(ctx, in); err != nil {
		return nil, err
	}
	return &CommitResult{Result: in.Result, Failure: in.Failure}, nil
}

// Committed is the audit input once the store has carried out the changes.
func Committed(in AuditInput, changes []intake.EntityChange) AuditInput {
	in.Result.Entities = changes
	in.Failure = EntityFailure(changes)
	in.Result.Outcome = OutcomeOf(in.Result, in.Failure)
	return in
}

// CommitResult is what Commit recorded.
type CommitResult struct {
	Result  intake.IngestResult `json:"result"`
	Failure *intake.Failure     `json:"failure,omitempty"`
}

// EntityFailure is the failure of a delivery with failed entities (the first one's type, and a
// count when several failed), or nil.
func EntityFailure(changes []intake.EntityChange) *intake.Failure {
	failed := 0
	var first *intake.EntityChange
	for i := range changes {
		if changes[i].Failed() {
			failed++
			if first == nil {
				first = &changes[i]
			}
		}
	}
	if first == nil {
		return nil
	}
	msg := first.Message
	if failed > 1 {
		msg = fmt.Sprintf("%d of %d entities failed; first: %s", failed, len(changes), first.Message)
	}
	return &intake.Failure{Type: first.ErrorType, Message: msg}
}

// OutcomeOf is a delivery's status: failed, filtered (no entity), or succeeded.
func OutcomeOf(r intake.IngestResult, f *intake.Failure) string {
	switch {
	case f != nil:
		return intake.DeliveryFailed
	case len(r.Entities) == 0:
		return intake.DeliveryFiltered
	default:
		return intake.DeliverySucceeded
	}
}
