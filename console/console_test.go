package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake/console"
)

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	resp := rec.Result()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(b)
}

func TestConsolePages(t *testing.T) {
	c, err := console.New(console.Options{TemporalUI: "http://ui.example:8233", Namespace: "default"})
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		path  string
		code  int
		title string
	}{
		"overview at the root":          {"/console/", 200, "Overview"},
		"sign-in page":                  {"/console/login", 200, "Sign in"},
		"deliveries with filters":       {"/console/deliveries?status=failed", 200, "Deliveries"},
		"one delivery":                  {"/console/deliveries/sonar_webhook.01abc", 200, "Delivery"},
		"a bulk replay":                 {"/console/replays/bulk-replay.01abc", 200, "Bulk replay"},
		"audit log":                     {"/console/audit", 200, "Audit log"},
		"integrations":                  {"/console/integrations", 200, "Integrations"},
		"one integration":               {"/console/integrations/sonar_webhook", 200, "Integration"},
		"templates":                     {"/console/templates", 200, "Templates"},
		"one template":                  {"/console/templates/sonar_project", 200, "Template"},
		"playground":                    {"/console/playground?integration=x", 200, "Mapping playground"},
		"an unknown page is a 404 page": {"/console/nothing/here", 404, "Not found"},
	} {
		t.Run(name, func(t *testing.T) {
			resp, body := get(t, c, tc.path)
			assert.Equal(t, tc.code, resp.StatusCode)
			assert.Contains(t, body, "<title>"+tc.title+" · intake console</title>")
			assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
			assert.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
			assert.Contains(t, body, `data-temporal-ui="http://ui.example:8233"`)
			assert.Contains(t, body, `<script src="/console/static/console.js?v=`)
		})
	}
}

func TestConsoleEscapesTheIDInTheURL(t *testing.T) {
	c, err := console.New(console.Options{})
	require.NoError(t, err)
	_, body := get(t, c, `/console/deliveries/%3Cscript%3Ealert(1)%3C%2Fscript%3E`)
	assert.NotContains(t, body, "<script>alert(1)")
	assert.Contains(t, body, "&lt;script&gt;alert(1)&lt;/script&gt;")
}

func TestConsoleAssets(t *testing.T) {
	c, err := console.New(console.Options{})
	require.NoError(t, err)
	for _, name := range []string{"console.js", "console.css"} {
		resp, body := get(t, c, "/console/static/"+name+"?v=1")
		assert.Equal(t, 200, resp.StatusCode, name)
		assert.Contains(t, resp.Header.Get("Cache-Control"), "immutable")
		assert.NotEmpty(t, body)
	}
	_, js := get(t, c, "/console/static/console.js")
	for _, sink := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		assert.False(t, strings.Contains(js, sink), "data is written as text only: no %s", sink)
	}
	assert.Greater(t, console.AssetBytes(), 10_000)
	assert.True(t, strings.HasPrefix(js, "// intake console"))
}
