package examples_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/examples"
	"intake/mappings"
)

// The seed's integrations are shipped as the seed prints them (github_repos adds one line).
func TestIntegrationsAreTheSeedsText(t *testing.T) {
	seeds, _ := filepath.Glob("../../shared/seeds/000_*.txt")
	if len(seeds) == 0 {
		t.Skip("seed 000 not found beside the repository (../shared/seeds)")
	}
	raw, err := os.ReadFile(seeds[0])
	require.NoError(t, err)
	seed := string(raw)
	for id, addition := range map[string]string{
		"sonar_webhook": "",
		"users_kafka":   "",
		"github_repos":  "\"create_missing_related_entities\": true,\n",
	} {
		t.Run(id, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("integrations", id+".json"))
			require.NoError(t, err)
			text := strings.TrimSuffix(string(b), "\n")
			if addition != "" {
				require.Equal(t, 1, strings.Count(text, addition))
				text = strings.Replace(text, addition, "", 1)
			}
			assert.Contains(t, seed, text, "examples/integrations/%s.json is not the seed's text", id)
		})
	}
}

// Every sample names an example integration, compiles against the example templates and maps
// to the entities it expects (the store's part, relations and audit, is checked end to end).
func TestSamplesFitTheirIntegrations(t *testing.T) {
	tpls, err := examples.Templates()
	require.NoError(t, err)
	byID := map[string]*intake.Template{}
	for i := range tpls {
		byID[tpls[i].Identifier] = &tpls[i]
	}
	ints, err := examples.Integrations()
	require.NoError(t, err)
	progs := map[string]*mappings.Program{}
	for _, in := range ints {
		p, err := mappings.Compile(in, byID)
		require.NoError(t, err, in.Identifier)
		progs[in.Identifier] = p
	}
	samples, err := examples.Samples()
	require.NoError(t, err)
	for _, smp := range samples {
		t.Run(smp.Name, func(t *testing.T) {
			p := progs[smp.Integration]
			require.NotNil(t, p, "unknown integration %s", smp.Integration)
			var body any
			require.NoError(t, json.Unmarshal(smp.Body, &body))
			headers := map[string]string{}
			for k, v := range smp.Headers {
				headers[strings.ToLower(k)] = v
			}
			meta := map[string]any{"integration": smp.Integration}
			if smp.Topic != "" {
				meta["topic"] = smp.Topic
			}
			outcomes, changes := p.Map(context.Background(), body, mappings.Env{Headers: headers, Meta: meta}, byID)
			filtered := true
			for _, o := range outcomes {
				filtered = filtered && o.Filtered
			}
			assert.Equal(t, smp.Expect.Outcome == intake.DeliveryFiltered, filtered)
			for _, c := range changes {
				assert.False(t, c.Failed(), c.Message)
				if ct := byID[c.Template]; ct != nil {
					compiled, err := mappings.CompileTemplate(ct, map[string]bool{"github_repository": true, "github_user": true, "team": true})
					require.NoError(t, err)
					assert.NoError(t, compiled.Validate(c.Properties, false))
				}
			}
			for _, want := range smp.Expect.Entities {
				for _, c := range changes {
					if c.Template != want.Template || c.Identifier != want.Identifier {
						continue
					}
					for k, v := range want.Properties {
						assert.EqualValues(t, v, c.Properties[k], "property %s", k)
					}
				}
			}
		})
	}
}
