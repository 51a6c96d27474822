package tests

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
)

// The operator's story: a delivery fails on a missing relation, the related entity arrives
// through another integration, a replay succeeds, and the audit log tells it in order.
func TestDeliveriesAndReplay(t *testing.T) {
	s := startDev(t)
	putIntegration(t, s, `{"identifier":"teams","security":{"scheme":"none","allow_unsigned":true},
	  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
	putIntegration(t, s, `{"identifier":"people","security":{"scheme":"none","allow_unsigned":true},"request_identifier":".event_id",
	  "mappings":[{"template":"users","entity":{"identifier":".id","properties":{"firstname":".firstname"},"relations":{"team":".team"}}}]}`)

	t.Run("failed delivery, related entity arrives, replay succeeds", func(t *testing.T) {
		code, out := s.post("people", []byte(`{"event_id":"ev-1","id":"ada","firstname":"Ada","team":"platform"}`), nil)
		require.Equal(t, 202, code)
		_, err := s.waitWorkflow(out["workflow_id"].(string))
		require.Error(t, err)

		var d intake.DeliveryRecord
		code, _ = s.request("GET", "/api/v1/deliveries/people.ev-1", nil, true, &d)
		require.Equal(t, 200, code)
		assert.Equal(t, intake.DeliveryFailed, d.Status)
		require.NotNil(t, d.Error)
		assert.Equal(t, intake.ErrRelationMissing, d.Error.Type)
		assert.JSONEq(t, `{"event_id":"ev-1","id":"ada","firstname":"Ada","team":"platform"}`, string(d.Body))
		assert.Contains(t, d.WorkflowURL, "/namespaces/default/workflows/ingest.people.ev-1/")
		var failed []intake.DeliveryRecord
		s.request("GET", "/api/v1/deliveries?status=failed&integration=people", nil, true, &failed)
		require.Len(t, failed, 1)

		code, out = s.post("teams", []byte(`{"id":"platform","name":"Platform"}`), nil)
		require.Equal(t, 202, code)
		_, err = s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)

		var rep map[string]any
		code, _ = s.request("POST", "/api/v1/deliveries/people.ev-1/replay", nil, true, &rep)
		require.Equal(t, 202, code, "%v", rep)
		res, err := s.waitWorkflow(rep["workflow_id"].(string))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)

		s.request("GET", "/api/v1/deliveries/people.ev-1", nil, true, &d)
		assert.Equal(t, intake.DeliverySucceeded, d.Status)
		require.Len(t, d.Replays, 1)
		assert.Equal(t, rep["workflow_id"], d.Replays[0].WorkflowID)

		var story []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?limit=10", nil, true, &story)
		require.GreaterOrEqual(t, len(story), 3)
		// newest first: the replay's success, the team's creation, the original failure
		assert.Equal(t, []string{"REPLAY CREATE SUCCESS users/ada", "WEBHOOK CREATE SUCCESS team/platform", "WEBHOOK CREATE FAILURE users/ada"},
			[]string{line(story[0]), line(story[1]), line(story[2])})
		assert.Equal(t, "Relation 'platform' does not exist", story[2].Message)
		assert.Equal(t, map[string]any{"relation": "team", "target_template": "team"}, story[2].Details)
		assert.Equal(t, "people.ev-1", story[0].DeliveryID, "the replay's entry is linked to the original delivery")
	})

	t.Run("concurrent duplicates start one workflow and write one audit entry", func(t *testing.T) {
		var wg sync.WaitGroup
		fresh := 0
		outs := make(chan map[string]any, 10)
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				code, out := s.post("people", []byte(`{"event_id":"ev-dup","id":"bob","firstname":"Bob"}`), nil)
				if code == 202 {
					outs <- out
				}
			}()
		}
		wg.Wait()
		close(outs)
		n, runs := 0, map[any]bool{}
		for out := range outs {
			n++
			if out["duplicate"] == false {
				fresh++
			}
			runs[out["run_id"]] = true
		}
		assert.Equal(t, 10, n, "every sender gets 202")
		assert.Equal(t, 1, fresh, "exactly one start")
		assert.Len(t, runs, 1, "every answer names the same run")
		_, err := s.waitWorkflow("ingest.people.ev-dup")
		require.NoError(t, err)
		var entries []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?integration=people&status=SUCCESS&limit=1000", nil, true, &entries)
		count := 0
		for _, e := range entries {
			if e.Context.Entity == "bob" {
				count++
			}
		}
		assert.Equal(t, 1, count)
	})

	t.Run("bulk replay of 100 failed deliveries survives a restart and succeeds once each", func(t *testing.T) {
		const n = 100
		var ids []string
		for i := 0; i < n; i++ {
			code, out := s.post("people", []byte(fmt.Sprintf(`{"event_id":"bulk-%03d","id":"u%03d","firstname":"U%d","team":"later"}`, i, i, i)), nil)
			require.Equal(t, 202, code)
			ids = append(ids, out["workflow_id"].(string))
		}
		for _, id := range ids {
			_, err := s.waitWorkflow(id)
			require.Error(t, err)
		}
		code, out := s.post("teams", []byte(`{"id":"later","name":"Later"}`), nil)
		require.Equal(t, 202, code)
		_, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)

		var started map[string]any
		code, _ = s.request("POST", "/api/v1/deliveries/replay", map[string]any{"integration": "people", "status": "failed"}, true, &started)
		require.Equal(t, 202, code, "%v", started)
		replayID := started["replay_id"].(string)

		// Kill the whole process (worker, Temporal, store) half-way, then start it again.
		require.Eventually(t, func() bool {
			var p struct{ Progress struct{ Started int } }
			s.request("GET", "/api/v1/replays/"+replayID, nil, true, &p)
			return p.Progress.Started >= 20
		}, time.Minute, 20*time.Millisecond)
		s.kill()
		s.start()

		var p struct {
			Status   string
			Progress struct {
				Started, Succeeded, Failed int
				Done                       bool
			}
		}
		require.Eventually(t, func() bool {
			code, _ := s.request("GET", "/api/v1/replays/"+replayID, nil, true, &p)
			return code == http.StatusOK && p.Status == "Completed"
		}, 3*time.Minute, 200*time.Millisecond)
		assert.True(t, p.Progress.Done)
		assert.Equal(t, 0, p.Progress.Failed)

		var stillFailed []intake.DeliveryRecord
		s.request("GET", "/api/v1/deliveries?status=failed&integration=people&limit=1000", nil, true, &stillFailed)
		assert.Empty(t, stillFailed)
		var entries []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?integration=people&origin=REPLAY&status=SUCCESS&limit=1000", nil, true, &entries)
		perEntity := map[string]int{}
		for _, e := range entries {
			perEntity[e.Context.Entity]++
		}
		for i := 0; i < n; i++ {
			assert.Equal(t, 1, perEntity[fmt.Sprintf("u%03d", i)], "u%03d replayed exactly once", i)
		}
	})
}

func line(e intake.AuditEntry) string {
	return e.Trigger.Origin + " " + e.Action + " " + e.Status + " " + e.Context.EntityTemplate + "/" + e.Context.Entity
}
