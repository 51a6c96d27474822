package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	"github.com/pb33f/libopenapi-validator/paths"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/yaml"
)

// conformance is a proxy in front of `intake dev` that checks every request and answer passing
// through it against the OpenAPI description the server itself serves, and notes which
// operations were exercised.
type conformance struct {
	t        *testing.T
	target   string
	model    *v3.Document
	v        validator.Validator
	mu       sync.Mutex
	covered  map[string]bool
	problems []string
}

func newConformance(t *testing.T, s *stack) (*conformance, string) {
	resp, err := http.Get(s.base + "/api/v1/openapi.json")
	require.NoError(t, err)
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode, "the description is open: no token")
	doc, err := libopenapi.NewDocument(raw)
	require.NoError(t, err)
	model, err := doc.BuildV3Model()
	require.NoError(t, err)
	v, errs := validator.NewValidator(doc)
	require.Empty(t, errs)
	c := &conformance{t: t, target: s.base, model: &model.Model, v: v, covered: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(c.serve))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

func (c *conformance) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	out, err := http.NewRequest(r.Method, c.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	answer, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
	c.check(r, body, resp, answer)
}

// check validates one exchange. An answer below 400 needs a valid request too; an error answer
// may be the reply to a request that is wrong on purpose, so only the answer is checked then.
func (c *conformance) check(r *http.Request, body []byte, resp *http.Response, answer []byte) {
	req, _ := http.NewRequest(r.Method, c.target+r.URL.RequestURI(), bytes.NewReader(body))
	req.Header = r.Header.Clone()
	resp.Body = io.NopCloser(bytes.NewReader(answer))
	var errs []string
	note := func(ok bool, verrs []*verrors.ValidationError) {
		if !ok {
			for _, e := range verrs {
				errs = append(errs, e.Error())
			}
		}
	}
	if resp.StatusCode < 400 {
		ok, verrs := c.v.ValidateHttpRequest(req)
		note(ok, verrs)
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	ok, verrs := c.v.ValidateHttpResponse(req, resp)
	note(ok, verrs)
	_, _, template := paths.FindPath(req, c.model, nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	if template != "" {
		c.covered[r.Method+" "+template] = true
	}
	for _, e := range errs {
		c.problems = append(c.problems, fmt.Sprintf("%s %s → %d: %s\n  answer: %s", r.Method, r.URL.RequestURI(), resp.StatusCode, e, tail(string(answer), 600)))
	}
}

// verify reports every exchange that did not conform, and operations never exercised.
func (c *conformance) verify(t *testing.T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.problems {
		t.Error(p)
	}
	var missing []string
	for pair := c.model.Paths.PathItems.First(); pair != nil; pair = pair.Next() {
		for op := pair.Value().GetOperations().First(); op != nil; op = op.Next() {
			key := strings.ToUpper(op.Key()) + " " + pair.Key()
			if !c.covered[key] {
				missing = append(missing, key)
			}
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "every described operation is exercised")
}

// The admin surface on one `intake dev`: every endpoint's answers validate against the served
// OpenAPI description, and the command line (get, delete, apply, replay, completion, -h), whose
// traffic goes through the same validating proxy.
func TestAdminSurface(t *testing.T) {
	s := startDev(t)
	c, proxy := newConformance(t, s)
	api := &stack{t: t, base: proxy, token: s.token}
	cli := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(intakeBin, args...)
		cmd.Env = append(os.Environ(), "INTAKE_SERVER="+proxy, "INTAKE_ADMIN_TOKEN="+s.token)
		cmd.Stdin = strings.NewReader(stdin)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if err != nil {
			return out.String() + errOut.String(), err
		}
		return out.String(), nil
	}
	// apiJSON is what the API answers, to compare the CLI's -o json with.
	apiJSON := func(path string) string {
		req, err := http.NewRequest(http.MethodGet, proxy+path, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+s.token)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		require.Equal(t, 200, resp.StatusCode, "%s: %s", path, raw)
		return string(raw)
	}

	set := `kind: template
identifier: cli_squad
title: Squad
schema:
  properties:
    name: {type: string}
---
identifier: cli_service
title: Service
schema:
  properties:
    tier: {type: integer, minimum: 1, maximum: 3}
relations:
  team: {target: cli_squad, required: false, many: false}
---
identifier: cli_services
security: {scheme: none, allow_unsigned: true}
mappings:
  - template: cli_service
    entity:
      identifier: .name
      title: .name
      properties: {tier: .tier}
      relations: {team: .team}
`
	var failedID string

	t.Run("apply -f - reads standard input; --dry-run validates the set and writes nothing", func(t *testing.T) {
		out, err := cli(set, "apply", "-f", "-", "--dry-run")
		require.NoError(t, err, out)
		assert.Equal(t, "template/cli_squad created (dry run)\ntemplate/cli_service created (dry run)\nintegration/cli_services created (dry run)\n", out,
			"a new integration may use a new template of the same set")
		code, _ := api.request("GET", "/api/v1/templates/cli_squad", nil, true, nil)
		assert.Equal(t, 404, code, "a dry run writes nothing")

		bad := strings.Replace(set, "identifier: .name", "identifier: .name |", 1)
		out, err = cli(bad, "apply", "-f", "-", "--dry-run")
		require.Error(t, err)
		assert.Contains(t, out, "integrations/cli_services.mappings[0].entity.identifier")
		assert.Contains(t, out, "integrations/cli_services is in standard input")
		out, err = cli(bad, "apply", "-f", "-")
		require.Error(t, err, out)
		code, _ = api.request("GET", "/api/v1/templates/cli_squad", nil, true, nil)
		assert.Equal(t, 404, code, "an invalid set writes nothing, not even its valid templates")

		out, err = cli(set, "apply", "-f", "-")
		require.NoError(t, err, out)
		assert.Equal(t, "template/cli_squad created\ntemplate/cli_service created\nintegration/cli_services created\n", out)
		out, err = cli(set, "apply", "-f", "-", "--dry-run")
		require.NoError(t, err, out)
		assert.Equal(t, "template/cli_squad unchanged (dry run)\ntemplate/cli_service unchanged (dry run)\nintegration/cli_services unchanged (dry run)\n", out)

		jsonSet := `[{"identifier":"cli_squads","security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"cli_squad","entity":{"identifier":".id"}}]}]`
		out, err = cli(jsonSet, "apply", "-f", "-")
		require.NoError(t, err, out)
		assert.Equal(t, "integration/cli_squads created\n", out, "JSON on standard input too")
	})

	t.Run("PUT ?dry_run=true answers what the write would do and writes nothing", func(t *testing.T) {
		tpl := map[string]any{"schema": map[string]any{"properties": map[string]any{"n": map[string]any{"type": "string"}}}}
		code, h := api.request("PUT", "/api/v1/templates/cli_dry?dry_run=true", tpl, true, nil)
		assert.Equal(t, 201, code)
		assert.Equal(t, "created", h.Get("X-Intake-Result"))
		assert.Equal(t, "true", h.Get("X-Intake-Dry-Run"))
		code, _ = api.request("GET", "/api/v1/templates/cli_dry", nil, true, nil)
		assert.Equal(t, 404, code)
		in := map[string]any{"security": map[string]any{"scheme": "none", "allow_unsigned": true, "signature_value": "s3cret"},
			"mappings": []any{map[string]any{"template": "cli_squad", "entity": map[string]any{"identifier": ".id"}}}}
		var ans map[string]any
		code, h = api.request("PUT", "/api/v1/integrations/cli_squads?dry_run=true", in, true, &ans)
		assert.Equal(t, 200, code)
		assert.Equal(t, "updated", h.Get("X-Intake-Result"))
		assert.Equal(t, "********", ans["security"].(map[string]any)["signature_value"], "a dry run's answer masks secrets too")
		var stored map[string]any
		api.request("GET", "/api/v1/integrations/cli_squads", nil, true, &stored)
		assert.NotContains(t, stored["security"], "signature_value", "not written")
		code, _ = api.request("PUT", "/api/v1/templates/cli_dry?dry_run=maybe", tpl, true, nil)
		assert.Equal(t, 400, code)
	})

	t.Run("the webhook, its paths and its errors", func(t *testing.T) {
		for i, name := range []string{"checkout", "billing", "search", "ledger"} {
			code, out := api.post("cli_squads", []byte(fmt.Sprintf(`{"id":"squad-%d"}`, i)), nil)
			require.Equal(t, 202, code, out)
			_, err := s.waitWorkflow(out["workflow_id"].(string))
			require.NoError(t, err)
			code, out = api.post("cli_services", []byte(fmt.Sprintf(`{"name":%q,"tier":2,"team":"squad-%d"}`, name, i)), nil)
			require.Equal(t, 202, code, out)
			_, err = s.waitWorkflow(out["workflow_id"].(string))
			require.NoError(t, err)
		}
		code, out := api.post("cli_services/extra", []byte(`{"name":"orphan","tier":1,"team":"nobody"}`), nil)
		require.Equal(t, 202, code, "what follows the integration is $meta.path")
		failedID = out["delivery_id"].(string)
		_, err := s.waitWorkflow(out["workflow_id"].(string))
		require.Error(t, err, "team nobody does not exist")

		code, _ = api.post("cli_services", []byte(`{not json`), nil)
		assert.Equal(t, 400, code)
		code, _ = api.post("nowhere", []byte(`{}`), nil)
		assert.Equal(t, 404, code)
		code, _ = api.post("github_repos", []byte(`{}`), map[string]string{"X-Hub-Signature-256": "sha256=00"})
		assert.Equal(t, 401, code)
	})

	t.Run("every admin endpoint answers as described", func(t *testing.T) {
		var list []map[string]any
		for _, path := range []string{"/api/v1/templates", "/api/v1/integrations", "/api/v1/entities?limit=2",
			"/api/v1/audit_logs?limit=5", "/api/v1/deliveries?limit=3", "/api/v1/deliveries?origin=WEBHOOK&limit=3",
			"/api/v1/deliveries/counts", "/api/v1/audit_logs?delivery_id=" + url.QueryEscape(failedID), "/api/v1/templates/cli_service",
			"/api/v1/integrations/github_repos", "/api/v1/entities/cli_service/checkout"} {
			code, _ := api.request("GET", path, nil, true, nil)
			assert.Equal(t, 200, code, path)
		}
		code, _ := api.request("GET", "/api/v1/audit_logs?limit=1&integration=cli_services", nil, true, &list)
		require.Equal(t, 200, code)
		require.Len(t, list, 1)
		code, _ = api.request("GET", "/api/v1/audit_logs/"+url.PathEscape(list[0]["id"].(string)), nil, true, nil)
		assert.Equal(t, 200, code)
		code, _ = api.request("GET", "/api/v1/deliveries/"+failedID, nil, true, nil)
		assert.Equal(t, 200, code)
		for _, path := range []string{"/api/v1/templates/nope", "/api/v1/integrations/nope", "/api/v1/entities/cli_service/nope",
			"/api/v1/audit_logs/nope", "/api/v1/deliveries/nope", "/api/v1/replays/bulk-replay.nope"} {
			code, _ = api.request("GET", path, nil, true, nil)
			assert.Equal(t, 404, code, path)
		}
		code, _ = api.request("GET", "/api/v1/templates", nil, false, nil)
		assert.Equal(t, 401, code)
		code, _ = api.request("GET", "/api/v1/deliveries?limit=5000", nil, true, nil)
		assert.Equal(t, 400, code)
		code, _ = api.request("GET", "/api/v1/audit_logs?cursor=made-up", nil, true, nil)
		assert.Equal(t, 400, code)
		code, _ = api.request("PUT", "/api/v1/integrations/bad_jq", []byte(`{"allow_unsigned":true,"mappings":[{"template":"cli_squad","entity":{"identifier":".a |"}}]}`), true, nil)
		assert.Equal(t, 400, code)
		code, _ = api.request("DELETE", "/api/v1/templates/cli_squad", nil, true, nil)
		assert.Equal(t, 409, code, "still used")

		code, _ = api.request("POST", "/api/v1/integrations/cli_services/test", map[string]any{"body": map[string]any{"name": "dry", "tier": 9}}, true, nil)
		assert.Equal(t, 200, code)
		code, _ = api.request("POST", "/api/v1/integrations/test", map[string]any{
			"integration": map[string]any{"mappings": []any{map[string]any{"template": "cli_squad", "entity": map[string]any{"identifier": ".id"}}}},
			"body":        map[string]any{"id": "x"}, "headers": map[string]string{"x-a": "1"}}, true, nil)
		assert.Equal(t, 200, code)
		code, _ = api.request("POST", "/api/v1/integrations/nope/test", map[string]any{"body": map[string]any{}}, true, nil)
		assert.Equal(t, 404, code)

		var replay map[string]any
		code, _ = api.request("POST", "/api/v1/deliveries/"+failedID+"/replay", nil, true, &replay)
		require.Equal(t, 202, code)
		_, err := s.waitWorkflow(replay["workflow_id"].(string))
		require.Error(t, err, "fails again: team nobody is still missing")
		var bulk map[string]any
		code, _ = api.request("POST", "/api/v1/deliveries/replay", map[string]any{"integration": "cli_squads", "status": "succeeded"}, true, &bulk)
		require.Equal(t, 202, code)
		id := bulk["replay_id"].(string)
		code, _ = api.request("GET", "/api/v1/replays/"+id, nil, true, nil)
		assert.Equal(t, 200, code)
		code, _ = api.request("POST", "/api/v1/replays/"+id+"/cancel", nil, true, nil)
		assert.Contains(t, []int{202, 404}, code, "202 while it runs; 404 once it finished")

		var res map[string]any
		code, _ = api.request("POST", "/api/v1/apply?dry_run=true", map[string]any{"templates": []any{
			map[string]any{"identifier": "cli_extra", "schema": map[string]any{"properties": map[string]any{}}}}}, true, &res)
		assert.Equal(t, 200, code)
		assert.Equal(t, true, res["dry_run"])

		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"} {
			code, _ = api.request("GET", path, nil, false, nil)
			assert.Equal(t, 200, code, path)
		}
	})

	t.Run("get: -o json is the API's JSON, -o yaml the same, -o table has its header", func(t *testing.T) {
		for _, row := range []struct {
			args   []string
			api    string
			header string
		}{
			{[]string{"get", "integrations"}, "/api/v1/integrations", "IDENTIFIER"},
			{[]string{"get", "templates"}, "/api/v1/templates", "IDENTIFIER"},
			{[]string{"get", "entities", "--template", "cli_service"}, "/api/v1/entities?template=cli_service", "TEMPLATE"},
			{[]string{"get", "deliveries", "--integration", "cli_services", "--status", "failed"}, "/api/v1/deliveries?integration=cli_services&status=failed", "ID"},
			{[]string{"get", "audit", "--integration", "cli_services", "--status", "FAILURE", "--entity-template", "cli_service", "--origin", "WEBHOOK", "--action", "CREATE"},
				"/api/v1/audit_logs?integration=cli_services&status=FAILURE&entity_template=cli_service&origin=WEBHOOK&action=CREATE", "AT"},
			{[]string{"get", "integration", "cli_services"}, "/api/v1/integrations/cli_services", "IDENTIFIER"},
			{[]string{"get", "template", "cli_squad"}, "/api/v1/templates/cli_squad", "IDENTIFIER"},
			{[]string{"get", "entity", "cli_service/checkout"}, "/api/v1/entities/cli_service/checkout", "TEMPLATE"},
			{[]string{"get", "entity", "billing", "--template", "cli_service"}, "/api/v1/entities/cli_service/billing", "TEMPLATE"},
			{[]string{"get", "delivery", failedID}, "/api/v1/deliveries/" + failedID, "ID"},
		} {
			name := strings.Join(row.args, " ")
			want := apiJSON(row.api)
			out, err := cli("", append(row.args, "-o", "json")...)
			require.NoError(t, err, out)
			assert.JSONEq(t, want, out, name)
			out, err = cli("", append(row.args, "-o", "yaml")...)
			require.NoError(t, err, out)
			asJSON, err := yaml.YAMLToJSON([]byte(out))
			require.NoError(t, err, name)
			assert.JSONEq(t, want, string(asJSON), name)
			out, err = cli("", row.args...)
			require.NoError(t, err, out)
			assert.Equal(t, row.header, strings.Fields(out)[0], "%s: the header row first\n%s", name, out)
			var items []any
			if json.Unmarshal([]byte(want), &items) != nil {
				items = []any{nil}
			}
			assert.Len(t, strings.Split(strings.TrimSpace(out), "\n"), 1+len(items), "%s: a header and a row per item\n%s", name, out)
		}

		out, err := cli("", "get", "audit", "--integration", "cli_services", "--limit", "1", "-o", "json")
		require.NoError(t, err, out)
		var one []map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &one))
		require.Len(t, one, 1)
		out, err = cli("", "get", "audit", one[0]["id"].(string), "-o", "json")
		require.NoError(t, err, out)
		assert.JSONEq(t, apiJSON("/api/v1/audit_logs/"+one[0]["id"].(string)), out)
		out, err = cli("", "get", "audit", "--from", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--to", time.Now().Add(time.Minute).UTC().Format(time.RFC3339), "-o", "json")
		require.NoError(t, err, out)
		assert.Contains(t, out, `"cli_services"`)
	})

	t.Run("get follows X-Next-Cursor to the last page, or stops at --limit", func(t *testing.T) {
		out, err := cli("", "get", "entities", "--template", "cli_service", "--chunk-size", "1", "-o", "json")
		require.NoError(t, err, out)
		var all []map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &all))
		assert.Len(t, all, 4, "four pages of one")
		assert.JSONEq(t, apiJSON("/api/v1/entities?template=cli_service"), out)
		out, err = cli("", "get", "entities", "--template", "cli_service", "--chunk-size", "2", "--limit", "3", "-o", "json")
		require.NoError(t, err, out)
		require.NoError(t, json.Unmarshal([]byte(out), &all))
		assert.Len(t, all, 3)
		out, err = cli("", "get", "deliveries", "-integration", "cli_squads", "-o", "json")
		require.NoError(t, err, "one-dash long flags of the first versions still work: %s", out)
		require.NoError(t, json.Unmarshal([]byte(out), &all))
		assert.Len(t, all, 4)
	})

	t.Run("an empty list: the header row alone, [] in JSON", func(t *testing.T) {
		for _, args := range [][]string{{"get", "entities", "--template", "no_such"}, {"get", "deliveries", "--integration", "no_such"}, {"get", "audit", "--integration", "no_such"}} {
			out, err := cli("", args...)
			require.NoError(t, err, out)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			assert.Len(t, lines, 1, out)
			assert.NotEmpty(t, strings.TrimSpace(lines[0]))
			out, err = cli("", append(args, "-o", "json")...)
			require.NoError(t, err, out)
			assert.Equal(t, "[]\n", out)
			out, err = cli("", append(args, "-o", "yaml")...)
			require.NoError(t, err, out)
			assert.Equal(t, "[]\n", out)
		}
	})

	t.Run("get and delete errors exit non-zero with the API's message", func(t *testing.T) {
		out, err := cli("", "get", "template", "nope")
		require.Error(t, err)
		assert.Contains(t, out, "404 not_found: template nope not found")
		out, err = cli("", "get", "entity", "no-template-given")
		require.Error(t, err)
		assert.Contains(t, out, "TEMPLATE/IDENTIFIER")
		out, err = cli("", "get", "templates", "-o", "xml")
		require.Error(t, err)
		assert.Contains(t, out, "table, json or yaml")

		out, err = cli("", "delete", "template", "cli_squad")
		require.Error(t, err, out)
		assert.Contains(t, out, "409 template_in_use")
		out, err = cli("", "delete", "integration", "cli_squads")
		require.NoError(t, err, out)
		assert.Equal(t, "integration/cli_squads deleted\n", out)
		out, err = cli("", "delete", "integration", "cli_squads")
		require.Error(t, err)
		assert.Contains(t, out, "404")
		out, err = cli("", "delete", "integration", "cli_services")
		require.NoError(t, err, out)
		out, err = cli("", "delete", "template", "cli_service")
		require.NoError(t, err, out)
		out, err = cli("", "delete", "templates", "cli_squad")
		require.NoError(t, err, out)
		assert.Equal(t, "template/cli_squad deleted\n", out)
	})

	t.Run("replay --wait exits non-zero when the replay fails again", func(t *testing.T) {
		out, err := cli("", "replay", failedID, "--wait")
		require.Error(t, err, out)
		assert.Contains(t, out, failedID+" failed")
	})

	t.Run("-h on every verb exits 0; completion for bash, zsh and fish", func(t *testing.T) {
		for _, verb := range []string{"", "dev", "serve", "get", "get integrations", "get templates", "get entities",
			"get deliveries", "get audit", "delete", "delete template", "delete integration", "apply", "replay",
			"test-mapping", "rotate-secrets", "completion", "completion bash", "help"} {
			args := append(strings.Fields(verb), "-h")
			out, err := cli("", args...)
			require.NoError(t, err, "intake %s -h: %s", verb, out)
			assert.Contains(t, out, "Usage:", verb)
		}
		for shell, want := range map[string]string{"bash": "__start_intake", "zsh": "#compdef intake", "fish": "complete -c intake"} {
			out, err := cli("", "completion", shell)
			require.NoError(t, err, out)
			assert.Contains(t, out, want, shell)
		}
		out, err := cli("", "__complete", "get", "templates", "")
		require.NoError(t, err, out)
		assert.Contains(t, out, "github_repository", "IDs complete from the API")
		out, err = cli("", "nonsense")
		require.Error(t, err)
		assert.Equal(t, 2, err.(*exec.ExitError).ExitCode(), out)
	})

	c.verify(t)
}
