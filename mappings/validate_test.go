package mappings_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/mappings"
)

func serviceTemplate(t *testing.T) *mappings.CompiledTemplate {
	t.Helper()
	var tpl intake.Template
	require.NoError(t, json.Unmarshal([]byte(`{
	  "identifier": "service",
	  "schema": {
	    "properties": {
	      "name":    {"type": "string", "minLength": 2, "maxLength": 10},
	      "url":     {"type": "string", "format": "url"},
	      "owner":   {"type": "string", "format": "email"},
	      "seen":    {"type": "string", "format": "date-time"},
	      "ip":      {"type": "string", "format": "ipv4"},
	      "tier":    {"type": "integer", "minimum": 1, "maximum": 3},
	      "score":   {"type": "number"},
	      "lang":    {"type": "string", "enum": ["Go", "Java"]},
	      "code":    {"type": "string", "pattern": "^[A-Z]{3}$"},
	      "on":      {"type": "boolean", "default": true},
	      "tags":    {"type": "array", "items": {"type": "string"}},
	      "meta":    {"type": "object"}
	    },
	    "required": ["name"]
	  }
	}`), &tpl))
	ct, err := mappings.CompileTemplate(&tpl, nil)
	require.NoError(t, err)
	return ct
}

func TestTemplateValidation(t *testing.T) {
	ct := serviceTemplate(t)
	tests := []struct {
		name     string
		props    map[string]any
		required bool
		want     string // "" = valid
	}{
		{"every type and format valid", map[string]any{"name": "api", "url": "https://x.io/a", "owner": "a@b.io", "seen": "2026-01-02T03:04:05Z", "ip": "10.0.0.1", "tier": 2, "score": 1.5, "lang": "Go", "code": "ABC", "on": false, "tags": []any{"a"}, "meta": map[string]any{"k": 1}}, true, ""},
		{"maximum names property and rule", map[string]any{"tier": 7}, false, "property 'tier': 7 is greater than maximum 3"},
		{"minimum", map[string]any{"tier": 0}, false, "property 'tier': 0 is less than minimum 1"},
		{"integer rejects fractions", map[string]any{"tier": 1.5}, false, "property 'tier': expected integer"},
		{"string type", map[string]any{"name": 5}, false, "property 'name': expected string, got number"},
		{"boolean type", map[string]any{"on": "yes"}, false, "property 'on': expected boolean"},
		{"array items", map[string]any{"tags": []any{1}}, false, "property 'tags.0': expected string"},
		{"url format", map[string]any{"url": "not a url"}, false, "property 'url': \"not a url\" is not a valid url"},
		{"email format", map[string]any{"owner": "nobody"}, false, "is not a valid email"},
		{"date-time format", map[string]any{"seen": "yesterday"}, false, "is not a valid date-time"},
		{"ipv4 format", map[string]any{"ip": "300.1.1.1"}, false, "is not a valid ipv4"},
		{"enum", map[string]any{"lang": "Rust"}, false, "property 'lang': \"Rust\" is not one of [\"Go\",\"Java\"]"},
		{"pattern", map[string]any{"code": "abc"}, false, "does not match pattern"},
		{"minLength", map[string]any{"name": "a"}, false, "property 'name': length 1 is shorter than minLength 2"},
		{"maxLength", map[string]any{"name": "abcdefghijkl"}, false, "longer than maxLength 10"},
		{"required checked on the full entity", map[string]any{"tier": 1}, true, "property 'name' is required"},
		{"required not checked on a partial (merge) entity", map[string]any{"tier": 1}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ct.Validate(tt.props, tt.required)
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
	assert.Equal(t, map[string]any{"on": true}, ct.Defaults)
}

// date-time is RFC 3339, and also the ±hhmm offsets without a colon that SonarQube and CircleCI send.
func TestDateTimeFormat(t *testing.T) {
	ct := serviceTemplate(t)
	for _, ok := range []string{
		"2025-11-02T06:03:25Z", "2025-11-02T06:03:25.333Z", "2025-11-02T06:03:25+00:00", "2025-11-02T06:03:25-07:30",
		"2025-11-02t06:03:25z", "2016-12-31T23:59:60Z", // RFC 3339 allows lower case and leap seconds
		"2025-11-02T06:03:25+0000", "2025-11-02T06:03:25.123+0100", "2025-11-02T01:03:25-0500",
	} {
		assert.NoError(t, ct.Validate(map[string]any{"seen": ok}, false), ok)
	}
	for _, bad := range []string{
		"yesterday", "2025-11-02", "2025-11-02 06:03:25Z", "2025-11-02T06:03:25", "2025-11-02T06:03+0000",
		"2025-11-02T06:03:25+000", "2025-11-02T06:03:25+00000", "2025-11-02T06:03:25+2400", "2025-11-02T06:03:25+0060",
		"2025-13-02T06:03:25+0000", "2025-11-02T25:03:25+0000", "2025-11-02T06:03:25+00:00:00", "2025-11-02T06:03:25Z+0000",
	} {
		err := ct.Validate(map[string]any{"seen": bad}, false)
		if assert.Error(t, err, bad) {
			assert.Contains(t, err.Error(), "property 'seen': \""+bad+"\" is not a valid date-time")
		}
	}
}

func TestTemplateCompileRejectsUnknownTypesFormatsAndTargets(t *testing.T) {
	var tpl intake.Template
	require.NoError(t, json.Unmarshal([]byte(`{"identifier":"x","schema":{"properties":{"a":{"type":"strin"},"b":{"type":"string","format":"uri-ish"}},"required":["zz"]},"relations":{"r":{"target":"nowhere"}}}`), &tpl))
	_, err := mappings.CompileTemplate(&tpl, map[string]bool{})
	var ce *mappings.ConfigError
	require.ErrorAs(t, err, &ce)
	var fields []string
	for _, p := range ce.Problems {
		fields = append(fields, p.Field)
	}
	assert.ElementsMatch(t, []string{"schema.properties.a.type", "schema.properties.b.format", "schema.required", "relations.r.target"}, fields)
}

// A template's schema never loads another document: not a remote URL, not a local file (the
// schema library's default loader read any file:// URL), while the built-in drafts still work.
func TestTemplateSchemasLoadNothing(t *testing.T) {
	local := filepath.Join(t.TempDir(), "s.json")
	require.NoError(t, os.WriteFile(local, []byte(`{"type":"string"}`), 0o600))
	for name, prop := range map[string]string{
		"local file":      `{"type":"string","$ref":"file://` + local + `"}`,
		"remote document": `{"type":"string","$ref":"http://127.0.0.1:9/evil.json"}`,
		"remote $schema":  `{"type":"string","$schema":"http://127.0.0.1:9/meta.json"}`,
	} {
		t.Run(name, func(t *testing.T) {
			tpl := &intake.Template{Identifier: "r", Schema: intake.TemplateSchema{Properties: map[string]json.RawMessage{"a": json.RawMessage(prop)}}}
			_, err := mappings.CompileTemplate(tpl, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "templates cannot refer to other documents")
		})
	}
	tpl := &intake.Template{Identifier: "r", Schema: intake.TemplateSchema{Properties: map[string]json.RawMessage{
		"a": json.RawMessage(`{"type":"string","$schema":"https://json-schema.org/draft/2020-12/schema"}`)}}}
	_, err := mappings.CompileTemplate(tpl, nil)
	assert.NoError(t, err, "the standard metaschema is built in")
}
