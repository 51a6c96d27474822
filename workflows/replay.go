package workflows

import (
	"fmt"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"intake"
	"intake/activities"
)

// ReplayBatch is how many replays run at once, and the page size of the listing.
const ReplayBatch = 10

// pagesPerRun bounds the history of one run; the workflow continues as new after that.
const pagesPerRun = 50

// ProgressQuery is the query name that answers a bulk replay's progress.
const ProgressQuery = "progress"

// BulkReplayInput selects the deliveries to replay; Progress carries over continue-as-new.
type BulkReplayInput struct {
	Filter   intake.DeliveryFilter `json:"filter"`
	Progress ReplayProgress        `json:"progress"`
}

// ReplayProgress is what a bulk replay has done so far.
type ReplayProgress struct {
	Started   int  `json:"started"`
	Succeeded int  `json:"succeeded"`
	Failed    int  `json:"failed"`
	Done      bool `json:"done"`
}

// BulkReplayWorkflow replays every stored delivery matching a filter against the current
// configuration, ReplayBatch at a time, each as a child IngestWorkflow linked to its original.
// Being a workflow, it survives worker restarts; cancelling it stops it after the running batch.
func BulkReplayWorkflow(ctx workflow.Context, in BulkReplayInput) (ReplayProgress, error) {
	var a *activities.Activities
	progress := in.Progress
	if err := workflow.SetQueryHandler(ctx, ProgressQuery, func() (ReplayProgress, error) { return progress, nil }); err != nil {
		return progress, err
	}
	actx := workflow.WithActivityOptions(ctx, storeOptions)
	filter := in.Filter
	filter.Limit = ReplayBatch
	for page := 0; page < pagesPerRun; page++ {
		// step 1, load the next page of stored deliveries
		var pg activities.ReplayPage
		if err := workflow.ExecuteActivity(actx, a.ListReplayable, filter).Get(ctx, &pg); err != nil {
			return progress, err
		}
		// step 2, replay them as children and wait for each
		futures := make([]workflow.ChildWorkflowFuture, len(pg.Deliveries))
		for i, d := range pg.Deliveries {
			cctx := workflow.WithChildOptions(ctx, workflow.ChildWorkflowOptions{
				WorkflowID:            ReplayWorkflowID(d.Integration, d.Key, fmt.Sprintf("%s-%d", shortRunID(ctx), progress.Started)),
				TaskQueue:             intake.TaskQueue,
				WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
				TypedSearchAttributes: temporal.NewSearchAttributes(
					AttrIntegration.ValueSet(d.Integration), AttrOrigin.ValueSet(intake.OriginReplay)),
			})
			d.Steps = intake.StepsPrepared
			futures[i] = workflow.ExecuteChildWorkflow(cctx, IngestWorkflow, d)
			progress.Started++
		}
		for _, f := range futures {
			if err := f.Get(ctx, nil); err != nil {
				if temporal.IsCanceledError(err) || ctx.Err() != nil {
					return progress, temporal.NewCanceledError(progress)
				}
				progress.Failed++
			} else {
				progress.Succeeded++
			}
		}
		if pg.Next == "" {
			progress.Done = true
			return progress, nil
		}
		filter.Cursor = pg.Next
	}
	// step 3, keep the history small: go on in a fresh run
	return progress, workflow.NewContinueAsNewError(ctx, BulkReplayWorkflow, BulkReplayInput{Filter: withCursor(in.Filter, filter.Cursor), Progress: progress})
}

func withCursor(f intake.DeliveryFilter, cursor string) intake.DeliveryFilter {
	f.Cursor = cursor
	return f
}

// shortRunID keeps replay workflow IDs short and unique per bulk run.
func shortRunID(ctx workflow.Context) string {
	id := workflow.GetInfo(ctx).OriginalRunID
	if len(id) > 8 {
		id = id[:8]
	}
	return id
}

// ReplayWorkflowID names a single replay of a delivery.
func ReplayWorkflowID(integration, key, suffix string) string {
	return "replay." + integration + "." + key + "." + suffix
}
