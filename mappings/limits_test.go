package mappings_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/mappings"
)

func TestEntitiesPerDeliveryAreCapped(t *testing.T) {
	tpl := &intake.Template{Identifier: "t", Schema: intake.TemplateSchema{Properties: map[string]json.RawMessage{}}}
	in := intake.Integration{Identifier: "many", Mappings: []intake.Mapping{{Template: "t", ItemsToParse: ".items",
		Entity: intake.EntityMapping{Identifier: ".item"}}}}
	p, err := mappings.Compile(in, map[string]*intake.Template{"t": tpl})
	require.NoError(t, err)
	items := func(n int) any {
		list := make([]any, n)
		for i := range list {
			list[i] = strings.Repeat("x", 1+i%7) + string(rune('a'+i%26))
		}
		return map[string]any{"items": list}
	}
	templates := map[string]*intake.Template{"t": tpl}

	_, changes := p.Map(context.Background(), items(10), mappings.Env{MaxEntities: 10}, templates)
	assert.Len(t, changes, 10, "at the cap: mapped")

	_, changes = p.Map(context.Background(), items(11), mappings.Env{MaxEntities: 10}, templates)
	require.Len(t, changes, 1, "over the cap: one failure instead of the entities")
	assert.True(t, changes[0].Failed())
	assert.Equal(t, intake.ErrMapping, changes[0].ErrorType)
	assert.Contains(t, changes[0].Message, "more than 10 entities")

	_, changes = p.Map(context.Background(), items(1001), mappings.Env{}, templates)
	require.Len(t, changes, 1, "the default cap is 1,000")
	assert.True(t, changes[0].Failed())
}

// What hostile JQ or payloads make a mapping yield is bounded, so it fails with a MappingError at
// once instead of allocating gigabytes or blocking the delivery's workflow (hostile-input tests).
func TestMappedValuesAreBounded(t *testing.T) {
	tpl := &intake.Template{Identifier: "t", Schema: intake.TemplateSchema{Properties: map[string]json.RawMessage{
		"s": json.RawMessage(`{"type":"string"}`), "o": json.RawMessage(`{"type":"object"}`), "n": json.RawMessage(`{"type":"number"}`)}}}
	templates := map[string]*intake.Template{"t": tpl}
	run := func(t *testing.T, prop, expr string, payload any, env mappings.Env) intake.EntityChange {
		t.Helper()
		in := intake.Integration{Identifier: "lim", Mappings: []intake.Mapping{{Template: "t",
			Entity: intake.EntityMapping{Identifier: `"x"`, Properties: map[string]string{prop: expr}}}}}
		p, err := mappings.Compile(in, templates)
		require.NoError(t, err)
		_, changes := p.Map(context.Background(), payload, env, templates)
		require.Len(t, changes, 1)
		return changes[0]
	}
	for _, tc := range []struct{ name, prop, expr, want string }{
		{"a string repeated past the limit is refused before it is built", "s", `"x" * 1e9`, "product would be over the size limit"},
		{"so is *=", "s", `"x" | . *= 1e9`, "product would be over the size limit"},
		{"an integer product of more than 65536 bits", "n", `reduce range(20) as $i (100000000000000000000; . * .)`, "integer of more than"},
		{"a value over 2 MiB", "s", `"x" * 2e6 | [., ., .]`, "yields more than"},
		{"a sparse array grown by one index", "s", `null | .[1e7] = 1`, "yields more than"},
		{"NaN", "n", `nan`, "NaN or infinite"},
		{"infinity", "n", `infinite`, "NaN or infinite"},
		{"a value nested past MongoDB's depth", "o", `reduce range(60) as $i (1; {a: .})`, "nested more than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A generous budget: each of these is stopped by a size limit, never by the clock.
			c := run(t, tc.prop, tc.expr, map[string]any{}, mappings.Env{Budget: 10 * time.Second})
			require.True(t, c.Failed(), "%+v", c)
			assert.Equal(t, intake.ErrMapping, c.ErrorType)
			assert.Contains(t, c.Message, tc.want)
			_, err := json.Marshal(c)
			assert.NoError(t, err, "the failed change still encodes (it travels through the history)")
		})
	}
	t.Run("multiplication keeps gojq's meaning", func(t *testing.T) {
		for expr, want := range map[string]any{
			`"ab" * 3`: "ababab", `3 * "ab"`: "ababab", `"ab" * 0 | tostring`: "", `2 * 3 | tostring`: "6",
			`{"a":{"b":1}} * {"a":{"c":2}} | tojson`: `{"a":{"b":1,"c":2}}`, `[(1,2) * (10,20)] | tojson`: "[10,20,20,40]",
			`.v *= 2 | .v | tostring`: "8", `def m(f): f * 2; m(5) | tostring`: "10", `"\(2 * 2)"`: "4",
			`reduce (1,2,3) as $x (1; . * $x) | tostring`: "6", `try ("a" * {}) catch "error"`: "error",
		} {
			c := run(t, "s", expr, map[string]any{"v": 4}, mappings.Env{})
			require.False(t, c.Failed(), "%s: %s", expr, c.Message)
			assert.Equal(t, want, c.Properties["s"], expr)
		}
	})
	t.Run("the entities of one delivery fit its history payload", func(t *testing.T) {
		c := run(t, "s", `"x" * 600000`, map[string]any{}, mappings.Env{MaxBytes: 500000})
		require.True(t, c.Failed())
		assert.Contains(t, c.Message, "the delivery maps to more than 500000 bytes")
		c = run(t, "s", `"x" * 400000`, map[string]any{}, mappings.Env{MaxBytes: 500000})
		assert.False(t, c.Failed(), c.Message)
		// HTML characters count as encoding/json escapes them (\u003c is 6 bytes).
		c = run(t, "s", `"<" * 100000`, map[string]any{}, mappings.Env{MaxBytes: 500000})
		assert.True(t, c.Failed(), "600 kB once encoded")
	})
	t.Run("event times outside what JSON can write", func(t *testing.T) {
		in := intake.Integration{Identifier: "lim", Mappings: []intake.Mapping{{Template: "t", EventTime: ".at",
			Entity: intake.EntityMapping{Identifier: `"x"`}}}}
		p, err := mappings.Compile(in, templates)
		require.NoError(t, err)
		_, changes := p.Map(context.Background(), map[string]any{"at": 1e18}, mappings.Env{}, templates)
		require.Len(t, changes, 1)
		assert.True(t, changes[0].Failed())
		assert.Contains(t, changes[0].Message, "years 1 and 9999")
	})
}
