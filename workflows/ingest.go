// Package workflows holds the deterministic orchestration of a delivery. It only orders steps;
// every step that does work is an activity.
package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"intake"
	"intake/activities"
)

// Search attribute keys set on every ingest workflow (Keyword, no payload data).
var (
	AttrIntegration = temporal.NewSearchAttributeKeyKeyword("IntakeIntegration")
	AttrOrigin      = temporal.NewSearchAttributeKeyKeyword("IntakeOrigin")
	AttrTemplate    = temporal.NewSearchAttributeKeyKeyword("IntakeTemplate")
	AttrOutcome     = temporal.NewSearchAttributeKeyKeyword("IntakeOutcome")
)

// Retry policies: local steps are pure and fail for good; store steps retry without limit, with
// backoff, until the store is back.
var (
	localOptions = workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 3},
	}
	// Hydration retries 5xx, 429 and timeouts for about four minutes, then fails the delivery
	// (replayable); 4xx and refused targets fail at once (non-retryable errors).
	hydrateOptions = workflow.ActivityOptions{
		StartToCloseTimeout: 90 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    30 * time.Second,
			MaximumAttempts:    10,
		},
	}
	storeOptions = workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			MaximumAttempts:    0, // unlimited
		},
	}
)

// IngestWorkflow runs one delivery: Verify, Hydrate (when configured), Map, Validate, Upsert, then Audit (which also
// records the delivery's outcome) and Finish.
func IngestWorkflow(ctx workflow.Context, d intake.Delivery) (*intake.IngestResult, error) {
	var a *activities.Activities
	if d.Ref != "" {
		// step 0, claim check: load the stored delivery this run was given a reference to
		actx := workflow.WithActivityOptions(ctx, storeOptions)
		if err := workflow.ExecuteActivity(actx, a.LoadDelivery, d.Ref).Get(ctx, &d); err != nil {
			return nil, err
		}
	}
	info := workflow.GetInfo(ctx)
	ref := activities.Ref{
		DeliveryID: d.ID, Integration: d.Integration, Origin: d.Origin,
		WorkflowID: info.WorkflowExecution.ID, RunID: info.WorkflowExecution.RunID,
	}
	result := &intake.IngestResult{DeliveryID: d.ID}

	err := process(ctx, d, ref, result)
	if err == nil {
		err = entityFailure(result.Entities)
	}
	setOutcome(result, err)

	// step 5, audit every entity outcome and record the delivery's (retried until the store answers)
	actx := workflow.WithActivityOptions(ctx, storeOptions)
	audit := compact(activities.AuditInput{Ref: ref, At: workflow.Now(ctx).UTC(), Delivery: d, Result: *result, Failure: failureOf(err)})
	if aerr := workflow.ExecuteActivity(actx, a.Audit, audit).Get(ctx, nil); aerr != nil {
		return nil, aerr
	}

	// step 6, finish: search attributes; a delivery with a failed entity ends as a failed workflow
	_ = workflow.UpsertTypedSearchAttributes(ctx, AttrOutcome.ValueSet(result.Outcome))
	if err != nil {
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			// Keep the typed error, with the per-entity results as details.
			return nil, temporal.NewNonRetryableApplicationError(appErr.Message(), appErr.Type(), nil, result)
		}
		return nil, err
	}
	return result, nil
}

// process runs steps 1 to 4, filling result; the error is what ends the delivery early.
func process(ctx workflow.Context, d intake.Delivery, ref activities.Ref, result *intake.IngestResult) error {
	var a *activities.Activities
	lctx := workflow.WithLocalActivityOptions(ctx, localOptions)

	// step 1, verify the signature over the exact bytes about to be mapped
	var verified activities.VerifyResult
	if err := workflow.ExecuteLocalActivity(lctx, a.Verify, d).Get(ctx, &verified); err != nil {
		return err
	}

	// step 1b, hydrate: a thin notification becomes the full record (fetched, retried on 5xx)
	in := activities.MapInput{Delivery: d}
	if verified.Hydrate {
		hctx := workflow.WithActivityOptions(ctx, hydrateOptions)
		if err := workflow.ExecuteActivity(hctx, a.Hydrate, d).Get(ctx, &in.Hydrated); err != nil {
			return err
		}
	}

	// step 2, filter and map with JQ
	var mapped activities.MapResult
	if err := workflow.ExecuteLocalActivity(lctx, a.Map, in).Get(ctx, &mapped); err != nil {
		return err
	}
	result.Mappings, result.Entities = mapped.Mappings, mapped.Entities
	if len(mapped.Mappings) > 0 {
		_ = workflow.UpsertTypedSearchAttributes(ctx, AttrTemplate.ValueSet(mapped.Mappings[0].Template))
	}
	if len(result.Entities) == 0 {
		return nil
	}

	// step 3, validate against the templates
	if err := workflow.ExecuteLocalActivity(lctx, a.Validate, result.Entities).Get(ctx, &result.Entities); err != nil {
		return err
	}

	// step 4, upsert or delete in the store (retried until the store answers)
	if !anyPending(result.Entities) {
		return nil
	}
	actx := workflow.WithActivityOptions(ctx, storeOptions)
	up := activities.UpsertInput{Ref: ref, Changes: result.Entities}
	return workflow.ExecuteActivity(actx, a.Upsert, up).Get(ctx, &result.Entities)
}

// maxAuditInput keeps the Audit step's input under Temporal's 2 MB payload limit.
const maxAuditInput = 3 << 19 // 1.5 MiB

// compact drops, from a large audit input, what the record can do without: first the body of a
// delivery the receiver already recorded (webhooks, replays), then the entities' mapped fields
// (their outcomes and messages stay). Deterministic: it depends on the input only.
func compact(in activities.AuditInput) activities.AuditInput {
	if len(in.Delivery.Body) < 256<<10 && len(in.Result.Entities) < 100 {
		return in // far below the limit (mapped entities are bounded by the Map step): skip the sizing
	}
	size := func() int { b, _ := json.Marshal(in); return len(b) }
	if size() <= maxAuditInput {
		return in
	}
	if in.Delivery.Origin == intake.OriginWebhook || in.Delivery.ReplayOf != "" {
		in.Delivery.Body = nil
		if size() <= maxAuditInput {
			return in
		}
	}
	entities := make([]intake.EntityChange, len(in.Result.Entities))
	for i, c := range in.Result.Entities {
		c.Properties, c.Relations = nil, nil
		entities[i] = c
	}
	in.Result.Entities = entities
	return in
}

func anyPending(changes []intake.EntityChange) bool {
	for i := range changes {
		if !changes[i].Failed() {
			return true
		}
	}
	return false
}

// entityFailure is the typed error of the first failed entity.
func entityFailure(changes []intake.EntityChange) error {
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
	return temporal.NewNonRetryableApplicationError(msg, first.ErrorType, nil)
}

func setOutcome(result *intake.IngestResult, err error) {
	switch {
	case err != nil:
		result.Outcome = intake.DeliveryFailed
	case len(result.Entities) == 0:
		result.Outcome = intake.DeliveryFiltered
	default:
		result.Outcome = intake.DeliverySucceeded
	}
}

func failureOf(err error) *intake.Failure {
	if err == nil {
		return nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return &intake.Failure{Type: appErr.Type(), Message: appErr.Message()}
	}
	return &intake.Failure{Type: "Error", Message: err.Error()}
}
