// Package workflows holds the deterministic orchestration of a delivery. It only orders steps;
// every step that does work is an activity.
package workflows

import (
	"encoding/json"
	"errors"
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
	// A store step's first attempt, as a local activity (storeStep). A Commit takes
	// milliseconds; one slower than this is store trouble, which the regular activity handles.
	localStoreOptions = workflow.LocalActivityOptions{
		StartToCloseTimeout: 10 * time.Second,
		RetryPolicy:         &temporal.RetryPolicy{MaximumAttempts: 1},
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
	// A worker killed mid-activity delays that delivery by StartToClose (a minute; inside the
	// local first attempt, by the 10 s workflow task timeout). No heartbeat: it would cost every
	// delivery a Temporal call to shorten a crash's wait; nor a shorter timeout: a Commit may
	// wait on the store's 30 s operation timeout.
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

// IngestWorkflow runs one delivery: Prepare (Verify, Map and Validate in one local activity;
// with Hydrate between Verify and Map when configured), then Commit (Upsert and Audit in one
// activity, which also records the delivery's outcome) and Finish. A delivery with nothing to
// write (filtered, or failed before the store) only runs Audit. Deliveries whose input predates
// Prepare (d.Steps 0) run the steps of that version (see legacyHistory).
func IngestWorkflow(ctx workflow.Context, d intake.Delivery) (*intake.IngestResult, error) {
	var a *activities.Activities
	actx := workflow.WithActivityOptions(ctx, storeOptions)
	prepared := d.Steps >= intake.StepsPrepared && !legacyHistory(ctx) // before the claim check replaces d
	if d.Ref != "" {
		// step 0, claim check: load the stored delivery this run was given a reference to
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

	// steps 1 to 4: verify, hydrate, map, validate
	var err error
	if prepared {
		err = prepare(ctx, d, result)
	} else {
		err = process(ctx, d, result)
	}
	var failure *intake.Failure
	switch {
	case err == nil && activities.AnyPending(result.Entities):
		// steps 4 and 5, commit: upsert, audit every entity outcome and record the delivery's
		// (retried until the store answers). The Map step bounded the entities so that they
		// fit beside the delivery in one payload (activities.MappedBudget).
		in := activities.AuditInput{Ref: ref, At: workflow.Now(ctx).UTC(), Delivery: d, Result: *result}
		var done activities.CommitResult
		if err := storeStep(ctx, prepared, a.Commit, in, &done); err != nil {
			return nil, err
		}
		*result, failure = done.Result, done.Failure
	default:
		// step 5 alone: nothing to write (filtered, or every entity failed), or a step failed
		failure = activities.FailureOf(err)
		if failure == nil {
			failure = activities.EntityFailure(result.Entities)
		}
		if failure, err = audit(ctx, prepared, ref, d, result, failure); err != nil {
			return nil, err
		}
	}

	// step 6, finish: search attributes (one upsert, one visibility write); a delivery with a
	// failed entity ends as a failed workflow with its typed error and per-entity results
	attrs := []temporal.SearchAttributeUpdate{AttrOutcome.ValueSet(result.Outcome)}
	if len(result.Mappings) > 0 {
		attrs = append(attrs, AttrTemplate.ValueSet(result.Mappings[0].Template))
	}
	_ = workflow.UpsertTypedSearchAttributes(ctx, attrs...)
	if failure != nil {
		return nil, temporal.NewNonRetryableApplicationError(failure.Message, failure.Type, nil, result)
	}
	return result, nil
}

// audit runs the Audit step alone, with the outcome the failure (or its absence) gives.
func audit(ctx workflow.Context, prepared bool, ref activities.Ref, d intake.Delivery, result *intake.IngestResult, failure *intake.Failure) (*intake.Failure, error) {
	var a *activities.Activities
	result.Outcome = activities.OutcomeOf(*result, failure)
	in := compact(activities.AuditInput{Ref: ref, At: workflow.Now(ctx).UTC(), Delivery: d, Result: *result, Failure: failure})
	return failure, storeStep(ctx, prepared, a.Audit, in, nil)
}

// storeStep runs a store step (Commit or Audit) first as one attempt of a local activity, in
// the workflow task that mapped the delivery: a delivery then costs Temporal one workflow task,
// no activity task and no second workflow task. When that attempt fails for a reason a retry
// may cure (store down, slow), the same step runs as a regular activity, retried with backoff
// without limit and shown pending, with its last failure, in the Temporal UI. Both steps are
// idempotent (entity revisions, LastRun, audit IDs from the run), so the second run after a
// partial first one writes nothing twice. Histories from before this change (no version marker)
// replay their regular activity. Prepared runs (d.Steps) always go local first, with no marker.
func storeStep(ctx workflow.Context, prepared bool, step, in, out any) error {
	if prepared || workflow.GetVersion(ctx, localFirst, workflow.DefaultVersion, 1) == 1 {
		lctx := workflow.WithLocalActivityOptions(ctx, localStoreOptions)
		err := workflow.ExecuteLocalActivity(lctx, step, in).Get(ctx, out)
		var app *temporal.ApplicationError
		if err == nil || errors.As(err, &app) && app.NonRetryable() {
			return err
		}
	}
	return workflow.ExecuteActivity(workflow.WithActivityOptions(ctx, storeOptions), step, in).Get(ctx, out)
}

// localFirst is the change (workflow.GetVersion) that ran the store steps first as local
// activities, before Prepare.
const localFirst = "store-step-local-first"

// legacyHistory reports, when a worker replays a run, that its history was written by the steps
// before Prepare although its input asks for Prepare: a worker of the previous version ran it
// (a receiver was upgraded before the workers), and its store step left that version's marker.
// Live, it is false without a look: a GetVersion call there would record a marker and a
// search-attribute upsert in every delivery's history, which is what d.Steps spares.
func legacyHistory(ctx workflow.Context) bool {
	return workflow.IsReplaying(ctx) && workflow.GetVersion(ctx, localFirst, workflow.DefaultVersion, 1) == 1
}

// prepare runs steps 1 to 4 as one local activity (two when the integration hydrates, with
// Hydrate between them), filling result; the error is what ends the delivery early. One local
// activity instead of three spares each delivery two local dispatches and two markers, one of
// which repeated the mapped entities.
func prepare(ctx workflow.Context, d intake.Delivery, result *intake.IngestResult) error {
	var a *activities.Activities
	lctx := workflow.WithLocalActivityOptions(ctx, localOptions)
	in := activities.MapInput{Delivery: d}
	var prepared activities.PrepareResult
	if err := workflow.ExecuteLocalActivity(lctx, a.Prepare, in).Get(ctx, &prepared); err != nil {
		return err
	}
	if prepared.Hydrate {
		// a thin notification becomes the full record (fetched, retried on 5xx), then is mapped
		hctx := workflow.WithActivityOptions(ctx, hydrateOptions)
		if err := workflow.ExecuteActivity(hctx, a.Hydrate, d).Get(ctx, &in.Hydrated); err != nil {
			return err
		}
		if err := workflow.ExecuteLocalActivity(lctx, a.Prepare, in).Get(ctx, &prepared); err != nil {
			return err
		}
	}
	result.Mappings, result.Entities = prepared.Mappings, prepared.Entities
	return nil
}

// process runs steps 1 to 4 as the version before Prepare did (three local activities), for
// runs whose input predates Prepare; the error is what ends the delivery early.
func process(ctx workflow.Context, d intake.Delivery, result *intake.IngestResult) error {
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
	if len(result.Entities) == 0 {
		return nil
	}

	// step 3, validate against the templates
	return workflow.ExecuteLocalActivity(lctx, a.Validate, result.Entities).Get(ctx, &result.Entities)
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
