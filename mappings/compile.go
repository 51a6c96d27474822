// Package mappings owns the operator-written rules: it compiles an integration's JQ expressions
// once per config version, evaluates them against a payload, and validates the result against
// the entity templates (JSON Schema).
package mappings

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/itchyny/gojq"

	"intake"
)

// DefaultExpressionBudget bounds one JQ expression's run time.
const DefaultExpressionBudget = 100 * time.Millisecond

// FieldError names one bad field of a configuration document.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ConfigError lists every problem found in a configuration document, first one first.
type ConfigError struct{ Problems []FieldError }

func (e *ConfigError) Error() string {
	if len(e.Problems) == 0 {
		return "invalid configuration"
	}
	return e.Problems[0].Field + ": " + e.Problems[0].Message
}

func (e *ConfigError) add(field, format string, args ...any) {
	e.Problems = append(e.Problems, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (e *ConfigError) orNil() error {
	if len(e.Problems) == 0 {
		return nil
	}
	return e
}

// Expr is one compiled JQ expression with the source text it came from.
type Expr struct {
	Field string
	code  *gojq.Code
}

// variables every expression sees, in the order values are passed.
// $notification is the thin notification of a hydrated delivery (null otherwise).
var variables = []string{"$headers", "$meta", "$notification"}

func compileExpr(field, src string, errs *ConfigError) *Expr {
	if strings.TrimSpace(src) == "" {
		return nil
	}
	q, err := gojq.Parse(src)
	if err != nil {
		errs.add(field, "%v", err)
		return nil
	}
	guardQuery(q)
	code, err := gojq.Compile(q, gojq.WithVariables(variables), gojq.WithFunction(guardedMul, 2, 2, guardedMultiply))
	if err != nil {
		errs.add(field, "%v", err)
		return nil
	}
	return &Expr{Field: field, code: code}
}

// EnvOf builds the $headers and $meta every expression sees.
func EnvOf(d intake.Delivery) Env {
	meta := map[string]any{
		"integration": d.Integration,
		"origin":      d.Origin,
		"delivery_id": d.ID,
		"received_at": d.ReceivedAt.UTC().Format(time.RFC3339Nano),
	}
	for k, v := range d.Meta {
		meta[k] = v
	}
	return Env{Headers: d.Headers, Meta: meta}
}

// Env is what an expression runs against.
type Env struct {
	Headers      map[string]string
	Meta         map[string]any
	Notification any
	Budget       time.Duration
	// MaxEntities bounds the entities one delivery may produce (0: DefaultMaxEntities).
	MaxEntities int
	// MaxBytes bounds the JSON of everything one delivery maps to (0: DefaultMaxMappedBytes):
	// what is left of a history payload once the delivery itself is in it.
	MaxBytes int
}

// DefaultMaxMappedBytes is what a delivery may map to when the caller does not say.
const DefaultMaxMappedBytes = MaxPayloadBytes / 2

func (env Env) maxBytes() int {
	if env.MaxBytes > 0 {
		return env.MaxBytes
	}
	return DefaultMaxMappedBytes
}

// DefaultMaxEntities is the default cap on entities per delivery.
const DefaultMaxEntities = 1000

func (env Env) maxEntities() int {
	if env.MaxEntities > 0 {
		return env.MaxEntities
	}
	return DefaultMaxEntities
}

func (env Env) vars() []any {
	h := make(map[string]any, len(env.Headers))
	for k, v := range env.Headers {
		h[k] = v
	}
	m := env.Meta
	if m == nil {
		m = map[string]any{}
	}
	return []any{h, m, env.Notification}
}

// budgetTries is how often an expression that ran over its budget is run again, with twice the
// budget each time: the budget is wall time, and on a busy machine a trivial expression can be
// descheduled past 100 ms; one that really loops still fails after 15x the budget.
const budgetTries = 4

// Run evaluates the expression and returns every value it yields.
func (e *Expr) Run(ctx context.Context, input any, env Env) ([]any, error) {
	budget := env.Budget
	if budget <= 0 {
		budget = DefaultExpressionBudget
	}
	for try := 1; ; try++ {
		out, err := e.run(ctx, input, env, budget<<(try-1))
		if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return out, err
		}
		if try == budgetTries {
			return nil, fmt.Errorf("%s: expression ran over its time budget of %s (%d runs, the last with %s)",
				e.Field, budget, budgetTries, budget<<(try-1))
		}
	}
}

func (e *Expr) run(ctx context.Context, input any, env Env, budget time.Duration) ([]any, error) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	iter := e.code.RunWithContext(ctx, input, env.vars()...)
	var out []any
	total := 0
	for {
		v, ok := iter.Next()
		if !ok {
			break
		}
		if err, isErr := v.(error); isErr {
			var halt *gojq.HaltError
			if errors.As(err, &halt) && halt.Value() == nil {
				break
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %v", e.Field, err)
		}
		if err := checkOutput(e.Field, &total, v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Truthy runs a filter: false, null or no result means "skip".
func (e *Expr) Truthy(ctx context.Context, input any, env Env) (bool, error) {
	vals, err := e.Run(ctx, input, env)
	if err != nil {
		return false, err
	}
	for _, v := range vals {
		if v != nil && v != false {
			return true, nil
		}
	}
	return false, nil
}

// Program is an integration compiled for one config version.
type Program struct {
	Integration       intake.Integration
	RequestIdentifier *Expr
	Hydration         *CompiledHydration
	// SyncTimeout is how long the receiver waits for the workflow (0: answer 202 at once).
	SyncTimeout time.Duration
	// Batch is set when a stream integration runs its records in batches.
	Batch    *BatchPlan
	Mappings []*CompiledMapping
}

// BatchPlan is a compiled source.batch.
type BatchPlan struct {
	MaxRecords int
	MaxWait    time.Duration
}

// Batch limits and defaults.
const (
	DefaultBatchRecords = 500
	MaxBatchRecords     = 1000
	DefaultBatchWait    = 200 * time.Millisecond
	MaxBatchWait        = 10 * time.Second
)

// CompiledMapping is one mapping with its expressions compiled.
type CompiledMapping struct {
	Index        int
	Mapping      intake.Mapping
	Filter       *Expr
	HeaderFilter *Expr
	ItemsToParse *Expr
	EventTime    *Expr
	Identifier   *Expr
	Title        *Expr
	Properties   []namedExpr
	Relations    []namedExpr
}

type namedExpr struct {
	Name string
	Expr *Expr
	// Array marks a property typed "array": a single value is stored as a one-element array.
	Array bool
}

// Compile checks an integration against the known templates and compiles its expressions.
// The error, if any, is a *ConfigError listing every problem.
func Compile(in intake.Integration, templates map[string]*intake.Template) (*Program, error) {
	errs := &ConfigError{}
	if !intake.IDPattern.MatchString(in.Identifier) {
		errs.add("identifier", "must match %s", intake.IDPattern)
	}
	p := &Program{Integration: in}
	p.RequestIdentifier = compileExpr("request_identifier", in.RequestIdentifier, errs)
	if in.Source != nil {
		switch in.Source.Kind {
		case intake.SourceWebhook, intake.SourceKafka, intake.SourcePubSub:
		default:
			errs.add("source.kind", "unknown value %q (want webhook, kafka or pubsub)", in.Source.Kind)
		}
	}
	if s := in.Security; s != nil {
		needsHeader := true
		switch s.Scheme {
		case "", "auto", "hmac-sha256", "hmac-sha1", "static":
		case "standard-webhooks", "basic":
			needsHeader = false
		case "none":
			needsHeader = false
			if !s.AllowUnsigned {
				errs.add("security.scheme", `"none" needs "allow_unsigned": true`)
			}
		default:
			errs.add("security.scheme", "unknown value %q (want auto, hmac-sha256, hmac-sha1, static, standard-webhooks, basic or none)", s.Scheme)
		}
		if needsHeader && s.SignatureHeaderName == "" {
			errs.add("security.signature_header_name", "is required")
		}
		if needsHeader || s.Scheme == "standard-webhooks" || s.Scheme == "basic" {
			if s.SignatureValue == "" && len(s.Secrets) == 0 {
				errs.add("security.signature_value", "a secret is required")
			}
		}
		if s.Scheme == "standard-webhooks" {
			for i, sec := range append([]string{s.SignatureValue}, s.Secrets...) {
				if sec == "" {
					continue
				}
				if _, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sec, "whsec_")); err != nil {
					errs.add("security.secrets", "secret %d is not a whsec_ base64 key", i)
				}
			}
		}
	}
	switch in.SourceKind() {
	case intake.SourcePubSub:
		if in.Source.Subscription == "" {
			errs.add("source.subscription", "is required for a pubsub integration")
		}
	case intake.SourceKafka:
		hasTopic := in.Source != nil && len(in.Source.Topics) > 0
		for _, m := range in.Mappings {
			hasTopic = hasTopic || m.Topic != ""
		}
		if !hasTopic {
			errs.add("source.topics", "a kafka integration needs topics (source.topics or a mapping's topic)")
		}
	}
	p.Hydration = compileHydration(in, errs)
	p.SyncTimeout = compileResponse(in.Response, errs)
	p.Batch = compileBatch(in, p.Hydration != nil, errs)
	if in.RateLimit != nil && (in.RateLimit.PerSecond <= 0 || in.RateLimit.Burst < 1) {
		errs.add("rate_limit", "per_second must be > 0 and burst >= 1")
	}
	if len(in.Mappings) == 0 {
		errs.add("mappings", "at least one mapping is required")
	}
	for i, m := range in.Mappings {
		p.Mappings = append(p.Mappings, compileMapping(i, m, templates, errs))
	}
	if err := errs.orNil(); err != nil {
		return nil, err
	}
	return p, nil
}

func compileBatch(in intake.Integration, hydrates bool, errs *ConfigError) *BatchPlan {
	if in.Source == nil || in.Source.Batch == nil {
		return nil
	}
	b := in.Source.Batch
	switch {
	case in.SourceKind() == intake.SourceWebhook:
		errs.add("source.batch", "only kafka and pubsub integrations run in batches")
		return nil
	case hydrates:
		errs.add("source.batch", "not available with hydration (each record would fetch on its own)")
		return nil
	}
	plan := &BatchPlan{MaxRecords: b.MaxRecords, MaxWait: DefaultBatchWait}
	if plan.MaxRecords == 0 {
		plan.MaxRecords = DefaultBatchRecords
	}
	if plan.MaxRecords < 1 || plan.MaxRecords > MaxBatchRecords {
		errs.add("source.batch.max_records", "must be between 1 and %d", MaxBatchRecords)
	}
	if b.MaxWait != "" {
		d, err := time.ParseDuration(b.MaxWait)
		if err != nil || d <= 0 || d > MaxBatchWait {
			errs.add("source.batch.max_wait", "must be a duration between 0 and %s, like \"200ms\"", MaxBatchWait)
		}
		plan.MaxWait = d
	}
	return plan
}

func compileMapping(i int, m intake.Mapping, templates map[string]*intake.Template, errs *ConfigError) *CompiledMapping {
	f := func(name string) string { return fmt.Sprintf("mappings[%d].%s", i, name) }
	cm := &CompiledMapping{Index: i, Mapping: m}
	tpl := templates[m.Template]
	if tpl == nil {
		errs.add(f("template"), "unknown template %q", m.Template)
	}
	switch m.Operation {
	case "", intake.OperationUpsert, intake.OperationDelete:
	default:
		errs.add(f("operation"), "unknown value %q (want upsert or delete)", m.Operation)
	}
	switch m.UpdateMode {
	case "", intake.UpdateMerge, intake.UpdateReplace:
	default:
		errs.add(f("update_mode"), "unknown value %q (want merge or replace)", m.UpdateMode)
	}
	cm.Filter = compileExpr(f("filter"), m.Filter, errs)
	cm.HeaderFilter = compileExpr(f("header_filter"), m.HeaderFilter, errs)
	cm.ItemsToParse = compileExpr(f("items_to_parse"), m.ItemsToParse, errs)
	cm.EventTime = compileExpr(f("event_time"), m.EventTime, errs)
	if strings.TrimSpace(m.Entity.Identifier) == "" {
		errs.add(f("entity.identifier"), "is required")
	}
	cm.Identifier = compileExpr(f("entity.identifier"), m.Entity.Identifier, errs)
	cm.Title = compileExpr(f("entity.title"), m.Entity.Title, errs)
	for _, name := range sortedKeys(m.Entity.Properties) {
		field := f("entity.properties." + name)
		isArray := false
		if tpl != nil {
			raw, ok := tpl.Schema.Properties[name]
			if !ok {
				errs.add(field, "template %q has no property %q", tpl.Identifier, name)
			}
			var p struct{ Type string }
			_ = json.Unmarshal(raw, &p)
			isArray = p.Type == "array"
		}
		if e := compileExpr(field, m.Entity.Properties[name], errs); e != nil {
			cm.Properties = append(cm.Properties, namedExpr{Name: name, Expr: e, Array: isArray})
		}
	}
	for _, name := range sortedKeys(m.Entity.Relations) {
		field := f("entity.relations." + name)
		if tpl != nil {
			if _, ok := tpl.Relations[name]; !ok {
				errs.add(field, "template %q has no relation %q", tpl.Identifier, name)
			}
		}
		if e := compileExpr(field, m.Entity.Relations[name], errs); e != nil {
			cm.Relations = append(cm.Relations, namedExpr{Name: name, Expr: e})
		}
	}
	return cm
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// scalarString turns a JQ result into an identifier string: strings as they are, numbers printed
// without exponent; anything else is rejected.
func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int:
		return strconv.Itoa(x), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case interface{ String() string }: // *big.Int from gojq
		return x.String(), true
	}
	return "", false
}
