package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake/starters/webhook"
)

// ginParam turns gin's :name and *name into OpenAPI's {name}.
var ginParam = regexp.MustCompile(`[:*]([A-Za-z_]+)`)

// routes lists "METHOD /path" of every route the router serves, in OpenAPI's path syntax.
func routes(t *testing.T) []string {
	g := Router(&Server{}, &webhook.Receiver{})
	var out []string
	for _, r := range g.Routes() {
		out = append(out, r.Method+" "+ginParam.ReplaceAllString(r.Path, "{$1}"))
	}
	sort.Strings(out)
	return out
}

// described lists "METHOD /path" of every operation of the description.
func described(t *testing.T) []string {
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(OpenAPI, &doc))
	var out []string
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				out = append(out, strings.ToUpper(method)+" "+path)
			}
		}
	}
	sort.Strings(out)
	return out
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	served, doc := routes(t), described(t)
	require.NotEmpty(t, served)
	// The console's pages are HTML for people, not part of the API.
	var api []string
	for _, r := range served {
		if !strings.Contains(r, " /console") {
			api = append(api, r)
		}
	}
	assert.Equal(t, api, doc, "every route served is described and every described route is served")
}

func TestOpenAPIIsAValidDocument(t *testing.T) {
	d, err := libopenapi.NewDocument(OpenAPI)
	require.NoError(t, err)
	assert.Equal(t, "3.1.0", d.GetVersion())
	v, errs := validator.NewValidator(d)
	require.Empty(t, errs)
	ok, verrs := v.ValidateDocument()
	for _, e := range verrs {
		t.Errorf("%s: %s", e.Message, e.Reason)
	}
	assert.True(t, ok)
}

func TestOpenAPIIsServedOpen(t *testing.T) {
	g := Router(&Server{}, nil)
	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/openapi.json", nil))
	require.Equal(t, http.StatusOK, rec.Code, "no token needed")
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	assert.JSONEq(t, string(OpenAPI), rec.Body.String())
}

// The conformance test in tests/ can fail: an answer with a field the description does not have,
// without a required one, or with a status it does not list, is refused.
func TestOpenAPIValidationRefusesUndescribedAnswers(t *testing.T) {
	d, err := libopenapi.NewDocument(OpenAPI)
	require.NoError(t, err)
	v, errs := validator.NewValidator(d)
	require.Empty(t, errs)
	entity := `{"identifier":"b","template":"a","properties":{},"relations":{"team":"x"},` +
		`"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"`
	for _, row := range []struct {
		name   string
		status int
		body   string
		valid  bool
	}{
		{"as described", 200, entity + `}`, true},
		{"a field the description does not have", 200, entity + `,"surprise":1}`, false},
		{"a required field missing", 200, `{"identifier":"b"}`, false},
		{"the error shape", 404, `{"error":"not_found","message":"entity a/b not found","details":null}`, true},
		{"an error without details", 404, `{"error":"not_found","message":"m"}`, false},
		{"a status not described", 418, `{"error":"teapot","message":"m","details":null}`, false},
	} {
		t.Run(row.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "/api/v1/entities/a/b", nil)
			req.Header.Set("Authorization", "Bearer t")
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Type", "application/json; charset=utf-8")
			rec.WriteHeader(row.status)
			rec.WriteString(row.body)
			ok, verrs := v.ValidateHttpResponse(req, rec.Result())
			assert.Equal(t, row.valid, ok, "%v", verrs)
		})
	}
}
