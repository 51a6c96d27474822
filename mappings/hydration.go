package mappings

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"intake"
)

// Hydration limits: the fetched document travels in the workflow history, so it stays well under
// Temporal's 2 MB blob limit.
const (
	DefaultHydrationTimeout  = 10 * time.Second
	MaxHydrationTimeout      = time.Minute
	DefaultHydrationMaxBytes = 1 << 20
	MaxHydrationMaxBytes     = 3 << 19 // 1.5 MiB
	DefaultSyncTimeout       = 5 * time.Second
	MaxSyncTimeout           = 30 * time.Second
)

// Hydration operations a notification turns into.
const (
	HydrateFetch  = "fetch"  // fetch the record, then map it
	HydrateDelete = "delete" // delete the mapped entities without a fetch
	HydrateNone   = "none"   // no route matched: nothing to fetch, every mapping filtered
)

// CompiledHydration is an integration's hydration block with its JQ compiled.
type CompiledHydration struct {
	Spec     intake.Hydration
	Routes   []CompiledRoute
	Event    *Expr
	Timeout  time.Duration
	MaxBytes int64
}

// CompiledRoute is one endpoint: the top-level url is the last route, without a condition.
type CompiledRoute struct {
	Index int // position in hydration.routes; -1 for the top-level url
	When  *Expr
	URL   string
	ID    *Expr
}

// HydrationPlan is what a notification asks for.
type HydrationPlan struct {
	Operation string `json:"operation"`
	Route     int    `json:"route"`
	URL       string `json:"url_template,omitempty"`
	ID        string `json:"id,omitempty"`
	Event     string `json:"event,omitempty"`
}

var (
	hydrationFields = []string{"url", "id_path", "event_path", "delete_events", "event_map", "headers", "merge", "routes", "timeout", "max_bytes"}
	routeFields     = []string{"when", "url", "id_path"}
	bareField       = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// pathExpr accepts a JQ path (".record_id") or seed 003's bare field name ("record_id").
func pathExpr(src string) string {
	if bareField.MatchString(src) {
		return "." + src
	}
	return src
}

func compileHydration(in intake.Integration, errs *ConfigError) *CompiledHydration {
	raw := bytes.TrimSpace(in.Hydration)
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	if !unknownFields("hydration", raw, hydrationFields, errs) {
		return nil
	}
	var spec intake.Hydration
	if err := json.Unmarshal(raw, &spec); err != nil {
		errs.add("hydration", "%v", err)
		return nil
	}
	h := &CompiledHydration{Spec: spec, Timeout: DefaultHydrationTimeout, MaxBytes: DefaultHydrationMaxBytes}
	idPath := spec.IDPath
	if idPath == "" {
		idPath = ".id"
	}
	var routesRaw []json.RawMessage
	var probe struct {
		Routes []json.RawMessage `json:"routes"`
	}
	_ = json.Unmarshal(raw, &probe)
	routesRaw = probe.Routes
	for i, r := range spec.Routes {
		field := fmt.Sprintf("hydration.routes[%d]", i)
		if i < len(routesRaw) && !unknownFields(field, routesRaw[i], routeFields, errs) {
			continue
		}
		if strings.TrimSpace(r.When) == "" {
			errs.add(field+".when", "is required (the top-level url is the route without a condition)")
		}
		if r.URL == "" {
			errs.add(field+".url", "is required")
		}
		rid := r.IDPath
		if rid == "" {
			rid = idPath
		}
		h.Routes = append(h.Routes, CompiledRoute{
			Index: i, URL: r.URL,
			When: compileExpr(field+".when", r.When, errs),
			ID:   compileExpr(field+".id_path", pathExpr(rid), errs),
		})
	}
	if spec.URL != "" {
		h.Routes = append(h.Routes, CompiledRoute{Index: -1, URL: spec.URL, ID: compileExpr("hydration.id_path", pathExpr(idPath), errs)})
	}
	if len(h.Routes) == 0 {
		errs.add("hydration.url", "is required (or hydration.routes)")
	}
	if spec.EventPath != "" {
		h.Event = compileExpr("hydration.event_path", pathExpr(spec.EventPath), errs)
	} else if len(spec.DeleteEvents) > 0 || len(spec.EventMap) > 0 {
		errs.add("hydration.event_path", "is required with delete_events or event_map")
	}
	for _, ev := range sortedKeys(spec.EventMap) {
		switch spec.EventMap[ev] {
		case intake.OperationDelete, intake.OperationUpsert:
		default:
			errs.add("hydration.event_map."+ev, "unknown value %q (want upsert or delete)", spec.EventMap[ev])
		}
	}
	for _, name := range sortedKeys(spec.Headers) {
		ref, isSecret := strings.CutPrefix(spec.Headers[name], intake.SecretRef)
		if _, ok := in.Credentials[ref]; isSecret && !ok {
			errs.add("hydration.headers."+name, "names credential %q, which is not in credentials", ref)
		}
	}
	if spec.Timeout != "" {
		d, err := time.ParseDuration(spec.Timeout)
		if err != nil || d <= 0 || d > MaxHydrationTimeout {
			errs.add("hydration.timeout", "must be a duration between 0 and %s, like \"10s\"", MaxHydrationTimeout)
		} else {
			h.Timeout = d
		}
	}
	switch {
	case spec.MaxBytes < 0 || spec.MaxBytes > MaxHydrationMaxBytes:
		errs.add("hydration.max_bytes", "must be between 1 and %d", MaxHydrationMaxBytes)
	case spec.MaxBytes > 0:
		h.MaxBytes = spec.MaxBytes
	}
	return h
}

// unknownFields reports every key of the object raw that is not in known; false when raw is not
// an object or has unknown keys.
func unknownFields(field string, raw json.RawMessage, known []string, errs *ConfigError) bool {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		errs.add(field, "must be an object")
		return false
	}
	ok := true
	for _, k := range sortedKeys(obj) {
		if !slices.Contains(known, k) {
			errs.add(field+"."+k, "unknown field (known: %s)", strings.Join(known, ", "))
			ok = false
		}
	}
	return ok
}

func compileResponse(r *intake.Response, errs *ConfigError) time.Duration {
	if r == nil {
		return 0
	}
	switch r.Mode {
	case "", intake.ResponseAsync:
		return 0
	case intake.ResponseSync:
	default:
		errs.add("response.mode", "unknown value %q (want async or sync)", r.Mode)
		return 0
	}
	if r.Timeout == "" {
		return DefaultSyncTimeout
	}
	d, err := time.ParseDuration(r.Timeout)
	if err != nil || d <= 0 || d > MaxSyncTimeout {
		errs.add("response.timeout", "must be a duration between 0 and %s, like \"5s\"", MaxSyncTimeout)
		return 0
	}
	return d
}

// Plan reads a notification: which route to fetch with which id, or a delete, or nothing.
// Errors are the operator's (an id path yielding no identifier) and never get better on retry.
func (h *CompiledHydration) Plan(ctx context.Context, notification any, env Env) (HydrationPlan, error) {
	plan := HydrationPlan{Operation: HydrateNone, Route: -1}
	if h.Event != nil {
		vals, err := h.Event.Run(ctx, notification, env)
		if err != nil {
			return plan, err
		}
		for _, v := range dropNulls(vals) {
			if s, ok := scalarString(v); ok {
				plan.Event = s
				break
			}
		}
	}
	var route *CompiledRoute
	for i := range h.Routes {
		r := &h.Routes[i]
		if r.When == nil {
			route = r
			break
		}
		ok, err := r.When.Truthy(ctx, notification, env)
		if err != nil {
			return plan, err
		}
		if ok {
			route = r
			break
		}
	}
	if route == nil {
		return plan, nil
	}
	plan.Route, plan.URL = route.Index, route.URL
	vals, err := route.ID.Run(ctx, notification, env)
	if err != nil {
		return plan, err
	}
	if plan.ID, err = identifierOf(route.ID.Field, dropNulls(vals)); err != nil {
		return plan, err
	}
	plan.Operation = HydrateFetch
	if slices.Contains(h.Spec.DeleteEvents, plan.Event) || h.Spec.EventMap[plan.Event] == intake.OperationDelete {
		plan.Operation = HydrateDelete
	}
	return plan, nil
}

// MapHydrated maps a hydrated delivery. A fetch maps the document (the notification is
// $notification); with merge the fields the mappings own and the upstream cleared are cleared,
// without it the entity is replaced. A delete deletes, in each mapping's template, the entity its
// identifier names in the notification, or else the id the notification carries. Nothing
// matched: every mapping is filtered.
func (p *Program) MapHydrated(ctx context.Context, plan HydrationPlan, document, notification any, env Env, templates map[string]*intake.Template) ([]intake.MappingOutcome, []intake.EntityChange) {
	env.Notification = notification
	switch plan.Operation {
	case HydrateFetch:
		outcomes, changes := p.mapWith(ctx, document, env, templates, p.Hydration.Spec.Merge)
		for i := range changes {
			if p.Hydration.Spec.Merge {
				changes[i].UpdateMode = intake.UpdateMerge
			} else {
				changes[i].UpdateMode = intake.UpdateReplace
			}
		}
		return outcomes, changes
	case HydrateDelete:
		var outcomes []intake.MappingOutcome
		var changes []intake.EntityChange
		for _, cm := range p.Mappings {
			mo := intake.MappingOutcome{Index: cm.Index, Template: cm.Mapping.Template}
			if !cm.routed(env) || !cm.headersPass(ctx, env) {
				mo.Filtered = true
				outcomes = append(outcomes, mo)
				continue
			}
			outcomes = append(outcomes, mo)
			c := cm.newChange(0)
			c.Operation, c.Identifier = intake.OperationDelete, plan.ID
			if vals, err := cm.Identifier.Run(ctx, notification, env); err == nil {
				if id, err := identifierOf(cm.Identifier.Field, dropNulls(vals)); err == nil {
					c.Identifier = id
				}
			}
			changes = append(changes, c)
		}
		return outcomes, changes
	}
	outcomes := make([]intake.MappingOutcome, len(p.Mappings))
	for i, cm := range p.Mappings {
		outcomes[i] = intake.MappingOutcome{Index: cm.Index, Template: cm.Mapping.Template, Filtered: true}
	}
	return outcomes, nil
}
