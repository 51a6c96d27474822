package mappings_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/examples"
	"intake/mappings"
)

func exampleTemplates(t *testing.T) map[string]*intake.Template {
	t.Helper()
	tpls, err := examples.Templates()
	require.NoError(t, err)
	out := map[string]*intake.Template{}
	for i := range tpls {
		out[tpls[i].Identifier] = &tpls[i]
	}
	return out
}

func exampleProgram(t *testing.T, id string) *mappings.Program {
	t.Helper()
	ints, err := examples.Integrations()
	require.NoError(t, err)
	for _, in := range ints {
		if in.Identifier == id {
			p, err := mappings.Compile(in, exampleTemplates(t))
			require.NoError(t, err)
			return p
		}
	}
	t.Fatalf("no example integration %s", id)
	return nil
}

func run(t *testing.T, p *mappings.Program, body string, headers map[string]string) ([]intake.MappingOutcome, []intake.EntityChange) {
	t.Helper()
	var payload any
	require.NoError(t, json.Unmarshal([]byte(body), &payload))
	meta := map[string]any{"integration": p.Integration.Identifier, "topic": "identity_provider_users"}
	return p.Map(context.Background(), payload, mappings.Env{Headers: headers, Meta: meta}, exampleTemplates(t))
}

// Every JQ expression of the three example integrations, one behaviour per row.
func TestExampleMappings(t *testing.T) {
	tests := []struct {
		name        string
		integration string
		body        string
		headers     map[string]string
		filtered    bool
		want        []intake.EntityChange
		wantErr     string
	}{
		{
			name: "github created repository maps every field", integration: "github_repos",
			body: `{"action":"created","repository":{"name":"api","full_name":"org/api","private":true,"html_url":"https://github.com/org/api","stargazers_count":3,"language":"Python","updated_at":"2026-01-02T03:04:05Z","owner":{"login":"octocat"}}}`,
			want: []intake.EntityChange{{Identifier: "org_api", Title: ptr("api"),
				Properties: map[string]any{"name": "api", "url": "https://github.com/org/api", "stars": float64(3), "language": "Python", "is_public": false},
				Relations:  map[string]any{"owner": "octocat"}}},
		},
		{
			name: "github language null falls back to Unknown", integration: "github_repos",
			body: `{"action":"edited","repository":{"name":"x","full_name":"a/b/c","private":false,"html_url":"https://h/x","language":null,"owner":{"login":"o"}}}`,
			want: []intake.EntityChange{{Identifier: "a_b_c", Title: ptr("x"),
				Properties: map[string]any{"name": "x", "url": "https://h/x", "language": "Unknown", "is_public": true},
				Relations:  map[string]any{"owner": "o"}}},
		},
		{
			name: "github action deleted is filtered", integration: "github_repos",
			body: `{"action":"deleted","repository":{"full_name":"a/b"}}`, filtered: true,
		},
		{
			name: "github missing repository fails the identifier", integration: "github_repos",
			body: `{"action":"created"}`, wantErr: "mappings[0].entity.identifier",
		},
		{
			name: "sonar measures: issues from the new_violations period, loc from ncloc, repository from components[0]", integration: "sonar_webhook",
			body: `{"key":"care_back","name":"care_back","visibility":"private","lastAnalysisDate":"2025-11-02T06:03:25+0000",
			  "measures":[{"metric":"ncloc","value":"1234"},{"metric":"coverage","value":"80.1"},{"metric":"new_violations","period":{"index":1,"value":"3"}}],
			  "components":[{"key":"care_back","name":"octo-org_care_back"},{"name":"other"}]}`,
			want: []intake.EntityChange{{Identifier: "care_back", Title: ptr("care_back"),
				Properties: map[string]any{"project_name": "care_back", "last_analysis_date": "2025-11-02T06:03:25+0000", "issues_number": "3", "loc": "1234"},
				Relations:  map[string]any{"github_repository": "octo-org_care_back"}}},
		},
		{
			name: "sonar key: whitespace becomes underscores", integration: "sonar_webhook",
			body: `{"key":"my project\tv2","name":"My project","visibility":"private","measures":[]}`,
			want: []intake.EntityChange{{Identifier: "my_project_v2", Title: ptr("My project"),
				Properties: map[string]any{"project_name": "My project"}, Relations: map[string]any{}}},
		},
		{
			name: "sonar number key becomes a string; no measures or components leaves them unset", integration: "sonar_webhook",
			body: `{"key":12,"name":"P","visibility":"private","measures":[]}`,
			want: []intake.EntityChange{{Identifier: "12", Title: ptr("P"),
				Properties: map[string]any{"project_name": "P"}, Relations: map[string]any{}}},
		},
		{
			name: "sonar without a measures array fails the mapping (jq cannot iterate over null)", integration: "sonar_webhook",
			body: `{"key":"p","name":"P","visibility":"private"}`, wantErr: "mappings[0].entity.properties.issues_number: cannot iterate over: null",
		},
		{
			name: "sonar public project is filtered", integration: "sonar_webhook",
			body: `{"key":"p","name":"P","visibility":"public"}`, filtered: true,
		},
		{
			name: "sonar project without visibility is filtered", integration: "sonar_webhook",
			body: `{"key":"p","name":"P"}`, filtered: true,
		},
		{
			name: "users support groups are a many team relation", integration: "users_kafka",
			body:    `{"user_id":"u1","firstname":"Ada","lastname":"Lovelace","support_groups":[{"id":"g1","name":"G1"},{"id":"g2"}]}`,
			headers: map[string]string{"event": "create"},
			want: []intake.EntityChange{{Identifier: "u1", Title: ptr("Ada Lovelace"),
				Properties: map[string]any{"firstname": "Ada", "lastname": "Lovelace"},
				Relations:  map[string]any{"team": []string{"g1", "g2"}}}},
		},
		{
			name: "users without support groups leave the team unset", integration: "users_kafka",
			body:    `{"user_id":7,"firstname":"Grace","lastname":"Hopper","support_groups":[]}`,
			headers: map[string]string{"event": "create"},
			want: []intake.EntityChange{{Identifier: "7", Title: ptr("Grace Hopper"),
				Properties: map[string]any{"firstname": "Grace", "lastname": "Hopper"}, Relations: map[string]any{}}},
		},
		{
			name: "users header_filter drops other events", integration: "users_kafka",
			body: `{"user_id":"u1","firstname":"A","lastname":"B"}`, headers: map[string]string{"event": "update"}, filtered: true,
		},
		{
			name: "users record without an event header is filtered", integration: "users_kafka",
			body: `{"user_id":"u1","firstname":"A","lastname":"B"}`, filtered: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outcomes, changes := run(t, exampleProgram(t, tt.integration), tt.body, tt.headers)
			require.Len(t, outcomes, 1)
			assert.Equal(t, tt.filtered, outcomes[0].Filtered)
			if tt.filtered {
				assert.Empty(t, changes)
				return
			}
			if tt.wantErr != "" {
				require.Len(t, changes, 1)
				assert.True(t, changes[0].Failed())
				assert.Equal(t, intake.ErrMapping, changes[0].ErrorType)
				assert.Contains(t, changes[0].Message, tt.wantErr)
				return
			}
			require.Len(t, changes, len(tt.want))
			for i, w := range tt.want {
				got := changes[i]
				assert.False(t, got.Failed(), got.Message)
				assert.Equal(t, w.Identifier, got.Identifier)
				assert.Equal(t, w.Title, got.Title)
				assert.Equal(t, w.Properties, got.Properties)
				assert.Equal(t, w.Relations, got.Relations)
				assert.Equal(t, w.EventTime, got.EventTime)
			}
		})
	}
}

func TestMappingTopicRoutesRecords(t *testing.T) {
	p := exampleProgram(t, "users_kafka")
	var payload any
	require.NoError(t, json.Unmarshal([]byte(`{"user_id":"u1","firstname":"A","lastname":"B"}`), &payload))
	outcomes, changes := p.Map(context.Background(), payload, mappings.Env{Headers: map[string]string{"event": "create"}, Meta: map[string]any{"topic": "other.topic"}}, exampleTemplates(t))
	assert.True(t, outcomes[0].Filtered, "a record of another topic does not reach the mapping")
	assert.Empty(t, changes)
}

// event_time reads RFC 3339, the colon-less offsets SonarQube sends, and Unix seconds.
func TestEventTime(t *testing.T) {
	tpls := exampleTemplates(t)
	in := intake.Integration{Identifier: "timed", Mappings: []intake.Mapping{{
		Template: "team", EventTime: ".at", Entity: intake.EntityMapping{Identifier: ".id"},
	}}}
	p, err := mappings.Compile(in, tpls)
	require.NoError(t, err)
	for _, tc := range []struct {
		at   any
		want *time.Time
	}{
		{"2026-01-02T03:04:05Z", tptr("2026-01-02T03:04:05Z")},
		{"2026-01-02T03:04:05+0000", tptr("2026-01-02T03:04:05Z")},
		{"2026-01-02T04:04:05.5+0100", tptr("2026-01-02T03:04:05.5Z")},
		{float64(1767323045), tptr("2026-01-02T03:04:05Z")},
	} {
		_, changes := p.Map(context.Background(), map[string]any{"id": "t", "at": tc.at}, mappings.Env{}, tpls)
		require.Len(t, changes, 1)
		require.False(t, changes[0].Failed(), changes[0].Message)
		assert.Equal(t, tc.want, changes[0].EventTime, "%v", tc.at)
	}
}

func TestItemsToParseMapsEachElement(t *testing.T) {
	tpls := exampleTemplates(t)
	in := intake.Integration{Identifier: "bulk", Mappings: []intake.Mapping{{
		Template: "team", ItemsToParse: ".groups",
		Entity: intake.EntityMapping{Identifier: ".item.id", Title: ".item.name + \" (\" + .org + \")\"", Properties: map[string]string{"name": ".item.name"}},
	}}}
	p, err := mappings.Compile(in, tpls)
	require.NoError(t, err)
	var payload any
	require.NoError(t, json.Unmarshal([]byte(`{"org":"acme","groups":[{"id":"a","name":"A"},{"id":"b","name":"B"},{"name":"no id"}]}`), &payload))
	_, changes := p.Map(context.Background(), payload, mappings.Env{}, tpls)
	require.Len(t, changes, 3)
	assert.Equal(t, "a", changes[0].Identifier)
	assert.Equal(t, "A (acme)", *changes[0].Title)
	assert.Equal(t, 1, changes[1].Item)
	assert.True(t, changes[2].Failed(), "an element without id fails alone")
	assert.Contains(t, changes[2].Message, "expected a string, got null")
}

func TestExpressionsSeeHeadersAndMeta(t *testing.T) {
	tpls := exampleTemplates(t)
	in := intake.Integration{Identifier: "vars", Mappings: []intake.Mapping{{
		Template: "team", Filter: "$headers[\"x-kind\"] == \"group\"",
		Entity: intake.EntityMapping{Identifier: "$meta.integration + \"-\" + .id", Properties: map[string]string{"name": "$meta.origin"}},
	}}}
	p, err := mappings.Compile(in, tpls)
	require.NoError(t, err)
	env := mappings.Env{Headers: map[string]string{"x-kind": "group"}, Meta: map[string]any{"integration": "vars", "origin": "WEBHOOK"}}
	_, changes := p.Map(context.Background(), map[string]any{"id": "1"}, env, tpls)
	require.Len(t, changes, 1)
	assert.Equal(t, "vars-1", changes[0].Identifier)
	assert.Equal(t, "WEBHOOK", changes[0].Properties["name"])
}

func TestRuntimeErrorsAndTimeBudget(t *testing.T) {
	tpls := exampleTemplates(t)
	for name, tc := range map[string]struct{ expr, want string }{
		"runtime error names the field": {`.id | tonumber`, "mappings[0].entity.identifier"},
		"endless loop hits the budget":  {`[range(1e12)] | length | tostring`, "time budget"},
	} {
		t.Run(name, func(t *testing.T) {
			in := intake.Integration{Identifier: "x", Mappings: []intake.Mapping{{Template: "team", Entity: intake.EntityMapping{Identifier: tc.expr}}}}
			p, err := mappings.Compile(in, tpls)
			require.NoError(t, err)
			start := time.Now()
			_, changes := p.Map(context.Background(), map[string]any{"id": "abc"}, mappings.Env{Budget: 50 * time.Millisecond}, tpls)
			require.Len(t, changes, 1)
			assert.True(t, changes[0].Failed())
			assert.Contains(t, changes[0].Message, tc.want)
			assert.Less(t, time.Since(start), 5*time.Second)
		})
	}
}

func TestCompileListsEveryProblem(t *testing.T) {
	in := intake.Integration{
		Identifier: "bad id!",
		Source:     &intake.Source{Kind: "ftp"},
		Security:   &intake.Security{Scheme: "md5", SignatureHeaderName: "X"},
		Mappings: []intake.Mapping{{
			Template: "github_repository", Operation: "upsertt", UpdateMode: "patch",
			Entity: intake.EntityMapping{Identifier: ".a |", Properties: map[string]string{"url": ".x | (", "nope": ".y"}, Relations: map[string]string{"ghost": ".z"}},
		}, {Template: "missing", Entity: intake.EntityMapping{Identifier: ".id"}}},
	}
	_, err := mappings.Compile(in, exampleTemplates(t))
	var ce *mappings.ConfigError
	require.ErrorAs(t, err, &ce)
	fields := map[string]bool{}
	for _, p := range ce.Problems {
		fields[p.Field] = true
	}
	for _, f := range []string{"identifier", "source.kind", "security.scheme", "mappings[0].operation", "mappings[0].update_mode",
		"mappings[0].entity.identifier", "mappings[0].entity.properties.url", "mappings[0].entity.properties.nope",
		"mappings[0].entity.relations.ghost", "mappings[1].template"} {
		assert.True(t, fields[f], "expected a problem for %s, got %v", f, ce.Problems)
	}
	assert.Equal(t, "identifier", ce.Problems[0].Field, "message points at the first bad field")
}

func ptr(s string) *string { return &s }

func tptr(s string) *time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return &t
}
