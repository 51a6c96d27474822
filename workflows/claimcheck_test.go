package workflows_test

import (
	"context"

	"github.com/stretchr/testify/mock"

	"intake"
	"intake/activities"
	"intake/workflows"
)

// A bulk replay hands its children references: the run loads its stored delivery first.
func (s *IngestSuite) TestReferenceIsLoadedBeforeTheSteps() {
	full := s.delivery(`{"kind":"groups","groups":[{"id":"g1","name":"G"}]}`)
	full.Origin, full.ReplayOf = intake.OriginReplay, full.ID
	s.env.OnActivity(s.a.LoadDelivery, mock.Anything, full.ID).Return(&full, nil).Once()
	var audited activities.AuditInput
	s.env.OnActivity(s.a.Commit, mock.Anything, mock.Anything).Return(commit(outcomes(intake.OutcomeUpdated),
		func(_ context.Context, in activities.AuditInput) error {
			audited = in
			return nil
		})).Once()
	ref := intake.Delivery{ID: full.ID, Integration: full.Integration, Key: full.Key, Origin: intake.OriginReplay,
		ReplayOf: full.ID, Ref: full.ID, Verified: true}
	s.env.ExecuteWorkflow(workflows.IngestWorkflow, ref)
	s.Require().NoError(s.env.GetWorkflowError())
	s.Equal(string(full.Body), string(audited.Delivery.Body), "the loaded body was mapped and recorded")
	s.Require().Len(audited.Result.Entities, 1)
	s.Equal("g1", audited.Result.Entities[0].Identifier)
	s.env.AssertExpectations(s.T())
}
