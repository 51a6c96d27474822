package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"intake"
)

// adminClient talks to the admin API for the CLI commands.
type adminClient struct {
	server string
	token  string
	http   *http.Client
}

// cliFlags parses the common and the command's flags; flags may come before or after the
// positional arguments (`intake replay ID --wait`), which it returns.
func cliFlags(name string, args []string, extra func(fs *flag.FlagSet)) (*adminClient, []string, error) {
	fs := flag.NewFlagSet("intake "+name, flag.ContinueOnError)
	c := &adminClient{http: &http.Client{Timeout: 60 * time.Second}}
	fs.StringVar(&c.server, "server", envOr("INTAKE_SERVER", "http://127.0.0.1:8080"), "admin API address ($INTAKE_SERVER)")
	fs.StringVar(&c.token, "token", envOr("INTAKE_ADMIN_TOKEN", ""), "admin token ($INTAKE_ADMIN_TOKEN; default: .intake/admin-token of this folder)")
	extra(fs)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if c.token == "" {
		if b, err := os.ReadFile(filepath.Join(envOr("INTAKE_DATA_DIR", ".intake"), "admin-token")); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
	}
	c.server = strings.TrimRight(c.server, "/")
	return c, positional, nil
}

// apiError is the admin API's error shape.
type apiError struct {
	Status  int
	Code    string `json:"error"`
	Message string `json:"message"`
	Details any    `json:"details"`
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message)
	if list, ok := e.Details.([]any); ok {
		for _, d := range list {
			if m, ok := d.(map[string]any); ok {
				msg += fmt.Sprintf("\n  %v: %v", m["field"], m["message"])
			}
		}
	}
	return msg
}

func (c *adminClient) do(ctx context.Context, method, path string, body any, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(raw, e) != nil {
			e.Message = string(raw)
		}
		return resp.Header, e
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// document is one template or integration read from a file.
type document struct {
	source string
	kind   string // "template" or "integration"
	id     string
	body   json.RawMessage
}

// readDocuments reads JSON or YAML files (a folder: every *.json, *.yaml, *.yml in it, sorted).
// A file may hold several documents: YAML separated by ---, or a JSON array. A document's kind is
// its "kind" field, else "template" when it has a schema and "integration" when it has mappings.
func readDocuments(path string) ([]document, error) {
	files := []string{path}
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if st.IsDir() {
		files = nil
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".json" || ext == ".yaml" || ext == ".yml") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
		sort.Strings(files)
	}
	var docs []document
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var parts [][]byte
		if filepath.Ext(f) == ".json" {
			trimmed := bytes.TrimSpace(raw)
			if len(trimmed) > 0 && trimmed[0] == '[' {
				var arr []json.RawMessage
				if err := json.Unmarshal(trimmed, &arr); err != nil {
					return nil, fmt.Errorf("%s: %w", f, err)
				}
				for _, a := range arr {
					parts = append(parts, a)
				}
			} else {
				parts = [][]byte{trimmed}
			}
		} else {
			for _, y := range splitYAML(raw) {
				j, err := yaml.YAMLToJSON(y)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", f, err)
				}
				parts = append(parts, j)
			}
		}
		for i, p := range parts {
			d, err := classify(p)
			if err != nil {
				return nil, fmt.Errorf("%s document %d: %w", f, i+1, err)
			}
			d.source = f
			docs = append(docs, d)
		}
	}
	return docs, nil
}

func splitYAML(raw []byte) [][]byte {
	var out [][]byte
	for _, part := range bytes.Split(append([]byte("\n"), raw...), []byte("\n---")) {
		if len(bytes.TrimSpace(part)) > 0 {
			out = append(out, part)
		}
	}
	return out
}

func classify(raw []byte) (document, error) {
	var head struct {
		Kind       string          `json:"kind"`
		Identifier string          `json:"identifier"`
		Schema     json.RawMessage `json:"schema"`
		Mappings   json.RawMessage `json:"mappings"`
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return document{}, fmt.Errorf("not a JSON object: %w", err)
	}
	_ = json.Unmarshal(raw, &head)
	delete(obj, "kind")
	body, _ := json.Marshal(obj)
	kind := strings.ToLower(head.Kind)
	switch {
	case kind != "":
	case head.Schema != nil:
		kind = "template"
	case head.Mappings != nil:
		kind = "integration"
	}
	if kind != "template" && kind != "integration" {
		return document{}, errors.New(`cannot tell a template from an integration: set "kind"`)
	}
	if !intake.IDPattern.MatchString(head.Identifier) {
		return document{}, fmt.Errorf("identifier %q must match %s", head.Identifier, intake.IDPattern)
	}
	return document{kind: kind, id: head.Identifier, body: body}, nil
}

// runApply writes templates (relation targets first) and then integrations; applying the same
// files twice changes nothing.
func runApply(ctx context.Context, args []string) error {
	var file string
	c, _, err := cliFlags("apply", args, func(fs *flag.FlagSet) {
		fs.StringVar(&file, "f", "", "file or folder of templates and integrations (JSON or YAML)")
	})
	if err != nil {
		return err
	}
	if file == "" {
		return errors.New("apply needs -f FILE|DIR")
	}
	docs, err := readDocuments(file)
	if err != nil {
		return err
	}
	var tpls, ints []document
	for _, d := range docs {
		if d.kind == "template" {
			tpls = append(tpls, d)
		} else {
			ints = append(ints, d)
		}
	}
	put := func(d document) error {
		h, err := c.do(ctx, http.MethodPut, "/api/v1/"+d.kind+"s/"+url.PathEscape(d.id), d.body, nil)
		if err != nil {
			return err
		}
		fmt.Printf("%s/%s %s\n", d.kind, d.id, h.Get("X-Intake-Result"))
		return nil
	}
	if err := inRounds(len(tpls), func(i int) error { return put(tpls[i]) }); err != nil {
		return err
	}
	for _, d := range ints {
		if err := put(d); err != nil {
			return fmt.Errorf("%s (%s): %w", d.id, d.source, err)
		}
	}
	return nil
}

// inRounds applies n items that may depend on each other (a template's relation target must
// exist first): it retries the failed ones while each round makes progress.
func inRounds(n int, apply func(i int) error) error {
	pending := make([]int, n)
	for i := range pending {
		pending[i] = i
	}
	for len(pending) > 0 {
		var failed []int
		var lastErr error
		for _, i := range pending {
			if err := apply(i); err != nil {
				failed, lastErr = append(failed, i), err
			}
		}
		if len(failed) == len(pending) {
			return lastErr
		}
		pending = failed
	}
	return nil
}

// runReplay replays one delivery, or every delivery matching a filter (a bulk replay workflow).
func runReplay(ctx context.Context, args []string) error {
	var f intake.DeliveryFilter
	var from, to string
	var wait bool
	c, ids, err := cliFlags("replay", args, func(fs *flag.FlagSet) {
		fs.StringVar(&f.Integration, "integration", "", "bulk: only this integration")
		fs.StringVar(&f.Status, "status", "failed", "bulk: deliveries with this status")
		fs.StringVar(&from, "from", "", "bulk: received at or after (RFC 3339)")
		fs.StringVar(&to, "to", "", "bulk: received before (RFC 3339)")
		fs.BoolVar(&wait, "wait", false, "wait until the replay finished and print its outcome")
	})
	if err != nil {
		return err
	}
	switch len(ids) {
	case 0:
	case 1:
		var out map[string]any
		if _, err := c.do(ctx, http.MethodPost, "/api/v1/deliveries/"+url.PathEscape(ids[0])+"/replay", nil, &out); err != nil {
			return err
		}
		fmt.Printf("replaying %s as %s\n", ids[0], out["workflow_id"])
		if wait {
			return waitDelivery(ctx, c, ids[0], out["workflow_id"].(string))
		}
		return nil
	default:
		return errors.New("replay takes one delivery ID, or a filter (--integration, --status, --from, --to)")
	}
	body := map[string]any{"integration": f.Integration, "status": f.Status}
	if from != "" {
		body["from"] = from
	}
	if to != "" {
		body["to"] = to
	}
	var out map[string]any
	if _, err := c.do(ctx, http.MethodPost, "/api/v1/deliveries/replay", body, &out); err != nil {
		return err
	}
	id := out["replay_id"].(string)
	fmt.Printf("bulk replay %s started\n", id)
	for wait {
		var p struct {
			Status   string         `json:"status"`
			Progress map[string]any `json:"progress"`
		}
		if _, err := c.do(ctx, http.MethodGet, "/api/v1/replays/"+url.PathEscape(id), nil, &p); err != nil {
			return err
		}
		fmt.Printf("%s started=%v succeeded=%v failed=%v\n", p.Status, p.Progress["started"], p.Progress["succeeded"], p.Progress["failed"])
		if p.Status != "Running" {
			if n, _ := p.Progress["failed"].(float64); n > 0 {
				return fmt.Errorf("bulk replay %s: %v deliveries failed again", id, n)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil
}

func failureText(f *intake.Failure) string {
	if f == nil {
		return "see the delivery"
	}
	return f.Type + ": " + f.Message
}

func waitDelivery(ctx context.Context, c *adminClient, id, workflowID string) error {
	for {
		var d intake.DeliveryRecord
		if _, err := c.do(ctx, http.MethodGet, "/api/v1/deliveries/"+url.PathEscape(id), nil, &d); err != nil {
			return err
		}
		for _, r := range d.Replays {
			if r.WorkflowID == workflowID {
				fmt.Printf("%s %s\n", id, r.Status)
				if r.Status == intake.DeliveryFailed {
					// Scripts can tell: the replay ran and failed again.
					return fmt.Errorf("replay of %s failed: %s", id, failureText(d.Error))
				}
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// runTestMapping is a dry run from the shell: what the integration makes of a payload file.
func runTestMapping(ctx context.Context, args []string) error {
	var integration, payload, headers string
	c, _, err := cliFlags("test-mapping", args, func(fs *flag.FlagSet) {
		fs.StringVar(&integration, "integration", "", "integration identifier")
		fs.StringVar(&payload, "payload", "", "payload file (JSON)")
		fs.StringVar(&headers, "headers", "", "headers as name=value,name=value")
	})
	if err != nil {
		return err
	}
	if integration == "" || payload == "" {
		return errors.New("test-mapping needs --integration ID --payload FILE")
	}
	raw, err := os.ReadFile(payload)
	if err != nil {
		return err
	}
	if !json.Valid(raw) {
		return fmt.Errorf("%s is not JSON", payload)
	}
	h := map[string]string{}
	for _, kv := range strings.Split(headers, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			h[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	var out json.RawMessage
	if _, err := c.do(ctx, http.MethodPost, "/api/v1/integrations/"+url.PathEscape(integration)+"/test",
		map[string]any{"body": json.RawMessage(raw), "headers": h}, &out); err != nil {
		return err
	}
	var v any
	_ = json.Unmarshal(out, &v)
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
	var verdict struct{ Valid bool }
	_ = json.Unmarshal(out, &verdict)
	if !verdict.Valid {
		return errors.New("the mapping would fail (see entities[].message)")
	}
	return nil
}
