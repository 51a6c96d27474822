package workflows_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/mock"
	"github.com/stretchr/testify/suite"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"intake"
	"intake/activities"
	"intake/mappings"
	"intake/workflows"
)

// HydrateSuite runs the workflow of an integration that fetches the full record of a thin
// notification; the Hydrate, Commit and Audit activities are played by the test.
type HydrateSuite struct {
	suite.Suite
	testsuite.WorkflowTestSuite
	env   *testsuite.TestWorkflowEnvironment
	a     *activities.Activities
	steps int // the input's Steps: the current steps, or those of a starter before Prepare
}

func TestHydratingWorkflow(t *testing.T) {
	t.Run("prepared", func(t *testing.T) { suite.Run(t, &HydrateSuite{steps: intake.StepsPrepared}) })
	t.Run("before Prepare", func(t *testing.T) { suite.Run(t, &HydrateSuite{steps: 0}) })
}

func (s *HydrateSuite) SetupTest() {
	tpl := intake.Template{Identifier: "account", Schema: intake.TemplateSchema{Properties: map[string]json.RawMessage{
		"email": json.RawMessage(`{"type":"string"}`), "plan": json.RawMessage(`{"type":"string"}`)}}}
	var in intake.Integration
	s.Require().NoError(json.Unmarshal([]byte(`{"identifier":"accounts","source":{"kind":"kafka","topics":["accounts"]},
	  "hydration":{"url":"https://api.example.com/accounts/{id}","event_path":".event","delete_events":["deleted"],"merge":true},
	  "mappings":[{"template":"account","entity":{"identifier":".id","properties":{"email":".email","plan":".plan"}}}]}`), &in))
	cat := mappings.NewCatalog(configSource{templates: []intake.Template{tpl}, integrations: []intake.Integration{in}},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.Require().NoError(cat.Refresh(context.Background()))
	s.a = &activities.Activities{Catalog: cat}
	s.env = s.NewTestWorkflowEnvironment()
	s.env.RegisterActivity(s.a)
	s.env.RegisterWorkflow(workflows.IngestWorkflow)
}

func (s *HydrateSuite) delivery(body string) intake.Delivery {
	return intake.Delivery{ID: "accounts.k1", Integration: "accounts", Key: "k1", Origin: intake.OriginKafka,
		Body: []byte(body), Headers: map[string]string{}, Meta: map[string]any{"topic": "accounts"}, ReceivedAt: time.Now(), Steps: s.steps}
}

func fetched(doc string) *activities.HydrateResult {
	return &activities.HydrateResult{
		HydrationPlan: mappings.HydrationPlan{Operation: mappings.HydrateFetch, Route: -1, ID: "a1"},
		FetchedURL:    "https://api.example.com/accounts/a1", Document: json.RawMessage(doc),
	}
}

func (s *HydrateSuite) TestFetchedDocumentIsMappedAndClearedFieldsAreCleared() {
	s.env.OnActivity(s.a.Hydrate, mock.Anything, mock.Anything).Return(fetched(`{"id":"a1","email":"a@x.io"}`), nil).Once()
	var upserted []intake.EntityChange
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(func(_ context.Context, in activities.UpsertInput) ([]intake.EntityChange, error) {
		upserted = in.Changes
		return outcomes(intake.OutcomeUpdated)(context.Background(), in)
	}, nil)).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"id":"a1","event":"updated"}`))
	s.Require().NoError(s.env.GetWorkflowError())
	s.Require().Len(upserted, 1)
	s.Equal("a1", upserted[0].Identifier)
	s.Equal(map[string]any{"email": "a@x.io"}, upserted[0].Properties)
	s.Equal(intake.UpdateMerge, upserted[0].UpdateMode)
	s.Equal([]string{"properties.plan"}, upserted[0].Clear, "the upstream cleared plan")
	s.env.AssertExpectations(s.T())
}

func (s *HydrateSuite) TestUpstreamOutageIsRetriedWithBackoff() {
	calls := 0
	s.env.OnActivity(s.a.Hydrate, mock.Anything, mock.Anything).Return(func(context.Context, intake.Delivery) (*activities.HydrateResult, error) {
		calls++
		if calls < 3 {
			return nil, temporal.NewApplicationError("hydration: upstream answered 503", intake.ErrHydration)
		}
		return fetched(`{"id":"a1","email":"a@x.io","plan":"pro"}`), nil
	})
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(outcomes(intake.OutcomeCreated), nil)).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"id":"a1"}`))
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(3, calls)
}

func (s *HydrateSuite) TestUpstream4xxFailsTheDeliveryAtOnce() {
	calls := 0
	s.env.OnActivity(s.a.Hydrate, mock.Anything, mock.Anything).Return(func(context.Context, intake.Delivery) (*activities.HydrateResult, error) {
		calls++
		return nil, temporal.NewNonRetryableApplicationError("hydration: upstream answered 404 Not Found", intake.ErrHydration, nil)
	})
	var recorded activities.AuditInput
	s.env.OnActivity(s.a.Audit, mock.Anything, mock.Anything).Return(func(_ context.Context, in activities.AuditInput) error {
		recorded = in
		return nil
	}).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"id":"a1"}`))
	s.Equal(1, calls)
	err := s.env.GetWorkflowError()
	s.Require().Error(err)
	s.Require().NotNil(recorded.Failure)
	s.Equal(intake.ErrHydration, recorded.Failure.Type)
	s.Equal(intake.DeliveryFailed, recorded.Result.Outcome)
	s.env.AssertNotCalled(s.T(), "Commit", mock.Anything, mock.Anything)
}

func (s *HydrateSuite) TestDeleteEventDeletesWithoutFetching() {
	// The real Hydrate decides the delete from the notification and fetches nothing.
	var upserted []intake.EntityChange
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(func(_ context.Context, in activities.UpsertInput) ([]intake.EntityChange, error) {
		upserted = in.Changes
		return outcomes(intake.OutcomeDeleted)(context.Background(), in)
	}, nil)).Once()
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, s.delivery(`{"id":"a1","event":"deleted"}`))
	s.Require().NoError(s.env.GetWorkflowError())
	s.Require().Len(upserted, 1)
	s.Equal(intake.OperationDelete, upserted[0].Operation)
	s.Equal("a1", upserted[0].Identifier)
}
