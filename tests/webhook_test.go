package tests

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"intake"
	"intake/embedded"
	"intake/examples"
	"intake/store"
	"intake/workflows"
)

// One embedded stack for the whole package (the server is heavy); subtests run in order.
func TestWebhookPathEndToEnd(t *testing.T) {
	s := startDev(t)

	t.Run("examples are loaded on first start", func(t *testing.T) {
		var tpls []intake.Template
		code, _ := s.request("GET", "/api/v1/templates", nil, true, &tpls)
		require.Equal(t, 200, code)
		assert.Len(t, tpls, 6)
		var ints []intake.Integration
		s.request("GET", "/api/v1/integrations", nil, true, &ints)
		ids := []string{}
		for _, in := range ints {
			ids = append(ids, in.Identifier)
		}
		assert.ElementsMatch(t, []string{"github_repos", "sonar_webhook", "users_kafka", "gcp_assets"}, ids)
	})

	// The workflows of the failed Sonar samples, found below by search attribute.
	var failedSonar []string
	t.Run("every example webhook sample produces its entities and audit entries", func(t *testing.T) {
		samples, err := examples.Samples()
		require.NoError(t, err)
		ran := 0
		for _, smp := range samples {
			sec := exampleSecurity(t, smp.Integration)
			if sec == nil {
				continue // stream integrations are exercised by the listener tests
			}
			ran++
			t.Run(smp.Name, func(t *testing.T) {
				wid := runSample(t, s, smp, sec)
				if smp.Integration == "sonar_webhook" && smp.Expect.Outcome == intake.DeliveryFailed {
					failedSonar = append(failedSonar, wid)
				}
			})
		}
		assert.GreaterOrEqual(t, ran, 5)
		assert.Len(t, failedSonar, 1, "one Sonar sample reproduces the seed's FAILURE")
	})

	t.Run("the Temporal Web UI serves its pages and shows the deliveries' workflows", func(t *testing.T) {
		resp, err := http.Get("http://" + s.addr("ui") + "/")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode)
		resp, err = http.Get("http://" + s.addr("ui") + "/api/v1/namespaces/default/workflows?query=" +
			url.QueryEscape("IntakeIntegration = 'sonar_webhook' AND IntakeOutcome = 'failed'"))
		require.NoError(t, err)
		defer resp.Body.Close()
		var list struct {
			Executions []struct {
				Execution struct{ WorkflowID string } `json:"execution"`
			} `json:"executions"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&list))
		require.Len(t, list.Executions, 1, "search attributes find the failed Sonar delivery")
		require.Len(t, failedSonar, 1)
		assert.Equal(t, failedSonar[0], list.Executions[0].Execution.WorkflowID)
	})

	t.Run("visibility records live in their own SQLite file", func(t *testing.T) {
		require.Len(t, failedSonar, 1)
		rows := func(file string) int {
			db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir, ".intake", "temporal", file)+"?mode=ro")
			require.NoError(t, err)
			defer db.Close()
			var n int
			require.NoError(t, db.QueryRow(`SELECT count(*) FROM executions_visibility WHERE workflow_id = ?`, failedSonar[0]).Scan(&n))
			return n
		}
		assert.Equal(t, 1, rows(embedded.VisibilityFile), "the record is in the visibility file")
		assert.Equal(t, 0, rows("temporal.db"), "the execution file holds no visibility record")
	})

	t.Run("the embedded store indexes _id on every collection", func(t *testing.T) {
		tables, err := store.IDIndexedTables(context.Background(), filepath.Join(s.dir, ".intake", "mongodb"), "intake")
		require.NoError(t, err)
		assert.GreaterOrEqual(t, len(tables), len(store.Collections))
	})

	t.Run("no secret in workflow input or history", func(t *testing.T) {
		// A static credential: the header is the secret itself and must be redacted.
		putIntegration(t, s, `{"identifier":"static_hook","security":{"signature_header_name":"X-Token","signature_value":"static-s3cret","scheme":"static"},
		  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
		code, out := s.post("static_hook", []byte(`{"id":"sg-static","name":"Static"}`),
			map[string]string{"X-Token": "static-s3cret", "Authorization": "Bearer other-s3cret", "Cookie": "session=cookie-s3cret"})
		require.Equal(t, 202, code, out)
		res, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
		h := s.history(out["workflow_id"].(string))
		for _, secret := range []string{"static-s3cret", "other-s3cret", "cookie-s3cret"} {
			assert.NotContains(t, h, secret)
		}
		assert.Contains(t, h, "sg-static", "the history does carry the body")
		var in intake.Integration
		s.request("GET", "/api/v1/integrations/static_hook", nil, true, &in)
		assert.Equal(t, intake.Masked, in.Security.SignatureValue)
		assert.NotContains(t, s.logs.String(), "static-s3cret")
	})

	t.Run("a delivery's history: one Prepare step, no version marker; earlier inputs run and replay as before", func(t *testing.T) {
		putIntegration(t, s, `{"identifier":"shapes","security":{"scheme":"none","allow_unsigned":true},
		  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
		code, out := s.post("shapes", []byte(`{"id":"sg-shape","name":"Shape"}`), nil)
		require.Equal(t, 202, code, out)
		current := out["workflow_id"].(string)
		_, err := s.waitWorkflow(current)
		require.NoError(t, err)

		// an input from a starter before Prepare (Steps 0), as one still running at an upgrade
		legacy := "ingest.shapes.before-prepare"
		run, err := s.temporal.ExecuteWorkflow(context.Background(), client.StartWorkflowOptions{ID: legacy, TaskQueue: intake.TaskQueue},
			workflows.IngestWorkflow, intake.Delivery{ID: "shapes.before-prepare", Integration: "shapes", Key: "before-prepare",
				Origin: intake.OriginWebhook, Body: []byte(`{"id":"sg-legacy","name":"Legacy"}`), Headers: map[string]string{}, ReceivedAt: time.Now().UTC()})
		require.NoError(t, err)
		var res intake.IngestResult
		require.NoError(t, run.Get(context.Background(), &res))
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)

		steps := func(h *historypb.History) (markers []string, changeVersion bool) {
			for _, ev := range h.Events {
				if m := ev.GetMarkerRecordedEventAttributes(); m != nil {
					name := m.GetMarkerName()
					if d := m.GetDetails()["data"]; d != nil && len(d.Payloads) > 0 { // a local activity's
						var la struct{ ActivityType string }
						require.NoError(t, json.Unmarshal(d.Payloads[0].Data, &la))
						name += ":" + la.ActivityType
					}
					markers = append(markers, name)
				}
				if u := ev.GetUpsertWorkflowSearchAttributesEventAttributes(); u != nil {
					_, has := u.GetSearchAttributes().GetIndexedFields()["TemporalChangeVersion"]
					changeVersion = changeVersion || has
				}
			}
			return markers, changeVersion
		}
		replayer := worker.NewWorkflowReplayer()
		replayer.RegisterWorkflow(workflows.IngestWorkflow)
		for id, want := range map[string][]string{
			current: {"LocalActivity:Prepare", "LocalActivity:Commit"},
			legacy:  {"LocalActivity:Verify", "LocalActivity:Map", "LocalActivity:Validate", "Version", "LocalActivity:Commit"},
		} {
			h := s.historyOf(id)
			markers, changeVersion := steps(h)
			assert.Equal(t, want, markers, id)
			assert.Equal(t, id == legacy, changeVersion, "%s: the version marker's search-attribute upsert", id)
			assert.NoError(t, replayer.ReplayWorkflowHistory(nil, h), "%s replays with this version's code", id)
		}
	})

	t.Run("a wrong or missing signature gets 401, an audit entry, and no workflow", func(t *testing.T) {
		sec := exampleSecurity(t, "github_repos")
		body := []byte(`{"action":"created","repository":{"full_name":"evil/repo","name":"r","html_url":"https://x.io"}}`)
		bad := sign(&intake.Security{SignatureHeaderName: sec.SignatureHeaderName, SignatureValue: "sha256=wrong"}, body, nil)
		code, out := s.post("github_repos", body, bad)
		assert.Equal(t, 401, code)
		assert.Equal(t, "signature_invalid", out["error"])
		assert.Equal(t, "signature mismatch", out["message"])
		code, out = s.post("github_repos", body, nil)
		assert.Equal(t, 401, code)
		assert.Equal(t, "signature header X-Hub-Signature-256 missing", out["message"])

		var entries []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?action=AUTHENTICATE&integration=github_repos", nil, true, &entries)
		require.Len(t, entries, 2)
		for _, e := range entries {
			assert.Equal(t, intake.StatusFailure, e.Status)
			assert.Equal(t, "delivery", e.ResourceType)
			assert.Equal(t, intake.OriginWebhook, e.Trigger.Origin)
			assert.Contains(t, e.Message, "signature")
			assert.NotContains(t, e.Message, "your-webhook-secret")
			assert.Empty(t, e.WorkflowID)
		}
		code, _ = s.request("GET", "/api/v1/entities/github_repository/evil_repo", nil, true, nil)
		assert.Equal(t, 404, code)
		assert.NotContains(t, s.logs.String(), "your-webhook-secret")
	})

	t.Run("ingest status codes", func(t *testing.T) {
		sec := exampleSecurity(t, "github_repos")
		code, out := s.post("nope", []byte(`{}`), nil)
		assert.Equal(t, 404, code)
		assert.Equal(t, "integration_not_found", out["error"])

		putIntegration(t, s, `{"identifier":"off_hook","enabled":false,"security":{"scheme":"none","allow_unsigned":true},
		  "mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)
		code, out = s.post("off_hook", []byte(`{"id":"x"}`), nil)
		assert.Equal(t, 403, code)
		assert.Equal(t, "integration_disabled", out["error"])

		big := []byte(`{"pad":"` + strings.Repeat("x", 1<<20) + `"}`)
		code, out = s.post("github_repos", big, sign(sec, big, nil))
		assert.Equal(t, 413, code)
		assert.Equal(t, "body_too_large", out["error"])

		junk := []byte(`{not json`)
		code, out = s.post("github_repos", junk, sign(sec, junk, nil))
		assert.Equal(t, 400, code)
		assert.Equal(t, "invalid_json", out["error"])

		putIntegration(t, s, `{"identifier":"slow_hook","security":{"scheme":"none","allow_unsigned":true},"rate_limit":{"per_second":1,"burst":2},
		  "mappings":[{"template":"team","filter":"false","entity":{"identifier":".id"}}]}`)
		codes := map[int]int{}
		for i := 0; i < 5; i++ {
			c, _ := s.post("slow_hook", []byte(`{"id":"x"}`), nil)
			codes[c]++
		}
		assert.Equal(t, 2, codes[202], "the burst is accepted")
		assert.Equal(t, 3, codes[429], "the rest is over the limit")
	})

	t.Run("a redelivered key is not processed twice", func(t *testing.T) {
		// The seed's github_repos has no request_identifier (every post is a delivery of its own):
		// the same integration keyed by GitHub's delivery header.
		var keyed intake.Integration
		for _, in := range exampleIntegrations(t) {
			if in.Identifier == "github_repos" {
				keyed = in
			}
		}
		keyed.Identifier, keyed.RequestIdentifier = "github_keyed", `$headers["x-github-delivery"]`
		doc, err := json.Marshal(keyed)
		require.NoError(t, err)
		putIntegration(t, s, string(doc))
		sec := exampleSecurity(t, "github_repos")
		body := []byte(`{"action":"edited","repository":{"full_name":"octo-org/dup","name":"dup","html_url":"https://github.com/octo-org/dup","private":false,"owner":{"login":"octocat"}}}`)
		h := sign(sec, body, map[string]string{"X-GitHub-Delivery": "dup-delivery-1"})
		code, first := s.post("github_keyed", body, h)
		require.Equal(t, 202, code)
		assert.Equal(t, false, first["duplicate"])
		assert.Equal(t, "ingest.github_keyed.dup-delivery-1", first["workflow_id"])
		_, err = s.waitWorkflow(first["workflow_id"].(string))
		require.NoError(t, err)
		code, second := s.post("github_keyed", body, h)
		require.Equal(t, 202, code)
		assert.Equal(t, true, second["duplicate"])
		assert.Equal(t, first["run_id"], second["run_id"])
		var entries []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?integration=github_keyed&action=CREATE", nil, true, &entries)
		n := 0
		for _, e := range entries {
			if e.Context.Entity == "octo-org_dup" {
				n++
			}
		}
		assert.Equal(t, 1, n)
	})

	t.Run("admin writes are validated and live at once", func(t *testing.T) {
		var e map[string]any
		code, _ := s.request("PUT", "/api/v1/integrations/broken", []byte(`{"mappings":[{"template":"github_repository","entity":{"identifier":".a | ","properties":{"url":".x | ("}}}]}`), true, &e)
		assert.Equal(t, 400, code)
		assert.Equal(t, "invalid_config", e["error"])
		assert.True(t, strings.HasPrefix(e["message"].(string), "mappings[0].entity.identifier: "), e["message"])
		details := e["details"].([]any)
		assert.Len(t, details, 2)
		assert.Equal(t, "mappings[0].entity.properties.url", details[1].(map[string]any)["field"])

		code, _ = s.request("PUT", "/api/v1/integrations/ghost", []byte(`{"mappings":[{"template":"ghost","entity":{"identifier":".id"}}]}`), true, &e)
		assert.Equal(t, 400, code)
		assert.Contains(t, e["message"], `mappings[0].template: unknown template "ghost"`)

		code, _ = s.request("PUT", "/api/v1/integrations/x", []byte(`{"mappings":[{"template":"users","operation":"upsertt","entity":{"identifier":".id"}}]}`), true, &e)
		assert.Equal(t, 400, code)
		assert.Contains(t, e["message"], "mappings[0].operation")

		code, _ = s.request("GET", "/api/v1/templates", nil, false, &e)
		assert.Equal(t, 401, code)
		assert.Equal(t, "unauthorized", e["error"])

		// A new template and integration work for the very next request.
		code, _ = s.request("PUT", "/api/v1/templates/squad", []byte(`{"title":"Squad","schema":{"properties":{"size":{"type":"integer","maximum":3}},"required":["size"]}}`), true, nil)
		require.Equal(t, 201, code)
		putIntegration(t, s, `{"identifier":"squads","security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"squad","update_mode":"replace","entity":{"identifier":".id","properties":{"size":".size"}}}]}`)
		code, out := s.post("squads", []byte(`{"id":"payments","size":7}`), nil)
		require.Equal(t, 202, code)
		_, err := s.waitWorkflow(out["workflow_id"].(string))
		var appErr *temporal.ApplicationError
		require.True(t, errors.As(err, &appErr), "%v", err)
		assert.Equal(t, intake.ErrValidation, appErr.Type())
		assert.Contains(t, appErr.Message(), "property 'size': 7 is greater than maximum 3")

		code, _ = s.request("DELETE", "/api/v1/templates/squad", nil, true, &e)
		assert.Equal(t, 409, code)
		assert.Equal(t, "template_in_use", e["error"])
	})

	t.Run("merge keeps, replace drops, stale updates are skipped", func(t *testing.T) {
		putIntegration(t, s, `{"identifier":"groups_merge","security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"team","event_time":".at","entity":{"identifier":".id","title":".title","properties":{"name":".name"}}}]}`)
		putIntegration(t, s, `{"identifier":"groups_replace","security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"team","update_mode":"replace","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
		deliver := func(integration, body string) *intake.IngestResult {
			code, out := s.post(integration, []byte(body), nil)
			require.Equal(t, 202, code)
			res, err := s.waitWorkflow(out["workflow_id"].(string))
			require.NoError(t, err)
			return res
		}
		assert.Equal(t, intake.OutcomeCreated, deliver("groups_merge", `{"id":"sg-m","title":"T","name":"one","at":"2026-01-02T00:00:00Z"}`).Entities[0].Outcome)
		assert.Equal(t, intake.OutcomeUpdated, deliver("groups_merge", `{"id":"sg-m","name":"two","at":"2026-01-03T00:00:00Z"}`).Entities[0].Outcome)
		var e intake.Entity
		s.request("GET", "/api/v1/entities/team/sg-m", nil, true, &e)
		assert.Equal(t, "T", e.Title, "merge keeps the title it did not map")
		assert.Equal(t, "two", e.Properties["name"])
		e = intake.Entity{}
		res := deliver("groups_merge", `{"id":"sg-m","name":"old","at":"2026-01-01T00:00:00Z"}`)
		assert.Equal(t, intake.OutcomeSkipped, res.Entities[0].Outcome)
		s.request("GET", "/api/v1/entities/team/sg-m", nil, true, &e)
		assert.Equal(t, "two", e.Properties["name"], "an older event never overwrites newer data")
		assert.Equal(t, intake.OutcomeUnchanged, deliver("groups_merge", `{"id":"sg-m","name":"two","at":"2026-01-04T00:00:00Z"}`).Entities[0].Outcome)
		assert.Equal(t, intake.OutcomeUpdated, deliver("groups_replace", `{"id":"sg-m","name":"three"}`).Entities[0].Outcome)
		var replaced intake.Entity
		s.request("GET", "/api/v1/entities/team/sg-m", nil, true, &replaced)
		assert.Equal(t, "", replaced.Title, "replace makes the entity exactly the mapping's result")
		assert.Equal(t, map[string]any{"name": "three"}, replaced.Properties)
		var skips []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?action=SKIP&integration=groups_merge", nil, true, &skips)
		require.Len(t, skips, 1)
		assert.Contains(t, skips[0].Message, "stale update")
	})

	t.Run("concurrent merges into one entity lose no update", func(t *testing.T) {
		props, maps := []string{}, []string{}
		for i := 0; i < 8; i++ {
			props = append(props, fmt.Sprintf(`"p%d":{"type":"string"}`, i))
			maps = append(maps, fmt.Sprintf(`"p%d":".p%d"`, i, i))
		}
		code, _ := s.request("PUT", "/api/v1/templates/wide", []byte(`{"schema":{"properties":{`+strings.Join(props, ",")+`}}}`), true, nil)
		require.Equal(t, 201, code)
		putIntegration(t, s, `{"identifier":"wide_merge","security":{"scheme":"none","allow_unsigned":true},
		  "mappings":[{"template":"wide","entity":{"identifier":".id","properties":{`+strings.Join(maps, ",")+`}}}]}`)
		ids := make(chan string, 8)
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				code, out := s.post("wide_merge", []byte(fmt.Sprintf(`{"id":"w","p%d":"v%d"}`, i, i)), nil)
				if code == 202 {
					ids <- out["workflow_id"].(string)
				}
			}(i)
		}
		wg.Wait()
		close(ids)
		for id := range ids {
			_, err := s.waitWorkflow(id)
			require.NoError(t, err)
		}
		var e intake.Entity
		s.request("GET", "/api/v1/entities/wide/w", nil, true, &e)
		for i := 0; i < 8; i++ {
			assert.Equal(t, fmt.Sprintf("v%d", i), e.Properties[fmt.Sprintf("p%d", i)], "p%d", i)
		}
	})

	t.Run("audit log filters and cursor", func(t *testing.T) {
		var all []intake.AuditEntry
		code, _ := s.request("GET", "/api/v1/audit_logs?limit=1000", nil, true, &all)
		require.Equal(t, 200, code)
		require.Greater(t, len(all), 5)
		for i := 1; i < len(all); i++ {
			assert.False(t, all[i].Trigger.At.After(all[i-1].Trigger.At), "newest first")
		}
		var paged []intake.AuditEntry
		cursor := ""
		for pages := 0; pages < 100; pages++ {
			var page []intake.AuditEntry
			path := "/api/v1/audit_logs?limit=2"
			if cursor != "" {
				path += "&cursor=" + cursor
			}
			_, h := s.request("GET", path, nil, true, &page)
			paged = append(paged, page...)
			cursor = h.Get("X-Next-Cursor")
			if cursor == "" {
				break
			}
		}
		require.Len(t, paged, len(all), "the cursor walks every entry once")
		for i := range all {
			assert.Equal(t, all[i].ID, paged[i].ID)
		}
		var failures []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?status=FAILURE&entity_template=sonar_project&origin=WEBHOOK", nil, true, &failures)
		require.Len(t, failures, 1)
		assert.Equal(t, "invalid_entity", failures[0].Context.Entity)
		assert.Equal(t, "Relation 'github_repo' does not exist", failures[0].Message)
		assert.Equal(t, map[string]any{"relation": "github_repository", "target_template": "github_repository"}, failures[0].Details)
		// trigger.at has exactly three fraction digits, UTC, like the seed's 2025-11-02T06:03:25.333Z.
		var raw []map[string]any
		s.request("GET", "/api/v1/audit_logs?limit=1000", nil, true, &raw)
		require.Len(t, raw, len(all))
		millis := regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$`)
		for _, e := range raw {
			at := e["trigger"].(map[string]any)["at"].(string)
			assert.Regexp(t, millis, at)
		}
		from := all[0].Trigger.At.Add(time.Millisecond).Format(time.RFC3339Nano)
		var none []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?from="+from, nil, true, &none)
		assert.Empty(t, none)
		code, _ = s.request("GET", "/api/v1/audit_logs?limit=5000", nil, true, nil)
		assert.Equal(t, 400, code)
	})

	t.Run("Temporal unreachable answers 503 with Retry-After", func(t *testing.T) {
		dead := freePort(t)
		port := freePort(t)
		cmd := exec.Command(intakeBin, "serve", "--roles", "receiver",
			"--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--temporal-addr", fmt.Sprintf("127.0.0.1:%d", dead),
			"--mongodb-uri", "mongodb://"+s.addr("mongodb")+"/", "--admin-token", "t")
		// The dev process's key, so this process can read the secrets it wrote.
		key, err := os.ReadFile(filepath.Join(s.dir, ".intake", "secret-key"))
		require.NoError(t, err)
		cmd.Env = append(os.Environ(), "INTAKE_SECRET_KEY="+strings.TrimSpace(string(key)))
		require.NoError(t, cmd.Start())
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		other := &stack{t: t, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
		require.Eventually(t, func() bool {
			resp, err := http.Get(other.base + "/healthz")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil
		}, 30*time.Second, 100*time.Millisecond)
		sec := exampleSecurity(t, "github_repos")
		body := []byte(`{"action":"created","repository":{"full_name":"a/b"}}`)
		code, out := other.post("github_repos", body, sign(sec, body, nil))
		assert.Equal(t, 503, code)
		assert.Equal(t, "temporal_unavailable", out["error"])
		resp, err := http.Get(other.base + "/readyz")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 503, resp.StatusCode)

		// A write served by another process is live here within 2 s, without a restart.
		code, _ = other.post("late_hook", []byte(`{"id":"x"}`), nil)
		require.Equal(t, 404, code)
		putIntegration(t, s, `{"identifier":"late_hook","security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)
		// Each process polls the config version every second; 3 s leaves room for a busy machine.
		require.Eventually(t, func() bool {
			code, _ := other.post("late_hook", []byte(`{"id":"x"}`), nil)
			return code == 503 // known now; Temporal is still unreachable from this process
		}, 3*time.Second, 50*time.Millisecond)
	})

	t.Run("data survives kill -9 and a restart", func(t *testing.T) {
		s.kill()
		s.start()
		var e intake.Entity
		code, _ := s.request("GET", "/api/v1/entities/github_repository/octo-org_care_back", nil, true, &e)
		require.Equal(t, 200, code)
		assert.Equal(t, "care_back", e.Title)
		var tpls []intake.Template
		s.request("GET", "/api/v1/templates", nil, true, &tpls)
		assert.Len(t, tpls, 8, "examples are not loaded twice; the squad and wide templates are kept")
		// The old workflows are still visible, and new deliveries work.
		_, err := s.waitWorkflow("ingest.github_keyed.dup-delivery-1")
		require.NoError(t, err)
		code, out := s.post("groups_merge", []byte(`{"id":"after-restart","name":"r"}`), nil)
		require.Equal(t, 202, code)
		res, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
		assert.Equal(t, intake.OutcomeCreated, res.Entities[0].Outcome)
	})
}

func putIntegration(t testing.TB, s *stack, doc string) {
	t.Helper()
	var in intake.Integration
	require.NoError(t, json.Unmarshal([]byte(doc), &in))
	var out map[string]any
	code, _ := s.request("PUT", "/api/v1/integrations/"+in.Identifier, []byte(doc), true, &out)
	require.Contains(t, []int{200, 201}, code, "%v", out)
}

// runSample posts one example delivery, checks what it must produce and returns its workflow ID.
func runSample(t *testing.T, s *stack, smp examples.Sample, sec *intake.Security) string {
	code, out := s.post(smp.Integration, smp.Body, sign(sec, smp.Body, smp.Headers))
	require.Equal(t, http.StatusAccepted, code, "%v", out)
	res, err := s.waitWorkflow(out["workflow_id"].(string))
	switch smp.Expect.Outcome {
	case intake.DeliveryFailed:
		require.Error(t, err)
	default:
		require.NoError(t, err)
		assert.Equal(t, smp.Expect.Outcome, res.Outcome)
	}
	expectEntities(t, s, smp.Expect, smp.Integration)
	var entries []intake.AuditEntry
	s.request("GET", "/api/v1/audit_logs?integration="+smp.Integration, nil, true, &entries)
	var mine []intake.AuditEntry
	for _, e := range entries {
		if e.WorkflowID == out["workflow_id"] {
			mine = append(mine, e)
		}
	}
	require.Len(t, mine, len(smp.Expect.Audit))
	for i, want := range smp.Expect.Audit {
		got := mine[i]
		assert.Equal(t, want.Action, got.Action)
		assert.Equal(t, want.Status, got.Status)
		assert.Equal(t, want.EntityTemplate, got.Context.EntityTemplate)
		assert.Equal(t, want.Entity, got.Context.Entity)
		assert.Equal(t, "entity", got.ResourceType)
		assert.Equal(t, smp.Integration, got.Trigger.By.IntegrationID)
		assert.Equal(t, intake.OriginWebhook, got.Trigger.Origin)
		assert.Equal(t, out["delivery_id"], got.DeliveryID)
		if want.Message != "" {
			assert.Equal(t, want.Message, got.Message)
		}
		if want.Details != nil {
			assert.Equal(t, want.Details, got.Details)
		}
	}
	return out["workflow_id"].(string)
}
