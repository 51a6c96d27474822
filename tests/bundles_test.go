package tests

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/examples"
	"intake/examples/upstream"
)

// bundleUpstream is where the bundles' integrations fetch from (the stand-in's default address);
// tests point them at the stand-in they start.
const bundleUpstream = "http://127.0.0.1:8090"

// Every seed bundle (examples/0NN_*) end to end through the real binary, one row per sample, with
// a real local HTTP server playing each upstream API; then hydration's faults and guards.
func TestSeedBundles(t *testing.T) {
	up := upstream.New()
	api := httptest.NewServer(up)
	defer api.Close()
	s := startDev(t, "INTAKE_HYDRATION_ALLOW=127.0.0.1", "INTAKE_RECONCILE_EVERY=1s")

	bundles, err := examples.Bundles()
	require.NoError(t, err)
	require.Len(t, bundles, 4)
	for _, b := range bundles {
		t.Run(b.Name, func(t *testing.T) {
			applyBundle(t, s, b, api.URL)
			for _, smp := range b.Samples {
				t.Run(smp.Name, func(t *testing.T) { runBundleSample(t, s, up, b, smp) })
			}
		})
	}

	t.Run("hydration sends the integration's credential and fetches only the configured URL", func(t *testing.T) {
		var paths []string
		for _, r := range up.Requests() {
			if r.Method == http.MethodGet {
				paths = append(paths, r.Path)
			}
			if strings.HasPrefix(r.Path, "/users/") {
				assert.Equal(t, "Bearer identity-api-token", r.Authorization)
			}
			assert.NotContains(t, r.Path, "callback", "a callback URL inside a payload is never followed")
		}
		assert.Contains(t, paths, "/dataSource/3")
		assert.Contains(t, paths, "/project/1/datasources")
		assert.Contains(t, paths, "/orders/ord_1")
		assert.NotContains(t, paths, "/users/GROUP42", "no route matched: nothing fetched")
	})

	t.Run("credentials are masked in the API and absent from history and logs", func(t *testing.T) {
		var in intake.Integration
		s.request("GET", "/api/v1/integrations/identity_users", nil, true, &in)
		assert.Equal(t, intake.Masked, in.Credentials["api_token"])
		up.Set("/users/HIST1", []byte(`{"id":"HIST1","displayName":"History","email":"history@example.com"}`))
		body := []byte(`{"id":"HIST1","entityType":"USER","eventType":"UPDATE","timestamp":"2020-01-01T00:00:00Z"}`)
		code, out := postPath(t, s, "identity_users", "", body, hmacHeader("X-Signature", "identity-webhook-secret", body))
		require.Equal(t, 200, code, "%v", out)
		h := s.history(out["workflow_id"].(string))
		assert.NotContains(t, h, "identity-api-token")
		assert.Contains(t, h, "fetched_url", "the Hydrate step and its document are in the history")
		assert.NotContains(t, s.logs.String(), "identity-api-token")
		assert.NotContains(t, s.logs.String(), "shop-api-key-456")
	})

	t.Run("the fetched document is shown by the dry run", func(t *testing.T) {
		up.Set("/orders/ord_dry", []byte(`{"id":"ord_dry","number":7,"status":"paid"}`))
		var ans struct {
			Valid    bool
			Hydrated struct {
				Document json.RawMessage `json:"document"`
				ID       string          `json:"id"`
			}
			Entities []intake.EntityChange
		}
		code, _ := s.request("POST", "/api/v1/integrations/shop_orders/test",
			map[string]any{"body": map[string]any{"record_id": "ord_dry", "event": "ResourceUpdated"}}, true, &ans)
		require.Equal(t, 200, code)
		assert.True(t, ans.Valid)
		assert.Equal(t, "ord_dry", ans.Hydrated.ID)
		assert.JSONEq(t, `{"id":"ord_dry","number":7,"status":"paid"}`, string(ans.Hydrated.Document))
		require.Len(t, ans.Entities, 1)
		assert.Equal(t, intake.OutcomeCreated, ans.Entities[0].Outcome)
		code, _ = s.request("GET", "/api/v1/entities/shop_order/ord_dry", nil, true, nil)
		assert.Equal(t, 404, code, "a dry run writes nothing")
	})

	orders := func(t *testing.T, id string) (int, map[string]any, string) {
		body := []byte(`{"record_id":"` + id + `","event":"ResourceUpdated"}`)
		code, out := postPath(t, s, "shop_orders", "", body, map[string]string{"X-Account-Key": "acct-key-123"})
		return code, out, out["workflow_id"].(string)
	}

	t.Run("hydration: 5xx is retried with backoff until the upstream answers", func(t *testing.T) {
		up.Set("/orders/ord_5xx", []byte(`{"id":"ord_5xx","number":5,"status":"paid"}`))
		up.Fail("/orders/ord_5xx", http.StatusBadGateway)
		code, _, wid := orders(t, "ord_5xx")
		require.Equal(t, 202, code)
		require.Eventually(t, func() bool { return countGets(up, "/orders/ord_5xx") >= 2 }, 30*time.Second, 100*time.Millisecond)
		up.Fail("/orders/ord_5xx", 0)
		res, err := s.waitWorkflow(wid)
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
		code, _ = s.request("GET", "/api/v1/entities/shop_order/ord_5xx", nil, true, nil)
		assert.Equal(t, 200, code)
	})

	failedWith := func(t *testing.T, wid, contains string) {
		t.Helper()
		_, err := s.waitWorkflow(wid)
		require.Error(t, err)
		d := deliveryOnceFailed(t, s, wid, 10*time.Second)
		require.NotNil(t, d.Error)
		assert.Equal(t, intake.ErrHydration, d.Error.Type)
		assert.Contains(t, d.Error.Message, contains)
	}

	t.Run("hydration: 4xx fails the delivery at once, clearly", func(t *testing.T) {
		_, _, wid := orders(t, "ord_missing")
		failedWith(t, wid, "upstream answered 404")
		assert.Equal(t, 1, countGets(up, "/orders/ord_missing"), "a 4xx is not retried")
	})

	t.Run("hydration: an answer over the size cap fails the delivery", func(t *testing.T) {
		big := `{"id":"ord_big","number":1,"status":"paid","note":"` + strings.Repeat("x", 2<<20) + `"}`
		up.Set("/orders/ord_big", []byte(big))
		_, _, wid := orders(t, "ord_big")
		failedWith(t, wid, "limit")
	})

	t.Run("hydration: a slow upstream times out and is retried", func(t *testing.T) {
		putIntegration(t, s, `{"identifier":"slow_orders","security":{"scheme":"none","allow_unsigned":true},
		  "hydration":{"url":"`+api.URL+`/orders/{id}","id_path":"record_id","timeout":"300ms"},
		  "mappings":[{"template":"shop_order","entity":{"identifier":".id","properties":{"number":".number","status":".status"}}}]}`)
		up.Set("/orders/ord_slow", []byte(`{"id":"ord_slow","number":9,"status":"paid"}`))
		up.Delay("/orders/ord_slow", 2*time.Second)
		code, out := postPath(t, s, "slow_orders", "", []byte(`{"record_id":"ord_slow"}`), nil)
		require.Equal(t, 202, code)
		require.Eventually(t, func() bool { return countGets(up, "/orders/ord_slow") >= 2 }, 30*time.Second, 100*time.Millisecond,
			"a timed-out fetch is tried again")
		up.Delay("/orders/ord_slow", 0)
		res, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
	})

	t.Run("a delivery whose workflow closed without an outcome is repaired, never left accepted", func(t *testing.T) {
		up.Set("/orders/ord_orphan", []byte(`{"id":"ord_orphan","number":3,"status":"paid"}`))
		up.Fail("/orders/ord_orphan", http.StatusServiceUnavailable) // keeps the workflow retrying
		code, _, wid := orders(t, "ord_orphan")
		require.Equal(t, 202, code)
		require.Eventually(t, func() bool { return countGets(up, "/orders/ord_orphan") >= 1 }, 30*time.Second, 100*time.Millisecond)
		require.NoError(t, s.temporal.TerminateWorkflow(context.Background(), wid, "", "operator stopped it"))
		d := deliveryOnceFailed(t, s, wid, 30*time.Second)
		require.NotNil(t, d.Error)
		assert.Equal(t, "WorkflowClosed", d.Error.Type)
		assert.Contains(t, d.Error.Message, "Terminated")
		up.Fail("/orders/ord_orphan", 0)
	})

	t.Run("hydration: a redirect to a private address is refused", func(t *testing.T) {
		redirect := httptest.NewServer(http.RedirectHandler("http://169.254.169.254/latest/meta-data/", http.StatusFound))
		defer redirect.Close()
		putIntegration(t, s, `{"identifier":"redirected","security":{"scheme":"none","allow_unsigned":true},
		  "hydration":{"url":"`+redirect.URL+`/things/{id}"},
		  "mappings":[{"template":"shop_order","entity":{"identifier":".id","properties":{"number":".number","status":".status"}}}]}`)
		code, out := postPath(t, s, "redirected", "", []byte(`{"id":"x1"}`), nil)
		require.Equal(t, 202, code)
		failedWith(t, out["workflow_id"].(string), "169.254.169.254")
	})

	t.Run("the sync answer falls back to 202 when the wait runs out, and the work still finishes", func(t *testing.T) {
		up.Set("/users/SLOW1", []byte(`{"id":"SLOW1","displayName":"Slow","email":"slow@example.com"}`))
		up.Delay("/users/SLOW1", 6*time.Second)
		body := []byte(`{"id":"SLOW1","entityType":"USER","eventType":"UPDATE","timestamp":"2020-01-01T00:00:00Z"}`)
		start := time.Now()
		code, out := postPath(t, s, "identity_users", "", body, hmacHeader("X-Signature", "identity-webhook-secret", body))
		assert.Equal(t, 202, code, "%v", out)
		assert.Less(t, time.Since(start), 6*time.Second)
		res, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
	})

	t.Run("a webhook integration without security must say allow_unsigned", func(t *testing.T) {
		var e struct {
			Error   string
			Details []struct{ Field, Message string }
		}
		doc := `{"mappings":[{"template":"shop_order","entity":{"identifier":".id","properties":{"number":".n","status":".s"}}}]}`
		code, _ := s.request("PUT", "/api/v1/integrations/open_hook", []byte(doc), true, &e)
		require.Equal(t, 400, code)
		require.NotEmpty(t, e.Details)
		assert.Equal(t, "security", e.Details[0].Field)
		putIntegration(t, s, `{"identifier":"open_hook","allow_unsigned":true,`+doc[1:])
		code, out := postPath(t, s, "open_hook", "", []byte(`{"id":"o1","n":1,"s":"new"}`), nil)
		assert.Equal(t, 202, code, "%v", out)
	})

	t.Run("metrics show the end-to-end latency and the backlog", func(t *testing.T) {
		resp, err := http.Get(s.base + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		assert.Contains(t, string(raw), `intake_delivery_duration_seconds_count{integration="devlake",origin="WEBHOOK",outcome="succeeded"}`)
		assert.Contains(t, string(raw), `intake_deliveries_in_flight{integration="github_repos"} 0`)
	})

	t.Run("configuration the product cannot honour is a 400 naming the field", func(t *testing.T) {
		cases := map[string]struct{ doc, field string }{
			"unknown hydration field": {`{"hydration":{"url":"` + api.URL + `/x/{id}","callback":"yes"}}`, "hydration.callback"},
			"unknown route field":     {`{"hydration":{"routes":[{"when":"true","url":"` + api.URL + `/x/{id}","method":"POST"}]}}`, "hydration.routes[0].method"},
			"private literal address": {`{"hydration":{"url":"http://10.1.2.3/x/{id}"}}`, "hydration.url"},
			"metadata address":        {`{"hydration":{"url":"http://169.254.169.254/x/{id}"}}`, "hydration.url"},
			"id placed in the host":   {`{"hydration":{"url":"http://{id}.example.com/x"}}`, "hydration.url"},
			"unknown credential":      {`{"hydration":{"url":"` + api.URL + `/x/{id}","headers":{"Authorization":"secret:nope"}}}`, "hydration.headers.Authorization"},
			"bad event_map value":     {`{"hydration":{"url":"` + api.URL + `/x/{id}","event_path":".e","event_map":{"Gone":"purge"}}}`, "hydration.event_map.Gone"},
			"bad response mode":       {`{"response":{"mode":"later"}}`, "response.mode"},
		}
		for name, c := range cases {
			t.Run(name, func(t *testing.T) {
				doc := strings.TrimSuffix(c.doc, "}") + `,"security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"shop_order","entity":{"identifier":".id"}}]}`
				var e struct {
					Error   string
					Message string
					Details []struct{ Field, Message string }
				}
				code, _ := s.request("PUT", "/api/v1/integrations/bad_hydration", []byte(doc), true, &e)
				require.Equal(t, 400, code, e.Message)
				assert.Equal(t, "invalid_config", e.Error)
				var fields []string
				for _, d := range e.Details {
					fields = append(fields, d.Field)
				}
				assert.Contains(t, fields, c.field, e.Message)
			})
		}
	})
}

// applyBundle writes a bundle's templates, then its integrations, pointed at the stand-in.
func applyBundle(t *testing.T, s *stack, b examples.Bundle, upstreamURL string) {
	t.Helper()
	for _, tpl := range b.Templates {
		code, _ := s.request("PUT", "/api/v1/templates/"+tpl.Identifier, tpl, true, nil)
		require.Contains(t, []int{200, 201}, code, "template %s", tpl.Identifier)
	}
	for _, in := range b.Integrations {
		raw, err := json.Marshal(in)
		require.NoError(t, err)
		raw = bytes.ReplaceAll(raw, []byte(bundleUpstream), []byte(upstreamURL))
		var out map[string]any
		code, _ := s.request("PUT", "/api/v1/integrations/"+in.Identifier, raw, true, &out)
		require.Contains(t, []int{200, 201}, code, "integration %s: %v", in.Identifier, out)
	}
}

// runBundleSample sets the upstream's answers, posts the sample the way its sender would
// (signed, on its path) and checks the answer, the entities and the audit entries.
func runBundleSample(t *testing.T, s *stack, up *upstream.Server, b examples.Bundle, smp examples.Sample) {
	for path, doc := range smp.Upstream {
		up.Set(path, doc)
	}
	var sec *intake.Security
	for _, in := range b.Integrations {
		if in.Identifier == smp.Integration {
			sec = in.Security
		}
	}
	body := []byte(smp.Body)
	if string(body) == "null" {
		body = nil // an empty body (allow_empty_body)
	}
	code, out := postPath(t, s, smp.Integration, smp.Path, body, senderHeaders(sec, body, smp.Headers))
	want := smp.Expect.HTTPStatus
	if want == 0 {
		want = http.StatusAccepted
	}
	require.Equal(t, want, code, "%v", out)
	wid, _ := out["workflow_id"].(string)
	if code == http.StatusUnprocessableEntity {
		assert.Equal(t, "delivery_failed", out["error"])
		details, _ := out["details"].(map[string]any)
		wid, _ = details["workflow_id"].(string)
	}
	if smp.Expect.Message != "" {
		assert.Contains(t, out["message"], smp.Expect.Message)
	}
	require.NotEmpty(t, wid, "%v", out)
	res, err := s.waitWorkflow(wid)
	if smp.Expect.Outcome == intake.DeliveryFailed {
		require.Error(t, err)
	} else {
		require.NoError(t, err)
		assert.Equal(t, smp.Expect.Outcome, res.Outcome)
	}
	if code == http.StatusOK {
		assert.Equal(t, smp.Expect.Outcome, out["outcome"], "the sync answer carries the outcome")
		assert.Len(t, out["entities"], len(smp.Expect.Entities), "the sync answer carries the resulting entities")
	}
	expectEntities(t, s, smp.Expect, "")
	var entries []intake.AuditEntry
	require.Eventually(t, func() bool {
		entries = nil
		var all []intake.AuditEntry
		s.request("GET", "/api/v1/audit_logs?limit=1000&integration="+smp.Integration, nil, true, &all)
		for _, e := range all {
			if e.WorkflowID == wid {
				entries = append(entries, e)
			}
		}
		return len(entries) >= len(smp.Expect.Audit)
	}, 10*time.Second, 100*time.Millisecond)
	var wantAudit, gotAudit []string
	for _, a := range smp.Expect.Audit {
		rt := a.ResourceType
		if rt == "" {
			rt = "entity"
		}
		wantAudit = append(wantAudit, strings.Join([]string{rt, a.Action, a.Status, a.EntityTemplate, a.Entity}, " "))
	}
	for _, e := range entries {
		gotAudit = append(gotAudit, strings.Join([]string{e.ResourceType, e.Action, e.Status, e.Context.EntityTemplate, e.Context.Entity}, " "))
		assert.Equal(t, smp.Integration, e.Trigger.By.IntegrationID)
		for _, a := range smp.Expect.Audit {
			if a.Message != "" && a.Entity == e.Context.Entity {
				assert.Equal(t, a.Message, e.Message)
			}
		}
	}
	assert.ElementsMatch(t, wantAudit, gotAudit)
}

// senderHeaders authenticates a body the way the integration's sender does.
func senderHeaders(sec *intake.Security, body []byte, extra map[string]string) map[string]string {
	h := map[string]string{}
	for k, v := range extra {
		h[k] = v
	}
	if sec == nil {
		return h
	}
	switch sec.Scheme {
	case "none":
	case "static":
		h[sec.SignatureHeaderName] = sec.SignatureValue
	case "basic":
		h["Authorization"] = "Basic " + base64.StdEncoding.EncodeToString([]byte(sec.SignatureValue))
	default:
		return sign(sec, body, h)
	}
	return h
}

func hmacHeader(name, key string, body []byte) map[string]string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	return map[string]string{name: hex.EncodeToString(m.Sum(nil))}
}

// postPath posts to /webhooks/{integration}[/{path}] and decodes the JSON answer.
func postPath(t *testing.T, s *stack, integration, path string, body []byte, headers map[string]string) (int, map[string]any) {
	t.Helper()
	u := s.base + "/webhooks/" + integration
	if path != "" {
		u += "/" + path
	}
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(body))
	require.NoError(t, err)
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	require.NoError(t, json.Unmarshal(raw, &out), "answer %d: %s", resp.StatusCode, raw)
	return resp.StatusCode, out
}

func countGets(up *upstream.Server, path string) int {
	n := 0
	for _, r := range up.Requests() {
		if r.Method == http.MethodGet && r.Path == path {
			n++
		}
	}
	return n
}

// deliveryOnceFailed waits until the delivery of an ingest workflow is recorded as failed.
func deliveryOnceFailed(t *testing.T, s *stack, workflowID string, within time.Duration) intake.DeliveryRecord {
	t.Helper()
	var d intake.DeliveryRecord
	path := "/api/v1/deliveries/" + strings.TrimPrefix(workflowID, "ingest.")
	require.Eventually(t, func() bool {
		// The receiver writes the record a second after the accept (starters.RecordEvery): until
		// then, 404.
		if code, _ := s.request("GET", path, nil, true, nil); code != http.StatusOK {
			return false
		}
		s.request("GET", path, nil, true, &d)
		return d.Status == intake.DeliveryFailed
	}, within, 100*time.Millisecond)
	return d
}
