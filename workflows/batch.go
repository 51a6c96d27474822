package workflows

import (
	"go.temporal.io/sdk/workflow"

	"intake/activities"
)

// BatchWorkflowID is the ID of a batch's workflow: the integration, then the records' topic,
// partition and first and last offsets (design.md §1), so a batch started twice is one run.
func BatchWorkflowID(integration, key string) string {
	return "ingest-batch." + integration + "." + key
}

// IngestBatchWorkflow runs a batch of stream records (source.batch): one activity maps,
// validates, writes and audits them all, each record as its own delivery with its own outcome.
// The workflow completes when every record is settled, failed ones included (they are failed
// deliveries, replayable alone); its result lists each record and IntakeOutcome is failed when
// any record failed.
func IngestBatchWorkflow(ctx workflow.Context, in activities.BatchInput) (*activities.BatchResult, error) {
	var a *activities.Activities
	info := workflow.GetInfo(ctx)

	// step 1, process every record (retried until the store answers)
	actx := workflow.WithActivityOptions(ctx, storeOptions)
	run := activities.ProcessBatchInput{BatchInput: in, WorkflowID: info.WorkflowExecution.ID,
		RunID: info.WorkflowExecution.RunID, At: workflow.Now(ctx).UTC()}
	var res activities.BatchResult
	if err := workflow.ExecuteActivity(actx, a.ProcessBatch, run).Get(ctx, &res); err != nil {
		return nil, err
	}

	// step 2, finish: the batch's outcome as a search attribute
	_ = workflow.UpsertTypedSearchAttributes(ctx, AttrOutcome.ValueSet(res.Outcome()))
	return &res, nil
}
