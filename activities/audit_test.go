package activities_test

import (
	"encoding/hex"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/activities"
)

func TestAuditIDsAreDeterministicPerRun(t *testing.T) {
	a := activities.AuditID("wf", "run1", 0, 1)
	assert.Equal(t, a, activities.AuditID("wf", "run1", 0, 1))
	assert.NotEqual(t, a, activities.AuditID("wf", "run2", 0, 1))
	assert.NotEqual(t, a, activities.AuditID("wf", "run1", 1, 0))
	assert.Len(t, a, 32)
	_, err := hex.DecodeString(a)
	assert.NoError(t, err)
}

func TestAuditEntriesCarryDetails(t *testing.T) {
	details := map[string]any{"relation": "github_repository", "target_template": "github_repository"}
	in := activities.AuditInput{
		Ref: activities.Ref{DeliveryID: "sonar_webhook.k", Integration: "sonar_webhook", Origin: intake.OriginWebhook, WorkflowID: "ingest.sonar_webhook.k", RunID: "r"},
		At:  time.Date(2025, 11, 2, 6, 3, 25, 330_000_000, time.UTC),
		Result: intake.IngestResult{Entities: []intake.EntityChange{
			{Template: "sonar_project", Identifier: "care_back", Operation: intake.OperationUpsert, Outcome: intake.OutcomeCreated},
			{Mapping: 0, Item: 1, Template: "sonar_project", Identifier: "invalid_entity", Operation: intake.OperationUpsert,
				Outcome: intake.OutcomeFailed, ErrorType: intake.ErrRelationMissing, Message: "Relation 'github_repo' does not exist", Details: details},
		}},
	}
	entries := activities.AuditEntries(in)
	require.Len(t, entries, 2)
	assert.Equal(t, intake.StatusSuccess, entries[0].Status)
	assert.Nil(t, entries[0].Details)
	assert.Equal(t, intake.ActionCreate, entries[1].Action)
	assert.Equal(t, intake.StatusFailure, entries[1].Status)
	assert.Equal(t, "Relation 'github_repo' does not exist", entries[1].Message)
	assert.Equal(t, details, entries[1].Details)
	assert.Equal(t, intake.AuditContext{EntityTemplate: "sonar_project", Entity: "invalid_entity"}, entries[1].Context)
}
