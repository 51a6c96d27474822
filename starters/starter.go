// Package starters turns received messages (webhook requests, Kafka records, Pub/Sub messages)
// into Deliveries and starts one IngestWorkflow each. Transports differ only in how they build
// the Delivery and when they acknowledge: always after Start returned without error.
package starters

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"

	enumspb "go.temporal.io/api/enums/v1"

	"intake"
	"intake/activities"
	"intake/workflows"
)

// Started says what became of a start request.
type Started struct {
	DeliveryID string `json:"delivery_id"`
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	Duplicate  bool   `json:"duplicate"`
}

// ErrUnavailable means Temporal could not take the delivery; the sender should retry.
var ErrUnavailable = errors.New("temporal is unavailable")

// Starter starts IngestWorkflows.
type Starter struct {
	Client    client.Client
	TaskQueue string
}

// maxKeyLength keeps workflow IDs well inside Temporal's limits.
const maxKeyLength = 160

// DeliveryKey keeps a key that is made of URL-safe characters and replaces any other by a hex
// digest, so every workflow ID works in UI links and API paths without escaping.
func DeliveryKey(raw string) string {
	ok := raw != "" && len(raw) <= maxKeyLength
	for i := 0; ok && i < len(raw); i++ {
		c := raw[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-'
	}
	if ok {
		return raw
	}
	sum := sha256.Sum256([]byte(raw))
	return hex.EncodeToString(sum[:16])
}

// WorkflowID is the ID of a delivery's workflow.
func WorkflowID(integration, key string) string { return ingestPrefix + integration + "." + key }

// ingestPrefix starts the ID of every delivery's workflow; the rest is the delivery's ID.
const ingestPrefix = "ingest."

// Start starts the delivery's workflow, or finds the one already started with its ID: a key
// that is running or succeeded is not processed twice; a failed one may run again. It settles
// d.Key (URL-safe) and d.ID first.
func (s *Starter) Start(ctx context.Context, d *intake.Delivery) (Started, error) {
	Settle(d)
	d.Steps = intake.StepsPrepared
	started, err := s.startOnce(ctx, WorkflowID(d.Integration, d.Key), d.Integration, d.Origin, workflows.IngestWorkflow, *d)
	started.DeliveryID = d.ID
	return started, err
}

// StartBatch starts the batch workflow of records (settled, in offset order) under key
// ({topic}.{partition}.{first_offset}-{last_offset}); a batch started before is a duplicate.
func (s *Starter) StartBatch(ctx context.Context, integration, origin, key string, records []intake.Delivery) (Started, error) {
	return s.startOnce(ctx, workflows.BatchWorkflowID(integration, DeliveryKey(key)), integration, origin,
		workflows.IngestBatchWorkflow, activities.BatchInput{Integration: integration, Records: records})
}

// startOnce starts a workflow whose ID names what it processes: an ID that is running or
// succeeded is a duplicate (Duplicate, with the existing run); a failed one may run again.
func (s *Starter) startOnce(ctx context.Context, wid, integration, origin string, wf, input any) (Started, error) {
	opts := client.StartWorkflowOptions{
		ID:                    wid,
		TaskQueue:             s.TaskQueue,
		WorkflowIDReusePolicy: enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE_FAILED_ONLY,
		// Fail (not UseExisting) on a running duplicate: the SDK does not tell whether
		// UseExisting started a run, and the answer must say "duplicate". Either way the
		// running workflow is the one that processes the key.
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
		// With a worker in this process (intake dev, or receiver and worker roles together) the
		// first workflow task comes back with the start and skips matching; otherwise ignored.
		EnableEagerStart: true,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.AttrIntegration.ValueSet(integration),
			workflows.AttrOrigin.ValueSet(origin),
		),
	}
	run, err := s.Client.ExecuteWorkflow(ctx, opts, wf, input)
	var already *serviceerror.WorkflowExecutionAlreadyStarted
	switch {
	case errors.As(err, &already):
		return Started{WorkflowID: wid, RunID: already.RunId, Duplicate: true}, nil
	case err != nil:
		return Started{}, fmt.Errorf("%w: start %s: %v", ErrUnavailable, wid, err)
	}
	return Started{WorkflowID: wid, RunID: run.GetRunID()}, nil
}

// Replay runs a stored delivery again, against the current configuration, as a new workflow
// linked to the original (audit origin REPLAY).
func (s *Starter) Replay(ctx context.Context, d intake.Delivery) (Started, error) {
	d.Steps = intake.StepsPrepared
	wid := workflows.ReplayWorkflowID(d.Integration, d.Key, strings.ToLower(ulid.Make().String()))
	run, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:        wid,
		TaskQueue: s.TaskQueue,
		TypedSearchAttributes: temporal.NewSearchAttributes(
			workflows.AttrIntegration.ValueSet(d.Integration),
			workflows.AttrOrigin.ValueSet(intake.OriginReplay),
		),
	}, workflows.IngestWorkflow, d)
	if err != nil {
		return Started{}, fmt.Errorf("%w: start %s: %v", ErrUnavailable, wid, err)
	}
	return Started{DeliveryID: d.ID, WorkflowID: wid, RunID: run.GetRunID()}, nil
}

// Wait waits until timeout for a delivery's run to close. done is false when the wait ran out
// (the run goes on). A failed run returns its typed error and, when it got that far, its
// per-entity results.
func (s *Starter) Wait(ctx context.Context, workflowID, runID string, timeout time.Duration) (res *intake.IngestResult, done bool, err error) {
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var out intake.IngestResult
	err = s.Client.GetWorkflow(wctx, workflowID, runID).Get(wctx, &out)
	if err == nil {
		return &out, true, nil
	}
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		if appErr.HasDetails() && appErr.Details(&out) == nil {
			return &out, true, appErr
		}
		return nil, true, appErr
	}
	if wctx.Err() != nil {
		return nil, false, nil
	}
	return nil, true, err
}

// BulkReplayPrefix starts the IDs of bulk replay workflows.
const BulkReplayPrefix = "bulk-replay."

// StartBulkReplay starts a BulkReplayWorkflow over the deliveries matching f.
func (s *Starter) StartBulkReplay(ctx context.Context, f intake.DeliveryFilter) (Started, error) {
	wid := BulkReplayPrefix + strings.ToLower(ulid.Make().String())
	run, err := s.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: wid, TaskQueue: s.TaskQueue},
		workflows.BulkReplayWorkflow, workflows.BulkReplayInput{Filter: f})
	if err != nil {
		return Started{}, fmt.Errorf("%w: start %s: %v", ErrUnavailable, wid, err)
	}
	return Started{WorkflowID: wid, RunID: run.GetRunID()}, nil
}

// Follow calls sync at once and then every interval, until ctx ends; then it calls stop. The
// listeners use it to follow configuration changes without a restart.
func Follow(ctx context.Context, every time.Duration, sync, stop func()) {
	if every <= 0 {
		every = 2 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		sync()
		select {
		case <-ctx.Done():
			stop()
			return
		case <-t.C:
		}
	}
}
