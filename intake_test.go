package intake_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
)

// trigger.at always has three fraction digits in UTC, like the seed's audit log, and reads back.
func TestAuditTriggerAtHasMilliseconds(t *testing.T) {
	paris := time.FixedZone("CET", 3600)
	for name, tc := range map[string]struct {
		at   time.Time
		want string
	}{
		"trailing zero kept":        {time.Date(2025, 11, 2, 6, 3, 25, 330_000_000, time.UTC), "2025-11-02T06:03:25.330Z"},
		"whole second":              {time.Date(2025, 11, 2, 6, 3, 25, 0, time.UTC), "2025-11-02T06:03:25.000Z"},
		"seed's value":              {time.Date(2025, 11, 2, 6, 3, 25, 333_000_000, time.UTC), "2025-11-02T06:03:25.333Z"},
		"sub-millisecond truncated": {time.Date(2025, 11, 2, 6, 3, 25, 333_999_999, time.UTC), "2025-11-02T06:03:25.333Z"},
		"other zone becomes UTC":    {time.Date(2025, 11, 2, 7, 3, 25, 5_000_000, paris), "2025-11-02T06:03:25.005Z"},
	} {
		t.Run(name, func(t *testing.T) {
			e := intake.AuditEntry{ID: "x", Action: intake.ActionCreate, ResourceType: "entity", Status: intake.StatusSuccess,
				Trigger: intake.AuditTrigger{At: tc.at, By: intake.AuditBy{IntegrationID: "sonar_webhook"}, Origin: intake.OriginWebhook}}
			raw, err := json.Marshal(e)
			require.NoError(t, err)
			var doc map[string]any
			require.NoError(t, json.Unmarshal(raw, &doc))
			assert.Equal(t, map[string]any{"at": tc.want, "by": map[string]any{"integration_id": "sonar_webhook"}, "origin": "WEBHOOK"}, doc["trigger"])

			var back intake.AuditEntry
			require.NoError(t, json.Unmarshal(raw, &back))
			assert.True(t, back.Trigger.At.Equal(tc.at.Truncate(time.Millisecond)), "%s", back.Trigger.At)
			assert.Equal(t, e.Trigger.By, back.Trigger.By)
			assert.Equal(t, e.Trigger.Origin, back.Trigger.Origin)
		})
	}
}

func TestAuditEntryDetailsOnlyWhenSet(t *testing.T) {
	raw, err := json.Marshal(intake.AuditEntry{ID: "a"})
	require.NoError(t, err)
	assert.NotContains(t, string(raw), "details")
	raw, err = json.Marshal(intake.AuditEntry{ID: "a", Message: "Relation 'octocat' does not exist",
		Details: map[string]any{"relation": "owner", "target_template": "github_user"}})
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"details":{"relation":"owner","target_template":"github_user"}`)
}
