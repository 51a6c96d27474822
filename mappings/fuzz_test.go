package mappings_test

import (
	"context"
	"encoding/json"
	"testing"

	"intake"
	"intake/mappings"
)

// FuzzCompileAndRun: any expression either is refused at write time with a field-named error or
// compiles and runs within its budget without panicking, whatever the payload.
func FuzzCompileAndRun(f *testing.F) {
	f.Add(".id", `{"id":"x"}`)
	f.Add("[range(1e9)] | length", `{}`)
	f.Add("def f: f; f", `{}`)
	f.Add(".a | (", `null`)
	f.Add(`.items[] | select(.x == "y") | .z`, `{"items":[{"x":"y","z":1}]}`)
	tpl := &intake.Template{Identifier: "t", Schema: intake.TemplateSchema{Properties: map[string]json.RawMessage{"p": json.RawMessage(`{"type":"string"}`)}}}
	f.Fuzz(func(t *testing.T, expr, body string) {
		in := intake.Integration{Identifier: "fz", Mappings: []intake.Mapping{{Template: "t",
			Entity: intake.EntityMapping{Identifier: expr, Properties: map[string]string{"p": expr}}}}}
		p, err := mappings.Compile(in, map[string]*intake.Template{"t": tpl})
		if err != nil {
			return
		}
		var payload any
		if json.Unmarshal([]byte(body), &payload) != nil {
			return
		}
		_, _ = p.Map(context.Background(), payload, mappings.Env{Budget: 20e6}, map[string]*intake.Template{"t": tpl})
	})
}
