package mappings

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"intake"
)

// Property types and formats a template may use.
var (
	propertyTypes   = map[string]bool{"string": true, "number": true, "integer": true, "boolean": true, "array": true, "object": true}
	propertyFormats = map[string]bool{"url": true, "email": true, "date-time": true, "ipv4": true}
)

// CompiledTemplate validates entities of one template.
type CompiledTemplate struct {
	Template *intake.Template
	partial  *jsonschema.Schema // without "required": for merge, which completes the entity first
	full     *jsonschema.Schema
	Defaults map[string]any
}

// CompileTemplate checks a template (known holds every template identifier that may be a relation
// target) and compiles its JSON Schema. The error, if any, is a *ConfigError.
func CompileTemplate(t *intake.Template, known map[string]bool) (*CompiledTemplate, error) {
	errs := &ConfigError{}
	if !intake.IDPattern.MatchString(t.Identifier) {
		errs.add("identifier", "must match %s", intake.IDPattern)
	}
	props := map[string]any{}
	defaults := map[string]any{}
	for _, name := range sortedKeys(t.Schema.Properties) {
		field := "schema.properties." + name
		var p map[string]any
		if err := unmarshalNumbers(t.Schema.Properties[name], &p); err != nil || p == nil {
			errs.add(field, "must be an object")
			continue
		}
		typ, _ := p["type"].(string)
		if !propertyTypes[typ] {
			errs.add(field+".type", "unknown type %v (want string, number, integer, boolean, array or object)", p["type"])
		}
		if f, ok := p["format"]; ok {
			if s, _ := f.(string); !propertyFormats[s] {
				errs.add(field+".format", "unknown format %v (want url, email, date-time or ipv4)", f)
			}
		}
		if d, ok := p["default"]; ok {
			defaults[name] = d
		}
		props[name] = p
	}
	for _, r := range t.Schema.Required {
		if _, ok := t.Schema.Properties[r]; !ok {
			errs.add("schema.required", "names %q, which is not a property", r)
		}
	}
	for _, name := range sortedKeys(t.Relations) {
		rel := t.Relations[name]
		if rel.Target != t.Identifier && !known[rel.Target] {
			errs.add("relations."+name+".target", "unknown template %q", rel.Target)
		}
	}
	if err := errs.orNil(); err != nil {
		return nil, err
	}
	ct := &CompiledTemplate{Template: t, Defaults: defaults}
	var err error
	if ct.partial, err = compileSchema(t.Identifier, props, nil); err == nil {
		ct.full, err = compileSchema(t.Identifier, props, t.Schema.Required)
	}
	if err != nil {
		errs.add("schema", "%v", err)
		return nil, errs
	}
	return ct, nil
}

func compileSchema(id string, props map[string]any, required []string) (*jsonschema.Schema, error) {
	doc := map[string]any{"type": "object", "properties": props}
	if len(required) > 0 {
		req := make([]any, len(required))
		for i, r := range required {
			req[i] = r
		}
		doc["required"] = req
	}
	c := jsonschema.NewCompiler()
	// A template is self-contained: the library's default loader would read any file:// URL a
	// "$ref" or "$schema" names (a local file read, or a hang on a FIFO) at write time.
	c.UseLoader(noLoader{})
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.RegisterFormat(&jsonschema.Format{Name: "url", Validate: validateURL})
	c.RegisterFormat(&jsonschema.Format{Name: "date-time", Validate: validateDateTime})
	loc := "intake:///templates/" + id + ".json"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, err
	}
	return c.Compile(loc)
}

// noLoader refuses every document a schema refers to; the standard drafts' metaschemas are
// built into the library and still load.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("templates cannot refer to other documents (%s): define the property inline", url)
}

func validateURL(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	return nil
}

// rfc3339 is the validator's own date-time check (RFC 3339 section 5.6, leap seconds included).
var rfc3339 = func() *jsonschema.Schema {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("intake:///formats/date-time.json", map[string]any{"type": "string", "format": "date-time"}); err != nil {
		panic(err)
	}
	return c.MustCompile("intake:///formats/date-time.json")
}()

// colonlessOffset is a numeric offset without its colon at the end of a date-time: +0000, -0130.
var colonlessOffset = regexp.MustCompile(`[Tt].*[0-9]([+-][0-9]{2})([0-9]{2})$`)

// validateDateTime accepts RFC 3339 and also the ±hhmm offsets without a colon that SonarQube
// and CircleCI send (2025-11-02T06:03:25+0000): such a value is judged as its RFC 3339 form.
func validateDateTime(v any) error {
	s, ok := v.(string)
	if !ok {
		return nil
	}
	if m := colonlessOffset.FindStringSubmatchIndex(s); m != nil {
		s = s[:m[2]] + s[m[2]:m[3]] + ":" + s[m[4]:]
	}
	if rfc3339.Validate(s) != nil {
		return errors.New("not an RFC 3339 date-time")
	}
	return nil
}

func unmarshalNumbers(raw json.RawMessage, v any) error {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	return d.Decode(v)
}

// Validate checks properties; withRequired also demands the template's required properties.
// The message names the property and the rule: "property 'tier': 7 is greater than maximum 3".
func (ct *CompiledTemplate) Validate(props map[string]any, withRequired bool) error {
	sch := ct.partial
	if withRequired {
		sch = ct.full
	}
	err := sch.Validate(toJSONValue(props))
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	var msgs []string
	collect(ve, &msgs)
	if len(msgs) == 0 {
		return errors.New(cut(ve.Error(), MaxMessageBytes))
	}
	// Bounded: the message travels with the entity through the workflow history (mapWith
	// counts MaxMessageBytes per entity).
	return errors.New(cut(strings.Join(msgs, "; "), MaxMessageBytes))
}

// cut shortens s to at most n bytes on a rune boundary, marking the cut with "…".
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - len("…")
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// toJSONValue gives the validator what encoding/json would produce (maps of any, []any).
func toJSONValue(props map[string]any) any {
	out := make(map[string]any, len(props))
	for k, v := range props {
		switch x := v.(type) {
		case []string:
			a := make([]any, len(x))
			for i, s := range x {
				a[i] = s
			}
			out[k] = a
		default:
			out[k] = v
		}
	}
	return out
}

func collect(ve *jsonschema.ValidationError, out *[]string) {
	if len(ve.Causes) == 0 {
		*out = append(*out, describe(ve))
		return
	}
	for _, c := range ve.Causes {
		collect(c, out)
	}
}

func describe(ve *jsonschema.ValidationError) string {
	where := "entity"
	if len(ve.InstanceLocation) > 0 {
		where = "property '" + strings.Join(ve.InstanceLocation, ".") + "'"
	}
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		return fmt.Sprintf("property '%s' is required", strings.Join(k.Missing, "', '"))
	case *kind.Type:
		return fmt.Sprintf("%s: expected %s, got %s", where, strings.Join(k.Want, " or "), k.Got)
	case *kind.Maximum:
		return fmt.Sprintf("%s: %s is greater than maximum %s", where, rat(k.Got), rat(k.Want))
	case *kind.Minimum:
		return fmt.Sprintf("%s: %s is less than minimum %s", where, rat(k.Got), rat(k.Want))
	case *kind.Enum:
		return fmt.Sprintf("%s: %s is not one of %s", where, show(k.Got), show(k.Want))
	case *kind.Format:
		return fmt.Sprintf("%s: %s is not a valid %s", where, show(k.Got), k.Want)
	case *kind.Pattern:
		return fmt.Sprintf("%s: %q does not match pattern %s", where, cut(k.Got, 64), k.Want)
	case *kind.MinLength:
		return fmt.Sprintf("%s: length %d is shorter than minLength %d", where, k.Got, k.Want)
	case *kind.MaxLength:
		return fmt.Sprintf("%s: length %d is longer than maxLength %d", where, k.Got, k.Want)
	}
	return fmt.Sprintf("%s: %s", where, strings.TrimPrefix(ve.Error(), "jsonschema validation failed with "))
}

func rat(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	f, _ := r.Float64()
	return fmt.Sprint(f)
}

func show(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return cut(fmt.Sprint(v), 80)
	}
	return cut(string(b), 80) // a long value is shown cut: the message names the rule
}
