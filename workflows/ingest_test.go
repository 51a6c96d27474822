package workflows_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/suite"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"intake"
	"intake/activities"
	"intake/examples"
	"intake/mappings"
	"intake/workflows"
)

// configSource serves a fixed configuration to the catalog (the store's role in production).
type configSource struct {
	templates    []intake.Template
	integrations []intake.Integration
}

func (s configSource) ConfigVersion(context.Context) (int64, error) { return 1, nil }
func (s configSource) LoadConfig(context.Context) ([]intake.Template, []intake.Integration, map[string]error, error) {
	return s.templates, s.integrations, nil, nil
}

type IngestSuite struct {
	suite.Suite
	testsuite.WorkflowTestSuite
	env    *testsuite.TestWorkflowEnvironment
	a      *activities.Activities
	steps  int      // the input's Steps: the current steps, or those of a starter before Prepare
	locals []string // the local activities run (countCommits)
}

// TestIngestWorkflow runs every case with the current steps and with the steps before Prepare
// (a delivery its starter started before an upgrade): both must behave alike.
func TestIngestWorkflow(t *testing.T) {
	t.Run("prepared", func(t *testing.T) { suite.Run(t, &IngestSuite{steps: intake.StepsPrepared}) })
	t.Run("before Prepare", func(t *testing.T) { suite.Run(t, &IngestSuite{steps: 0}) })
}

const secret = "wf-secret"

func (s *IngestSuite) SetupTest() {
	tpls, err := examples.Templates()
	s.Require().NoError(err)
	groups := intake.Integration{
		Identifier: "groups",
		Security:   &intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: secret, Scheme: "hmac-sha256"},
		Mappings: []intake.Mapping{{
			Template: "team", Filter: ".kind == \"groups\"", ItemsToParse: ".groups",
			Entity: intake.EntityMapping{Identifier: ".item.id", Properties: map[string]string{"name": ".item.name"}},
		}},
	}
	cat := mappings.NewCatalog(configSource{templates: tpls, integrations: []intake.Integration{groups}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Require().NoError(cat.Refresh(context.Background()))
	s.a = &activities.Activities{Catalog: cat}
	s.env = s.NewTestWorkflowEnvironment()
	s.env.RegisterActivity(s.a)
	s.env.RegisterWorkflow(workflows.IngestWorkflow)
}

func (s *IngestSuite) delivery(body string) intake.Delivery {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return intake.Delivery{
		ID: "groups.k1", Integration: "groups", Key: "k1", Origin: intake.OriginWebhook, Body: []byte(body),
		Headers: map[string]string{"x-sig": "sha256=" + hex.EncodeToString(m.Sum(nil))}, ReceivedAt: time.Now(), Verified: true,
		Steps: s.steps,
	}
}

// outcomes marks every pending change with the given outcomes, in order (what the store did).
func outcomes(list ...string) func(context.Context, activities.UpsertInput) ([]intake.EntityChange, error) {
	return func(_ context.Context, in activities.UpsertInput) ([]intake.EntityChange, error) {
		out := append([]intake.EntityChange(nil), in.Changes...)
		j := 0
		for i := range out {
			if !out[i].Failed() {
				out[i].Outcome = list[j]
				j++
			}
		}
		return out, nil
	}
}

// commit plays the Commit activity with the test's store (upsert) and audit (nil: accept it).
func commit(upsert func(context.Context, activities.UpsertInput) ([]intake.EntityChange, error),
	audit func(context.Context, activities.AuditInput) error) func(context.Context, activities.AuditInput) (*activities.CommitResult, error) {
	return func(ctx context.Context, in activities.AuditInput) (*activities.CommitResult, error) {
		changes, err := upsert(ctx, activities.UpsertInput{Ref: in.Ref, Changes: in.Result.Entities})
		if err != nil {
			return nil, err
		}
		in = activities.Committed(in, changes)
		if audit != nil {
			if err := audit(ctx, in); err != nil {
				return nil, err
			}
		}
		return &activities.CommitResult{Result: in.Result, Failure: in.Failure}, nil
	}
}

func (s *IngestSuite) TestTransientStoreErrorIsRetriedUntilItSucceeds() {
	calls := 0
	var audited []intake.EntityChange
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(
		func(ctx context.Context, in activities.UpsertInput) ([]intake.EntityChange, error) {
			calls++
			if calls < 3 {
				return nil, errors.New("store unavailable")
			}
			return outcomes(intake.OutcomeCreated)(ctx, in)
		}, func(_ context.Context, in activities.AuditInput) error {
			audited = in.Result.Entities
			return nil
		}))
	local, regular := s.countCommits()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"kind":"groups","groups":[{"id":"g1","name":"G"}]}`))
	s.Require().True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(3, calls, "two transient failures, then success")
	s.Equal(1, *local, "one attempt as a local activity")
	s.Equal(2, *regular, "then the regular activity, retried with backoff")
	var res intake.IngestResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(intake.DeliverySucceeded, res.Outcome)
	s.Require().Len(res.Entities, 1)
	s.Equal(intake.OutcomeCreated, res.Entities[0].Outcome)
	s.Len(audited, 1)
}

// countCommits counts the Commit steps run as local and as regular activities; s.locals lists
// every local activity run.
func (s *IngestSuite) countCommits() (local, regular *int) {
	local, regular = new(int), new(int)
	s.locals = nil
	s.env.SetOnLocalActivityStartedListener(func(info *activity.Info, _ context.Context, _ []any) {
		s.locals = append(s.locals, info.ActivityType.Name)
		if info.ActivityType.Name == "Commit" {
			*local++
		}
	})
	s.env.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		if info.ActivityType.Name == "Commit" {
			*regular++
		}
	})
	return local, regular
}

func (s *IngestSuite) TestAHealthyStoreCommitsInTheFirstWorkflowTask() {
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(outcomes(intake.OutcomeCreated), nil))
	local, regular := s.countCommits()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"kind":"groups","groups":[{"id":"g1","name":"G"}]}`))
	s.Require().True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(1, *local, "Commit ran as a local activity")
	s.Zero(*regular, "no activity task")
	if s.steps == intake.StepsPrepared {
		s.Equal([]string{"Prepare", "Commit"}, s.locals, "the pure steps in one local activity")
	} else {
		s.Equal([]string{"Verify", "Map", "Validate", "Commit"}, s.locals, "the steps of the version before Prepare")
	}
}

func (s *IngestSuite) TestMappingErrorIsNotRetriedAndIsAudited() {
	var audited []intake.EntityChange
	// g2 has no id: that item fails, g1 still goes to the store.
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(outcomes(intake.OutcomeCreated),
		func(_ context.Context, in activities.AuditInput) error {
			audited = in.Result.Entities
			return nil
		})).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"kind":"groups","groups":[{"id":"g1"},{"name":"no id"}]}`))
	s.Require().True(s.env.IsWorkflowCompleted())
	s.assertFailedWith(intake.ErrMapping, "mappings[0].entity.identifier")
	s.Require().Len(audited, 2)
	s.Equal(intake.OutcomeCreated, audited[0].Outcome)
	s.True(audited[1].Failed())
	s.env.AssertExpectations(s.T())
}

func (s *IngestSuite) TestValidationErrorFailsWithoutTouchingTheStore() {
	s.env.OnActivity(s.a.Audit, mock.Anything, mock.Anything).Return(nil).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"kind":"groups","groups":[{"id":"g1","name":42}]}`))
	s.Require().True(s.env.IsWorkflowCompleted())
	s.assertFailedWith(intake.ErrValidation, "property 'name': expected string, got number")
	s.env.AssertNotCalled(s.T(), "Commit", mock.Anything, mock.Anything)
}

func (s *IngestSuite) TestFilteredDeliveryWritesNothing() {
	var recorded activities.AuditInput
	s.env.OnActivity(s.a.Audit, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.AuditInput) error {
		recorded = in
		return nil
	}).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"kind":"other"}`))
	s.Require().True(s.env.IsWorkflowCompleted())
	s.Require().NoError(s.env.GetWorkflowError())
	var res intake.IngestResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	s.Equal(intake.DeliveryFiltered, res.Outcome)
	s.True(res.Mappings[0].Filtered)
	s.Empty(res.Entities)
	s.env.AssertNotCalled(s.T(), "Commit", mock.Anything, mock.Anything)
	s.Empty(activities.AuditEntries(recorded), "a filtered delivery has no audit entry")
	s.Equal(intake.DeliveryFiltered, recorded.Result.Outcome, "but its delivery record says filtered")
}

func (s *IngestSuite) TestResultListsEveryEntityOutcome() {
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(
		outcomes(intake.OutcomeCreated, intake.OutcomeUpdated, intake.OutcomeUnchanged, intake.OutcomeSkipped), nil))
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"kind":"groups","groups":[{"id":"a"},{"id":"b"},{"id":"c"},{"id":"d"}]}`))
	s.Require().NoError(s.env.GetWorkflowError())
	var res intake.IngestResult
	s.Require().NoError(s.env.GetWorkflowResult(&res))
	var got []string
	for _, e := range res.Entities {
		got = append(got, e.Identifier+":"+e.Outcome)
	}
	s.Equal([]string{"a:created", "b:updated", "c:unchanged", "d:skipped"}, got)
}

func (s *IngestSuite) TestTamperedBodyFailsSignatureInWorkflow() {
	d := s.delivery(`{"kind":"groups","groups":[{"id":"g1"}]}`)
	d.Body = []byte(`{"kind":"groups","groups":[{"id":"evil"}]}`)
	var recorded activities.AuditInput
	s.env.OnActivity(s.a.Audit, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.AuditInput) error {
		recorded = in
		return nil
	}).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, d)
	s.Require().True(s.env.IsWorkflowCompleted())
	s.assertFailedWith(intake.ErrSignatureInvalid, "signature mismatch")
	entries := activities.AuditEntries(recorded)
	s.Require().Len(entries, 1)
	s.Equal(intake.ActionAuthenticate, entries[0].Action)
	s.Equal("delivery", entries[0].ResourceType)
	s.env.AssertNotCalled(s.T(), "Commit", mock.Anything, mock.Anything)
}

func (s *IngestSuite) assertFailedWith(errType, msg string) {
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	var appErr *temporal.ApplicationError
	s.Require().True(errors.As(err, &appErr), "want an application error, got %v", err)
	s.Equal(errType, appErr.Type())
	s.True(appErr.NonRetryable())
	s.Contains(appErr.Message(), msg)
}
