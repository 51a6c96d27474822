package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"intake"
)

// adminClient talks to the admin API for the CLI commands.
type adminClient struct {
	server string
	token  string
	http   *http.Client
}

// adminFlags declares --server and --token on an admin command; the client is ready once the
// flags are parsed (call ready first in RunE).
func adminFlags(cmd *cobra.Command) *adminClient {
	c := &adminClient{http: &http.Client{Timeout: 60 * time.Second}}
	cmd.Flags().StringVar(&c.server, "server", envOr("INTAKE_SERVER", "http://127.0.0.1:8080"), "admin API address ($INTAKE_SERVER)")
	cmd.Flags().StringVar(&c.token, "token", envOr("INTAKE_ADMIN_TOKEN", ""), "admin token ($INTAKE_ADMIN_TOKEN; default: .intake/admin-token of this folder)")
	hideDefault(cmd.Flags(), "token")
	cmd.GroupID = "admin"
	return c
}

// ready fills in the token kept by `intake dev` in this folder when none was given.
func (c *adminClient) ready() *adminClient {
	if c.token == "" {
		if b, err := os.ReadFile(filepath.Join(envOr("INTAKE_DATA_DIR", ".intake"), "admin-token")); err == nil {
			c.token = strings.TrimSpace(string(b))
		}
	}
	c.server = strings.TrimRight(c.server, "/")
	return c
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
	h, raw, err := c.raw(ctx, method, path, body)
	if err != nil {
		return h, err
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return h, nil
}

// raw sends a request and gives back the answer's bytes as the API wrote them.
func (c *adminClient) raw(ctx context.Context, method, path string, body any) (http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return nil, nil, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, rd)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(raw, e) != nil {
			e.Message = string(raw)
		}
		return resp.Header, nil, e
	}
	return resp.Header, raw, nil
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
func readDocuments(path string, stdin io.Reader) ([]document, error) {
	if path == "-" {
		raw, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read standard input: %w", err)
		}
		return parseDocuments("standard input", raw, looksLikeJSON(raw))
	}
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
		d, err := parseDocuments(f, raw, filepath.Ext(f) == ".json")
		if err != nil {
			return nil, err
		}
		docs = append(docs, d...)
	}
	return docs, nil
}

// looksLikeJSON tells JSON from YAML on standard input, which has no file name to go by.
func looksLikeJSON(raw []byte) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && (t[0] == '{' || t[0] == '[')
}

// parseDocuments reads the documents of one file: a JSON object or array, or YAML documents.
func parseDocuments(f string, raw []byte, isJSON bool) ([]document, error) {
	var docs []document
	{
		var parts [][]byte
		if isJSON {
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

func applyCommand() *cobra.Command {
	var file string
	var dry bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR|-",
		Short: "create or update templates and integrations (JSON or YAML; idempotent)",
		Long: `Applies templates and integrations from JSON or YAML files, a folder of them, or standard
input (-f -). A file may hold several documents: YAML separated by ---, or a JSON array. A document
is a template when it has "schema", an integration when it has "mappings", or says so in "kind".

The server validates the whole set first, each document seeing the others, and writes nothing
unless every one is valid: templates first (a relation's target before the template that points
to it), then integrations. --dry-run validates the same way and prints what would be done; nothing
is written. The same files applied twice change nothing.`,
		Example: `  intake apply -f examples/templates
  intake apply -f my-integrations.yaml --dry-run
  cat service.yaml | intake apply -f -`,
		Args: cobra.NoArgs,
	}
	c := adminFlags(cmd)
	cmd.Flags().StringVarP(&file, "filename", "f", "", `file or folder of templates and integrations (JSON or YAML); "-" reads standard input`)
	cmd.Flags().BoolVar(&dry, "dry-run", false, "validate against the server and print what would be done; write nothing")
	_ = cmd.MarkFlagRequired("filename")
	_ = cmd.MarkFlagFilename("filename", "json", "yaml", "yml")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runApply(cmd.Context(), c.ready(), cmd, file, dry)
	}
	return cmd
}

// runApply sends the documents as one set (POST /api/v1/apply) and prints what became of each.
func runApply(ctx context.Context, c *adminClient, cmd *cobra.Command, file string, dry bool) error {
	docs, err := readDocuments(file, cmd.InOrStdin())
	if err != nil {
		return err
	}
	set := map[string][]json.RawMessage{"templates": {}, "integrations": {}}
	for _, d := range docs {
		set[d.kind+"s"] = append(set[d.kind+"s"], d.body)
	}
	path := "/api/v1/apply"
	if dry {
		path += "?dry_run=true"
	}
	var out struct {
		Results []struct{ Kind, Identifier, Result string }
	}
	if _, err := c.do(ctx, http.MethodPost, path, set, &out); err != nil {
		return withSources(err, docs)
	}
	suffix := ""
	if dry {
		suffix = " (dry run)"
	}
	for _, r := range out.Results {
		fmt.Fprintf(cmd.OutOrStdout(), "%s/%s %s%s\n", r.Kind, r.Identifier, r.Result, suffix)
	}
	return nil
}

// withSources names the file of each document the server found a problem in.
func withSources(err error, docs []document) error {
	var ae *apiError
	if !errors.As(err, &ae) {
		return err
	}
	list, _ := ae.Details.([]any)
	var files []string
	seen := map[string]bool{}
	for _, d := range list {
		m, _ := d.(map[string]any)
		field, _ := m["field"].(string)
		for _, doc := range docs {
			prefix := doc.kind + "s/" + doc.id
			if (field == prefix || strings.HasPrefix(field, prefix+".")) && !seen[prefix] {
				seen[prefix] = true
				files = append(files, prefix+" is in "+doc.source)
			}
		}
	}
	if len(files) == 0 {
		return err
	}
	return fmt.Errorf("%w\n%s", err, strings.Join(files, "\n"))
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

func replayCommand() *cobra.Command {
	var f intake.DeliveryFilter
	var from, to string
	var wait bool
	cmd := &cobra.Command{
		Use:   "replay [DELIVERY_ID]",
		Short: "replay one stored delivery, or every matching one, against the current configuration",
		Long: `With a delivery ID, replays that delivery as a new workflow (origin REPLAY). Without one,
starts a bulk replay of every delivery matching the filter (a workflow that survives restarts).
--wait waits for the outcome and exits 1 when the replay failed again.`,
		Example: `  intake replay sonar_webhook.01m8tn21vhkq6ygd3f3s2w1ddp --wait
  intake replay --integration sonar_webhook --status failed --wait`,
		Args: cobra.MaximumNArgs(1),
	}
	c := adminFlags(cmd)
	cmd.Flags().StringVar(&f.Integration, "integration", "", "bulk: only this integration")
	cmd.Flags().StringVar(&f.Status, "status", "failed", "bulk: deliveries with this status")
	cmd.Flags().StringVar(&from, "from", "", "bulk: received at or after (RFC 3339)")
	cmd.Flags().StringVar(&to, "to", "", "bulk: received before (RFC 3339)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the replay finished and print its outcome; exit 1 when it failed")
	cmd.ValidArgsFunction = completeIDs(c, "/api/v1/deliveries?status=failed", "id")
	cmd.RunE = func(cmd *cobra.Command, ids []string) error {
		c.ready()
		ctx := cmd.Context()
		if len(ids) == 1 {
			return replayOne(ctx, c, ids[0], wait)
		}
		body := map[string]any{"integration": f.Integration, "status": f.Status}
		if from != "" {
			body["from"] = from
		}
		if to != "" {
			body["to"] = to
		}
		return replayBulk(ctx, c, body, wait)
	}
	return cmd
}

func replayOne(ctx context.Context, c *adminClient, id string, wait bool) error {
	var out map[string]any
	if _, err := c.do(ctx, http.MethodPost, "/api/v1/deliveries/"+url.PathEscape(id)+"/replay", nil, &out); err != nil {
		return err
	}
	fmt.Printf("replaying %s as %s\n", id, out["workflow_id"])
	if wait {
		return waitDelivery(ctx, c, id, out["workflow_id"].(string))
	}
	return nil
}

func replayBulk(ctx context.Context, c *adminClient, body map[string]any, wait bool) error {
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

func testMappingCommand() *cobra.Command {
	var integration, payload, headers string
	cmd := &cobra.Command{
		Use:     "test-mapping --integration ID --payload FILE",
		Short:   "dry run: the entities a payload would produce; writes nothing",
		Long:    "Prints the dry run of a stored integration over a payload and exits 1 when an entity would fail.",
		Example: "  intake test-mapping --integration sonar_webhook --payload payload.json --headers x-a=1,x-b=2",
		Args:    cobra.NoArgs,
	}
	c := adminFlags(cmd)
	cmd.Flags().StringVar(&integration, "integration", "", "integration identifier")
	cmd.Flags().StringVar(&payload, "payload", "", `payload file (JSON); "-" reads standard input`)
	cmd.Flags().StringVar(&headers, "headers", "", "headers as name=value,name=value")
	_ = cmd.MarkFlagRequired("integration")
	_ = cmd.MarkFlagRequired("payload")
	_ = cmd.RegisterFlagCompletionFunc("integration", completeIDs(c, "/api/v1/integrations", "identifier"))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return runTestMapping(cmd.Context(), c.ready(), cmd, integration, payload, headers)
	}
	return cmd
}

// runTestMapping is a dry run from the shell: what the integration makes of a payload file.
func runTestMapping(ctx context.Context, c *adminClient, cmd *cobra.Command, integration, payload, headers string) error {
	var raw []byte
	var err error
	if payload == "-" {
		raw, err = io.ReadAll(cmd.InOrStdin())
	} else {
		raw, err = os.ReadFile(payload)
	}
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
	if err := printJSON(cmd.OutOrStdout(), out); err != nil {
		return err
	}
	var verdict struct{ Valid bool }
	_ = json.Unmarshal(out, &verdict)
	if !verdict.Valid {
		return errors.New("the mapping would fail (see entities[].message)")
	}
	return nil
}
