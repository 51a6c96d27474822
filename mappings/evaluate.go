package mappings

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode"

	"intake"
)

// MaxIdentifierLength bounds an entity identifier.
const MaxIdentifierLength = 256

// Map runs every mapping of the program over a payload. Failures of one mapping or item are
// recorded on that change (ErrorType MappingError), so the rest of the delivery still proceeds.
func (p *Program) Map(ctx context.Context, payload any, env Env, templates map[string]*intake.Template) ([]intake.MappingOutcome, []intake.EntityChange) {
	return p.mapWith(ctx, payload, env, templates, false)
}

// mapWith maps; keepClear keeps, on each change, the owned fields that yielded nothing.
func (p *Program) mapWith(ctx context.Context, payload any, env Env, templates map[string]*intake.Template, keepClear bool) ([]intake.MappingOutcome, []intake.EntityChange) {
	var outcomes []intake.MappingOutcome
	var changes []intake.EntityChange
	total := 0
	for _, cm := range p.Mappings {
		mo := intake.MappingOutcome{Index: cm.Index, Template: cm.Mapping.Template}
		if !cm.routed(env) {
			mo.Filtered = true
			outcomes = append(outcomes, mo)
			continue
		}
		items, pass, err := cm.inputs(ctx, payload, env)
		if err != nil {
			c := cm.newChange(-1)
			c.Fail(intake.ErrMapping, err.Error())
			changes = append(changes, c)
			outcomes = append(outcomes, mo)
			continue
		}
		if !pass {
			mo.Filtered = true
			outcomes = append(outcomes, mo)
			continue
		}
		outcomes = append(outcomes, mo)
		if max := env.maxEntities(); len(changes)+len(items) > max {
			// Bounded: a delivery's changes travel through the workflow history.
			c := cm.newChange(-1)
			c.Fail(intake.ErrMapping, fmt.Sprintf("the delivery maps to more than %d entities (the limit, INTAKE_MAX_ENTITIES); nothing was written", max))
			return outcomes, []intake.EntityChange{c}
		}
		for i, input := range items {
			c := cm.newChange(i)
			if err := cm.fill(ctx, &c, input, env, templates[cm.Mapping.Template]); err != nil {
				c.Fail(intake.ErrMapping, err.Error())
			}
			if !keepClear || c.Failed() {
				c.Clear = nil
			}
			// Bounded: the changes travel through the workflow history, whose payloads Temporal
			// caps; over it the workflow would retry its task forever instead of failing.
			if total += changeBytes(&c, env.maxBytes()); total > env.maxBytes() {
				f := cm.newChange(-1)
				f.Fail(intake.ErrMapping, fmt.Sprintf("the delivery maps to more than %d bytes of entities (what is left of Temporal's %d-byte payload limit beside the delivery); nothing was written", env.maxBytes(), MaxPayloadBytes))
				return outcomes, []intake.EntityChange{f}
			}
			changes = append(changes, c)
		}
	}
	return outcomes, changes
}

func (cm *CompiledMapping) newChange(item int) intake.EntityChange {
	m := cm.Mapping
	c := intake.EntityChange{
		Mapping: cm.Index, Item: item, Template: m.Template,
		Operation: m.Operation, UpdateMode: m.UpdateMode,
		CreateMissingRelated: m.CreateMissingRelatedEntities,
	}
	if c.Operation == "" {
		c.Operation = intake.OperationUpsert
	}
	if c.UpdateMode == "" {
		c.UpdateMode = intake.UpdateMerge
	}
	return c
}

// routed applies the seed's per-mapping topic: a record reaches only the mappings of its topic.
func (cm *CompiledMapping) routed(env Env) bool {
	t := cm.Mapping.Topic
	return t == "" || env.Meta["topic"] == t
}

// headerFilter runs header_filter with . = the headers (seed semantics).
func (cm *CompiledMapping) headerFilter(ctx context.Context, env Env) (bool, error) {
	if cm.HeaderFilter == nil {
		return true, nil
	}
	headers := make(map[string]any, len(env.Headers))
	for k, v := range env.Headers {
		headers[k] = v
	}
	return cm.HeaderFilter.Truthy(ctx, headers, env)
}

func (cm *CompiledMapping) headersPass(ctx context.Context, env Env) bool {
	ok, err := cm.headerFilter(ctx, env)
	return err == nil && ok
}

// inputs applies the filters and items_to_parse, returning the inputs to map (one per entity).
func (cm *CompiledMapping) inputs(ctx context.Context, payload any, env Env) ([]any, bool, error) {
	if ok, err := cm.headerFilter(ctx, env); err != nil || !ok {
		return nil, false, err
	}
	if cm.Filter != nil {
		ok, err := cm.Filter.Truthy(ctx, payload, env)
		if err != nil || !ok {
			return nil, false, err
		}
	}
	if cm.ItemsToParse == nil {
		return []any{payload}, true, nil
	}
	vals, err := cm.ItemsToParse.Run(ctx, payload, env)
	if err != nil {
		return nil, false, err
	}
	var items []any
	for _, v := range vals {
		switch x := v.(type) {
		case []any:
			items = append(items, x...)
		case nil:
		default:
			return nil, false, fmt.Errorf("%s: expected an array, got %s", cm.ItemsToParse.Field, typeName(v))
		}
	}
	inputs := make([]any, len(items))
	base, _ := payload.(map[string]any)
	for i, it := range items {
		// Each element is mapped as .item while the rest of the payload stays in place.
		in := make(map[string]any, len(base)+1)
		for k, v := range base {
			in[k] = v
		}
		in["item"] = it
		inputs[i] = in
	}
	return inputs, true, nil
}

func (cm *CompiledMapping) fill(ctx context.Context, c *intake.EntityChange, input any, env Env, tpl *intake.Template) error {
	vals, err := cm.Identifier.Run(ctx, input, env)
	if err != nil {
		return err
	}
	id, err := identifierOf(cm.Identifier.Field, vals)
	if err != nil {
		return err
	}
	c.Identifier = id
	if cm.Title != nil {
		vals, err := cm.Title.Run(ctx, input, env)
		if err != nil {
			return err
		}
		for _, v := range vals {
			if s, ok := scalarString(v); ok {
				c.Title = &s
				break
			}
		}
	}
	if cm.EventTime != nil {
		vals, err := cm.EventTime.Run(ctx, input, env)
		if err != nil {
			return err
		}
		if len(vals) > 0 && vals[0] != nil {
			t, err := timeOf(vals[0])
			if err != nil {
				return fmt.Errorf("%s: %v", cm.EventTime.Field, err)
			}
			c.EventTime = &t
		}
	}
	if c.Operation == intake.OperationDelete {
		return nil
	}
	c.Properties = map[string]any{}
	for _, p := range cm.Properties {
		vals, err := p.Expr.Run(ctx, input, env)
		if err != nil {
			return err
		}
		vals = dropNulls(vals)
		switch len(vals) {
		case 0: // left unset (a hydrated merge clears it)
			c.Clear = append(c.Clear, "properties."+p.Name)
		case 1:
			if _, isList := vals[0].([]any); p.Array && !isList {
				vals[0] = []any{vals[0]}
			}
			c.Properties[p.Name] = normalize(vals[0])
		default:
			c.Properties[p.Name] = normalize(vals)
		}
		if v, ok := c.Properties[p.Name]; ok {
			if err := checkStorable(p.Expr.Field, v); err != nil {
				delete(c.Properties, p.Name) // the failed change must still encode
				return err
			}
		}
	}
	c.Relations = map[string]any{}
	for _, r := range cm.Relations {
		vals, err := r.Expr.Run(ctx, input, env)
		if err != nil {
			return err
		}
		many := tpl != nil && tpl.Relations[r.Name].Many
		var ids []string
		for _, v := range dropNulls(vals) {
			list, isList := v.([]any)
			if !isList {
				list = []any{v}
			}
			for _, e := range dropNulls(list) {
				s, ok := scalarString(e)
				if !ok {
					return fmt.Errorf("%s: expected identifiers, got %s", r.Expr.Field, typeName(e))
				}
				if err := checkIdentifier(s); err != nil {
					return fmt.Errorf("%s: %v", r.Expr.Field, err)
				}
				ids = append(ids, s)
			}
		}
		switch {
		case len(ids) == 0: // a relation yielding nothing is left unset (a hydrated merge clears it)
			c.Clear = append(c.Clear, "relations."+r.Name)
		case many:
			c.Relations[r.Name] = ids
		case len(ids) == 1:
			c.Relations[r.Name] = ids[0]
		default:
			return fmt.Errorf("%s: yielded %d identifiers but relation %q is not many", r.Expr.Field, len(ids), r.Name)
		}
	}
	return nil
}

func identifierOf(field string, vals []any) (string, error) {
	if len(vals) != 1 {
		return "", fmt.Errorf("%s: expected exactly one string, got %d values", field, len(vals))
	}
	s, ok := scalarString(vals[0])
	if !ok {
		return "", fmt.Errorf("%s: expected a string, got %s", field, typeName(vals[0]))
	}
	if err := checkIdentifier(s); err != nil {
		return "", fmt.Errorf("%s: %v", field, err)
	}
	return s, nil
}

func checkIdentifier(s string) error {
	if s == "" {
		return fmt.Errorf("identifier is empty")
	}
	if len(s) > MaxIdentifierLength {
		return fmt.Errorf("identifier is longer than %d characters", MaxIdentifierLength)
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return fmt.Errorf("identifier %q contains a control character", s)
	}
	return nil
}

// timeOf reads an event time: RFC 3339 text or Unix seconds.
func timeOf(v any) (time.Time, error) {
	switch x := v.(type) {
	case string:
		// RFC 3339, or the offset without a colon that SonarQube and Java tools send.
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999-0700"} {
			if t, err := time.Parse(layout, x); err == nil {
				return t.UTC(), nil
			}
		}
		return time.Time{}, fmt.Errorf("event time %q is not RFC 3339", x)
	case int, float64:
		// Unix seconds, within what JSON (RFC 3339) can write: the years 1 to 9999.
		f, _ := x.(float64)
		if i, ok := x.(int); ok {
			f = float64(i)
		}
		if !(f >= -62135596800 && f < 253402300800) {
			return time.Time{}, fmt.Errorf("event time %v is not a Unix time between the years 1 and 9999", x)
		}
		sec := math.Floor(f)
		return time.Unix(int64(sec), int64((f-sec)*1e9)).UTC(), nil
	}
	return time.Time{}, fmt.Errorf("event time must be a string or a number, got %s", typeName(v))
}

func dropNulls(vals []any) []any {
	out := vals[:0:0]
	for _, v := range vals {
		if v != nil {
			out = append(out, v)
		}
	}
	return out
}

// normalize turns gojq's big integers into floats so every later step sees JSON-native types.
func normalize(v any) any {
	switch x := v.(type) {
	case *big.Int:
		f, _ := strconv.ParseFloat(x.String(), 64)
		return f
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	}
	return v
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case int, float64, *big.Int:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
