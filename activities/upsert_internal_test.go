package activities

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/store"
)

// A missing relation target fails in the seed's exact words; the relation and its target
// template are kept apart for the audit entry's details.
func TestCheckRelationsMissingTarget(t *testing.T) {
	tpl := &intake.Template{Identifier: "sonar_project", Relations: map[string]intake.Relation{
		"github_repository": {Target: "github_repository"},
	}}
	c := &intake.EntityChange{Template: "sonar_project", Identifier: "invalid_entity",
		Relations: map[string]any{"github_repository": "github_repo"}}
	_, err := checkRelations(c, tpl, map[string]*store.EntityDoc{}, "sonar_webhook", time.Now())
	require.Error(t, err)
	assert.Equal(t, "Relation 'github_repo' does not exist", err.Error())
	var missing *relationMissingError
	require.True(t, errors.As(err, &missing))
	assert.Equal(t, "github_repository", missing.relation)
	assert.Equal(t, "github_repository", missing.template)

	// An existing target passes; with create_missing_related_entities a placeholder is made.
	docs := map[string]*store.EntityDoc{"github_repository/octo-org_care_back": {ID: "github_repository/octo-org_care_back"}}
	c.Relations["github_repository"] = "octo-org_care_back"
	ph, err := checkRelations(c, tpl, docs, "sonar_webhook", time.Now())
	require.NoError(t, err)
	assert.Empty(t, ph)
	c.Relations["github_repository"], c.CreateMissingRelated = "github_repo", true
	ph, err = checkRelations(c, tpl, map[string]*store.EntityDoc{}, "sonar_webhook", time.Now())
	require.NoError(t, err)
	require.Len(t, ph, 1)
	assert.Equal(t, "github_repository/github_repo", ph[0].ID)
}
