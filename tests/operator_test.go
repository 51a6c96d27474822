package tests

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
)

// The operator's toolbox on one stack: signature schemes, dry runs, the CLI and /metrics.
func TestOperatorToolbox(t *testing.T) {
	s := startDev(t)

	t.Run("every signature scheme: valid, wrong, rotated, stale, missing", func(t *testing.T) {
		key := []byte("standard-key-0123456789")
		next := []byte("rotated-key-9876543210")
		whsec := func(k []byte) string { return "whsec_" + base64.StdEncoding.EncodeToString(k) }
		putIntegration(t, s, `{"identifier":"svix_hook","security":{"scheme":"standard-webhooks","signature_value":"`+whsec(key)+`","secrets":["`+whsec(next)+`"]},
		  "mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)
		body := []byte(`{"id":"sw-1"}`)
		swHeaders := func(k []byte, at time.Time, id string) map[string]string {
			ts := strconv.FormatInt(at.Unix(), 10)
			m := hmac.New(sha256.New, k)
			m.Write([]byte(id + "." + ts + "." + string(body)))
			return map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))}
		}
		code, _ := s.post("svix_hook", body, swHeaders(key, time.Now(), "msg_1"))
		assert.Equal(t, 202, code, "valid")
		code, _ = s.post("svix_hook", body, swHeaders(next, time.Now(), "msg_2"))
		assert.Equal(t, 202, code, "rotated secret")
		code, out := s.post("svix_hook", body, swHeaders([]byte("wrong"), time.Now(), "msg_3"))
		assert.Equal(t, 401, code)
		assert.Equal(t, "signature mismatch", out["message"])
		code, out = s.post("svix_hook", body, swHeaders(key, time.Now().Add(-10*time.Minute), "msg_4"))
		assert.Equal(t, 401, code)
		assert.Equal(t, "signature timestamp outside tolerance", out["message"])
		h := swHeaders(key, time.Now(), "msg_5")
		delete(h, "webhook-signature")
		code, out = s.post("svix_hook", body, h)
		assert.Equal(t, 401, code)
		assert.Equal(t, "signature header webhook-signature missing", out["message"])

		putIntegration(t, s, `{"identifier":"basic_hook","security":{"scheme":"basic","signature_value":"ci:first","secrets":["ci:second"]},
		  "mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)
		basic := func(cred string) map[string]string {
			return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(cred))}
		}
		code, out = s.post("basic_hook", []byte(`{"id":"b-1"}`), basic("ci:first"))
		assert.Equal(t, 202, code)
		res, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err, "the workflow trusts the receiver's verdict on a redacted credential")
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
		assert.NotContains(t, s.history(out["workflow_id"].(string)), base64.StdEncoding.EncodeToString([]byte("ci:first")))
		code, _ = s.post("basic_hook", []byte(`{"id":"b-2"}`), basic("ci:second"))
		assert.Equal(t, 202, code, "rotated")
		code, _ = s.post("basic_hook", []byte(`{"id":"b-3"}`), basic("ci:third"))
		assert.Equal(t, 401, code)
		code, _ = s.post("basic_hook", []byte(`{"id":"b-4"}`), nil)
		assert.Equal(t, 401, code)

		var e map[string]any
		code, _ = s.request("PUT", "/api/v1/integrations/bad_scheme", []byte(`{"security":{"scheme":"md5","signature_header_name":"X","signature_value":"k"},"mappings":[{"template":"users","entity":{"identifier":".id"}}]}`), true, &e)
		assert.Equal(t, 400, code)
		assert.Contains(t, e["message"], "security.scheme")
	})

	t.Run("dry runs show entities, filters and errors and write nothing", func(t *testing.T) {
		var ans struct {
			Valid    bool
			Mappings []intake.MappingOutcome
			Entities []intake.EntityChange
		}
		code, _ := s.request("POST", "/api/v1/integrations/sonar_webhook/test", map[string]any{
			"body": map[string]any{"key": "dry", "name": "Dry", "visibility": "private", "lastAnalysisDate": "2025-11-02T06:03:25+0000",
				"measures": []any{map[string]any{"metric": "ncloc", "value": "10"}}, "components": []any{map[string]any{"name": "nowhere"}}},
		}, true, &ans)
		require.Equal(t, 200, code)
		assert.False(t, ans.Valid)
		require.Len(t, ans.Entities, 1)
		assert.Equal(t, "dry", ans.Entities[0].Identifier)
		assert.Equal(t, intake.ErrRelationMissing, ans.Entities[0].ErrorType)
		assert.Equal(t, "Relation 'nowhere' does not exist", ans.Entities[0].Message)
		assert.Equal(t, map[string]any{"relation": "github_repository", "target_template": "github_repository"}, ans.Entities[0].Details)

		ans.Entities = nil
		code, _ = s.request("POST", "/api/v1/integrations/sonar_webhook/test", map[string]any{"body": map[string]any{"key": "pub", "visibility": "public"}}, true, &ans)
		require.Equal(t, 200, code)
		assert.True(t, ans.Mappings[0].Filtered)
		assert.Empty(t, ans.Entities)

		ans.Entities = nil
		code, _ = s.request("POST", "/api/v1/integrations/test", map[string]any{
			"integration": map[string]any{"mappings": []any{map[string]any{"template": "github_repository", "entity": map[string]any{
				"identifier": ".n", "properties": map[string]any{"name": ".n", "url": ".u", "stars": ".s"}}}}},
			"body": map[string]any{"n": "unsaved", "u": "https://x.io/u", "s": -1},
		}, true, &ans)
		require.Equal(t, 200, code)
		assert.False(t, ans.Valid)
		assert.Equal(t, intake.ErrValidation, ans.Entities[0].ErrorType)
		assert.Contains(t, ans.Entities[0].Message, "property 'stars': -1 is less than minimum 0")

		var bad map[string]any
		code, _ = s.request("POST", "/api/v1/integrations/test", map[string]any{
			"integration": map[string]any{"mappings": []any{map[string]any{"template": "users", "entity": map[string]any{"identifier": ".a |"}}}},
			"body":        map[string]any{}}, true, &bad)
		assert.Equal(t, 400, code)
		assert.Contains(t, bad["message"], "mappings[0].entity.identifier")

		// The outcome is the one the workflow would reach: b-1 was delivered above.
		for id, want := range map[string]string{"b-1": intake.OutcomeUnchanged, "b-new": intake.OutcomeCreated} {
			code, _ = s.request("POST", "/api/v1/integrations/basic_hook/test", map[string]any{"body": map[string]any{"id": id}}, true, &ans)
			require.Equal(t, 200, code)
			require.True(t, ans.Valid)
			assert.Equal(t, want, ans.Entities[0].Outcome, id)
		}
		code, _ = s.request("GET", "/api/v1/entities/team/b-new", nil, true, nil)
		assert.Equal(t, 404, code, "a dry run writes nothing")

		code, _ = s.request("GET", "/api/v1/entities/sonar_project/dry", nil, true, nil)
		assert.Equal(t, 404, code, "a dry run writes nothing")
		code, _ = s.request("GET", "/api/v1/entities/github_repository/unsaved", nil, true, nil)
		assert.Equal(t, 404, code)
	})

	t.Run("intake apply is idempotent; test-mapping and replay from the shell", func(t *testing.T) {
		dir := t.TempDir()
		write := func(name, text string) {
			require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600))
		}
		write("a-service.yaml", `kind: integration
identifier: services
security: {scheme: none, allow_unsigned: true}
mappings:
  - template: service
    entity:
      identifier: .name
      properties: {tier: .tier}
      relations: {team: .team}
`)
		write("b-templates.yaml", `identifier: service
title: Service
schema:
  properties:
    tier: {type: integer, minimum: 1, maximum: 3}
relations:
  team: {target: squad, required: false, many: false}
---
identifier: squad
title: Squad
schema:
  properties:
    name: {type: string}
`)
		write("c-squad-integration.json", `[{"identifier":"squads_cli","security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"squad","entity":{"identifier":".id"}}]}]`)
		cli := func(args ...string) (string, error) {
			cmd := exec.Command(intakeBin, args...)
			cmd.Env = append(os.Environ(), "INTAKE_SERVER="+s.base, "INTAKE_ADMIN_TOKEN="+s.token)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := cli("apply", "-f", dir)
		require.NoError(t, err, out)
		assert.Equal(t, "template/squad created\ntemplate/service created\nintegration/services created\nintegration/squads_cli created\n", out,
			"templates first, relation targets before the templates that point to them")
		out, err = cli("apply", "-f", dir)
		require.NoError(t, err, out)
		assert.Equal(t, "template/service unchanged\ntemplate/squad unchanged\nintegration/services unchanged\nintegration/squads_cli unchanged\n", out)

		payload := filepath.Join(dir, "payload.json")
		require.NoError(t, os.WriteFile(payload, []byte(`{"name":"checkout","tier":2,"team":"payments"}`), 0o600))
		out, err = cli("test-mapping", "--integration", "services", "--payload", payload)
		require.Error(t, err, "team payments does not exist yet")
		assert.Contains(t, out, `"message": "Relation 'payments' does not exist"`)
		assert.Contains(t, out, `"target_template": "squad"`)

		code, resp := s.post("services", []byte(`{"name":"checkout","tier":2,"team":"payments"}`), nil)
		require.Equal(t, 202, code)
		_, err = s.waitWorkflow(resp["workflow_id"].(string))
		require.Error(t, err)
		out, err = cli("replay", resp["delivery_id"].(string), "--wait")
		require.Error(t, err, "a replay that fails again exits non-zero: %s", out)
		assert.Contains(t, out, resp["delivery_id"].(string)+" failed")
		code, resp2 := s.post("squads_cli", []byte(`{"id":"payments"}`), nil)
		require.Equal(t, 202, code)
		_, err = s.waitWorkflow(resp2["workflow_id"].(string))
		require.NoError(t, err)
		out, err = cli("test-mapping", "--integration", "services", "--payload", payload)
		require.NoError(t, err, out)
		out, err = cli("replay", resp["delivery_id"].(string), "--wait")
		require.NoError(t, err, out)
		assert.Contains(t, out, resp["delivery_id"].(string)+" succeeded")

		out, err = cli("apply", "-f", filepath.Join(dir, "missing.yaml"))
		require.Error(t, err)
		assert.Contains(t, out, "missing.yaml")
	})

	t.Run("metrics", func(t *testing.T) {
		resp, err := http.Get(s.base + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		text := string(raw)
		for _, want := range []string{
			`intake_deliveries_total{integration="svix_hook",origin="WEBHOOK",outcome="succeeded"} 2`,
			`intake_deliveries_total{integration="services",origin="REPLAY",outcome="succeeded"} 1`,
			`intake_signature_failures_total{integration="svix_hook"} 3`,
			`intake_accept_latency_seconds_count{integration="basic_hook"} 2`,
			`intake_deliveries_accepted_total{duplicate="false",integration="basic_hook",origin="WEBHOOK"} 2`,
		} {
			assert.Contains(t, text, want)
		}
	})
}
