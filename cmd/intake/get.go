package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"
)

// resource is one kind of thing `intake get` lists or shows.
type resource struct {
	name    string   // as typed: intake get NAME
	aliases []string // singular and API spellings
	path    string   // the API's list path
	// byID turns the ID argument into the API path of one item ("" = path + "/" + ID).
	byID    func(id string, filters url.Values) (string, error)
	paged   bool
	columns []column
	filters []filter
	short   string
}

type column struct {
	header string
	value  func(item map[string]any) string
}

// filter is a list flag and the query parameter it sets.
type filter struct{ flag, param, usage string }

var resources = []resource{
	{name: "integrations", aliases: []string{"integration"}, path: "/api/v1/integrations",
		short: "integrations (secrets masked)",
		columns: []column{
			{"IDENTIFIER", str("identifier")}, {"TITLE", str("title")}, {"SOURCE", sourceKind},
			{"MAPPINGS", count("mappings")}, {"ENABLED", enabled}, {"STATUS", str("status")},
		}},
	{name: "templates", aliases: []string{"template"}, path: "/api/v1/templates",
		short: "templates",
		columns: []column{
			{"IDENTIFIER", str("identifier")}, {"TITLE", str("title")},
			{"PROPERTIES", count("schema.properties")}, {"RELATIONS", keys("relations")},
		}},
	{name: "entities", aliases: []string{"entity"}, path: "/api/v1/entities", paged: true,
		short: "entities; one is TEMPLATE/IDENTIFIER, or IDENTIFIER with --template",
		byID: func(id string, f url.Values) (string, error) {
			tpl := f.Get("template")
			if tpl == "" {
				var ok bool
				if tpl, id, ok = strings.Cut(id, "/"); !ok {
					return "", usageError{fmt.Errorf("an entity is TEMPLATE/IDENTIFIER, or IDENTIFIER with --template")}
				}
			}
			return "/api/v1/entities/" + url.PathEscape(tpl) + "/" + url.PathEscape(id), nil
		},
		filters: []filter{{"template", "template", "only entities of this template"}},
		columns: []column{
			{"TEMPLATE", str("template")}, {"IDENTIFIER", str("identifier")}, {"TITLE", str("title")},
			{"UPDATED", str("updated_at")}, {"UPDATED BY", str("updated_by")},
		}},
	{name: "deliveries", aliases: []string{"delivery"}, path: "/api/v1/deliveries", paged: true,
		short: "deliveries, newest first",
		filters: []filter{
			{"integration", "integration", "only this integration"},
			{"status", "status", "accepted, succeeded, filtered or failed"},
			{"from", "from", "received at or after (RFC 3339)"},
			{"to", "to", "received before (RFC 3339)"},
		},
		columns: []column{
			{"ID", str("id")}, {"INTEGRATION", str("integration")}, {"ORIGIN", str("origin")},
			{"STATUS", str("status")}, {"RECEIVED", str("received_at")}, {"ERROR", failure},
		}},
	{name: "audit", aliases: []string{"audit_logs", "audit-logs", "audit_log"}, path: "/api/v1/audit_logs", paged: true,
		short: "audit entries, newest first",
		filters: []filter{
			{"entity-template", "entity_template", "only entries about entities of this template"},
			{"integration", "integration", "only this integration"},
			{"origin", "origin", "WEBHOOK, KAFKA, PUBSUB or REPLAY"},
			{"action", "action", "CREATE, UPDATE, DELETE, SKIP or AUTHENTICATE"},
			{"status", "status", "SUCCESS or FAILURE"},
			{"from", "from", "at or after (RFC 3339)"},
			{"to", "to", "before (RFC 3339)"},
		},
		columns: []column{
			{"AT", str("trigger.at")}, {"ACTION", str("action")}, {"STATUS", str("status")},
			{"ORIGIN", str("trigger.origin")}, {"INTEGRATION", str("trigger.by.integration_id")},
			{"ENTITY", entityRef}, {"MESSAGE", str("message")},
		}},
}

func getCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "get RESOURCE [ID]",
		GroupID: "admin",
		Short:   "list or show integrations, templates, entities, deliveries or audit entries",
		Long: `Lists a resource, or shows one item of it. Lists follow X-Next-Cursor to the last page
unless --limit says how many to fetch. -o json prints the API's JSON (an array for a list), -o yaml
the same as YAML, -o table (the default) a table that always has its header row.`,
		Example: `  intake get integrations
  intake get deliveries --integration sonar_webhook --status failed -o json
  intake get entities github_repository/octo-org_care_back -o yaml
  intake get audit --entity-template sonar_project --status FAILURE --limit 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Usage()
			return usageError{fmt.Errorf("get needs a resource: integrations, templates, entities, deliveries or audit")}
		},
	}
	for _, r := range resources {
		cmd.AddCommand(getResourceCommand(r))
	}
	return cmd
}

func getResourceCommand(r resource) *cobra.Command {
	var output string
	var limit, chunk int
	values := make([]*string, len(r.filters))
	cmd := &cobra.Command{
		Use:     r.name + " [ID]",
		Aliases: r.aliases,
		Short:   r.short,
		Args:    cobra.MaximumNArgs(1),
	}
	c := adminFlags(cmd)
	cmd.GroupID = ""
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table, json or yaml")
	_ = cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp))
	if r.paged {
		cmd.Flags().IntVar(&limit, "limit", 0, "fetch at most this many (0: every page)")
		cmd.Flags().IntVar(&chunk, "chunk-size", 500, "items per request while following X-Next-Cursor (1-1000)")
	}
	for i, f := range r.filters {
		values[i] = cmd.Flags().String(f.flag, "", f.usage)
	}
	idField := "identifier"
	if r.name == "deliveries" || r.name == "audit" {
		idField = "id"
	}
	if r.name != "entities" {
		cmd.ValidArgsFunction = completeIDs(c, r.path, idField)
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c.ready()
		switch output {
		case "table", "json", "yaml":
		default:
			return usageError{fmt.Errorf("-o takes table, json or yaml, not %q", output)}
		}
		if limit < 0 {
			return usageError{fmt.Errorf("--limit must be 0 or more")}
		}
		if r.paged && (chunk < 1 || chunk > 1000) {
			return usageError{fmt.Errorf("--chunk-size must be between 1 and 1000")}
		}
		q := url.Values{}
		for i, f := range r.filters {
			if *values[i] != "" {
				q.Set(f.param, *values[i])
			}
		}
		var raw []byte
		var err error
		if len(args) == 1 {
			raw, err = getOne(cmd.Context(), c, r, args[0], q)
		} else {
			raw, err = getList(cmd.Context(), c, r, q, limit, chunk)
		}
		if err != nil {
			return err
		}
		return render(cmd.OutOrStdout(), r, raw, output, len(args) == 1)
	}
	return cmd
}

func getOne(ctx context.Context, c *adminClient, r resource, id string, q url.Values) ([]byte, error) {
	path := r.path + "/" + url.PathEscape(id)
	if r.byID != nil {
		var err error
		if path, err = r.byID(id, q); err != nil {
			return nil, err
		}
	}
	_, raw, err := c.raw(ctx, http.MethodGet, path, nil)
	return raw, err
}

// getList fetches pages until X-Next-Cursor is absent or limit items are in, and gives back one
// JSON array of the items exactly as the API wrote them.
func getList(ctx context.Context, c *adminClient, r resource, q url.Values, limit, chunk int) ([]byte, error) {
	var items []json.RawMessage
	cursor := ""
	for {
		if r.paged {
			page := chunk
			if limit > 0 {
				page = min(limit-len(items), chunk)
			}
			q.Set("limit", strconv.Itoa(page))
			if cursor != "" {
				q.Set("cursor", cursor)
			}
		}
		path := r.path
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		h, raw, err := c.raw(ctx, http.MethodGet, path, nil)
		if err != nil {
			return nil, err
		}
		var page []json.RawMessage
		if err := json.Unmarshal(raw, &page); err != nil {
			return nil, fmt.Errorf("GET %s: %w", path, err)
		}
		items = append(items, page...)
		cursor = h.Get("X-Next-Cursor")
		if !r.paged || cursor == "" || (limit > 0 && len(items) >= limit) {
			break
		}
	}
	var b bytes.Buffer
	b.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(it)
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

func render(w io.Writer, r resource, raw []byte, output string, one bool) error {
	switch output {
	case "json":
		return printJSON(w, raw)
	case "yaml":
		y, err := yaml.JSONToYAML(raw)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	var rows []map[string]any
	if one {
		var item map[string]any
		if err := json.Unmarshal(raw, &item); err != nil {
			return err
		}
		rows = []map[string]any{item}
	} else if err := json.Unmarshal(raw, &rows); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	cells := make([]string, len(r.columns))
	for i, col := range r.columns {
		cells[i] = col.header
	}
	fmt.Fprintln(tw, strings.Join(cells, "\t"))
	for _, row := range rows {
		for i, col := range r.columns {
			cells[i] = oneLine(col.value(row))
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// printJSON indents the API's JSON without changing a value (nor escaping <, > and &).
func printJSON(w io.Writer, raw []byte) error {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "", "  "); err != nil {
		return fmt.Errorf("the API answered something that is not JSON: %w", err)
	}
	b.WriteByte('\n')
	_, err := w.Write(b.Bytes())
	return err
}

// oneLine keeps a cell on its row: tabs and line breaks would break the table.
func oneLine(s string) string {
	s = strings.NewReplacer("\t", " ", "\r", " ", "\n", " ").Replace(s)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	if s == "" {
		return "-"
	}
	return s
}

// at walks a dotted path through decoded JSON.
func at(item map[string]any, path string) any {
	var v any = item
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func str(path string) func(map[string]any) string {
	return func(item map[string]any) string {
		switch v := at(item, path).(type) {
		case nil:
			return ""
		case string:
			return v
		default:
			return fmt.Sprint(v)
		}
	}
}

func count(path string) func(map[string]any) string {
	return func(item map[string]any) string {
		switch v := at(item, path).(type) {
		case []any:
			return strconv.Itoa(len(v))
		case map[string]any:
			return strconv.Itoa(len(v))
		}
		return "0"
	}
}

func keys(path string) func(map[string]any) string {
	return func(item map[string]any) string {
		m, _ := at(item, path).(map[string]any)
		names := make([]string, 0, len(m))
		for k := range m {
			names = append(names, k)
		}
		sort.Strings(names)
		return strings.Join(names, ",")
	}
}

func sourceKind(item map[string]any) string {
	if k := str("source.kind")(item); k != "" {
		return k
	}
	if ms, ok := item["mappings"].([]any); ok {
		for _, m := range ms {
			if mm, ok := m.(map[string]any); ok && mm["topic"] != nil {
				return "kafka"
			}
		}
	}
	return "webhook"
}

func enabled(item map[string]any) string {
	if v, ok := item["enabled"].(bool); ok && !v {
		return "false"
	}
	return "true"
}

func failure(item map[string]any) string {
	if t := str("error.type")(item); t != "" {
		return t + ": " + str("error.message")(item)
	}
	return ""
}

func entityRef(item map[string]any) string {
	if e := str("context.entity")(item); e != "" {
		return str("context.entity_template")(item) + "/" + e
	}
	return ""
}

func deleteCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "delete template|integration ID",
		GroupID: "admin",
		Short:   "delete a template (none may still use it) or an integration",
		Example: "  intake delete integration squads_cli\n  intake delete template squad",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Usage()
			return usageError{fmt.Errorf("delete needs a kind: template or integration")}
		},
	}
	for _, kind := range []string{"template", "integration"} {
		sub := &cobra.Command{
			Use:     kind + " ID",
			Aliases: []string{kind + "s"},
			Short:   "delete one " + kind,
			Args:    cobra.ExactArgs(1),
		}
		c := adminFlags(sub)
		sub.GroupID = ""
		sub.ValidArgsFunction = completeIDs(c, "/api/v1/"+kind+"s", "identifier")
		sub.RunE = func(cmd *cobra.Command, args []string) error {
			c.ready()
			if _, _, err := c.raw(cmd.Context(), http.MethodDelete, "/api/v1/"+kind+"s/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s/%s deleted\n", kind, args[0])
			return nil
		}
		cmd.AddCommand(sub)
	}
	return cmd
}

// completeIDs completes an ID argument from the API (quietly nothing when it does not answer).
func completeIDs(c *adminClient, path, field string) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c.ready()
		var items []map[string]any
		if _, err := c.do(cmd.Context(), http.MethodGet, path, nil, &items); err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ids := make([]string, 0, len(items))
		for _, it := range items {
			if s, ok := it[field].(string); ok {
				ids = append(ids, s)
			}
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}
