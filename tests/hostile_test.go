package tests

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"

	"intake"
)

// hostileAnswer is one HTTP answer, kept whole: status, headers and raw body.
type hostileAnswer struct {
	status int
	header http.Header
	body   []byte
	took   time.Duration
}

func (a hostileAnswer) json(t *testing.T) map[string]any {
	t.Helper()
	var out map[string]any
	require.NoError(t, json.Unmarshal(a.body, &out), "answer %d: %.300s", a.status, a.body)
	return out
}

// hostileRow is one hostile request and what the product must answer. Every row also checks:
// no 5xx, an error answer in the one shape {"error","message","details"} (unless plain: net/http
// itself answers malformed framing before any handler runs), and no secret in the answer.
type hostileRow struct {
	name  string
	send  func(t *testing.T) hostileAnswer
	want  int    // the status
	code  string // the "error" of an error answer ("" when not checked)
	plain bool
	then  func(t *testing.T, a hostileAnswer)
}

// Hostile input through the real binary: bodies, framing, signature headers, identifiers, admin
// writes, hostile JQ, list parameters and dry runs. No row may get a 5xx, crash or hang the
// process, or leak a secret; afterwards the process is ready and a normal delivery still works.
func TestHostileInput(t *testing.T) {
	began := time.Now()
	s := startDev(t)
	// No keep-alive: several rows make the server close the connection (431, broken framing).
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Minute}

	// Integrations with known secrets: the example's HMAC secret, a static one, and one with
	// hydration credentials. None of them may ever appear in an answer or a log line.
	const (
		staticSecret = "hostile-static-s3cret"
		credSecret   = "hostile-cred-s3cret"
		hookSecret   = "hostile-hook-s3cret"
	)
	gh := exampleSecurity(t, "github_repos")
	require.Equal(t, "sha256=your-webhook-secret", gh.SignatureValue)
	key, err := os.ReadFile(filepath.Join(s.dir, ".intake", "secret-key"))
	require.NoError(t, err)
	secrets := []string{"your-webhook-secret", staticSecret, credSecret, hookSecret, s.token, strings.TrimSpace(string(key))}

	putIntegration(t, s, `{"identifier":"hostile_static","security":{"scheme":"static","signature_header_name":"X-Token","signature_value":"`+staticSecret+`"},
	  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
	putIntegration(t, s, `{"identifier":"hostile_creds","security":{"scheme":"static","signature_header_name":"X-Token","signature_value":"`+hookSecret+`"},
	  "credentials":{"api_token":"Bearer `+credSecret+`"},
	  "hydration":{"url":"https://api.example.invalid/users/{id}","id_path":".id","event_path":".event","delete_events":["DELETE"],
	    "headers":{"Authorization":"secret:api_token"},"timeout":"2s"},
	  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
	code, _ := s.request("PUT", "/api/v1/templates/hostile_doc", []byte(`{"schema":{"properties":{
	  "doc":{"type":"object"},"list":{"type":"array"},"name":{"type":"string"}}}}`), true, nil)
	require.Equal(t, 201, code)
	putIntegration(t, s, `{"identifier":"hostile_open","security":{"scheme":"none","allow_unsigned":true},
	  "mappings":[{"template":"hostile_doc","entity":{"identifier":".id","properties":{"doc":".doc","list":".list","name":".name"}}}]}`)
	// Hostile JQ as mappings: accepted at write time (it is valid JQ), bounded when it runs.
	jq := func(id, expr string) {
		doc, err := json.Marshal(map[string]any{"identifier": id, "security": map[string]any{"scheme": "none", "allow_unsigned": true},
			"mappings": []any{map[string]any{"template": "team", "entity": map[string]any{"identifier": ".id", "properties": map[string]any{"name": expr}}}}})
		require.NoError(t, err)
		putIntegration(t, s, string(doc))
	}
	jq("jq_loop", "def f: f; f")
	jq("jq_range", "[range(1e9)]")
	jq("jq_repeat", `"x" * 1e9`)
	jq("jq_sparse", "null | .[1e7] = 1")
	jq("jq_wide", `"x" * 2e6 | [., .]`)
	jq("jq_nan", "nan")
	putIntegration(t, s, `{"identifier":"jq_key","security":{"scheme":"none","allow_unsigned":true},"request_identifier":"\"x\" * 1e9",
	  "mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)

	// send makes one request; path is sent exactly as written (no cleaning, no re-encoding).
	send := func(t *testing.T, method, path string, body io.Reader, header http.Header, admin bool) hostileAnswer {
		t.Helper()
		req, err := http.NewRequest(method, s.base+"/", body)
		require.NoError(t, err)
		req.URL.Opaque = path
		if b, ok := body.(*bytes.Reader); ok {
			req.ContentLength = int64(b.Len())
		}
		for k, vs := range header {
			req.Header[k] = vs
		}
		if admin {
			req.Header.Set("Authorization", "Bearer "+s.token)
		}
		start := time.Now()
		resp, err := client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return hostileAnswer{status: resp.StatusCode, header: resp.Header, body: raw, took: time.Since(start)}
	}
	// raw writes bytes on a fresh connection and reads the first answer.
	raw := func(t *testing.T, data []byte, closeWrite bool) hostileAnswer {
		t.Helper()
		conn, err := net.Dial("tcp", s.addr("http"))
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
		start := time.Now()
		_, err = conn.Write(data)
		require.NoError(t, err)
		if closeWrite {
			require.NoError(t, conn.(*net.TCPConn).CloseWrite())
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return hostileAnswer{status: resp.StatusCode, header: resp.Header, body: b, took: time.Since(start)}
	}
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = append(out[kv[i]], kv[i+1])
		}
		return out
	}
	signed := func(body []byte, kv ...string) http.Header {
		out := h(kv...)
		for k, v := range sign(gh, body, nil) {
			out.Set(k, v)
		}
		return out
	}
	hook := func(integration string, body []byte, header http.Header) func(t *testing.T) hostileAnswer {
		return func(t *testing.T) hostileAnswer {
			return send(t, "POST", "/webhooks/"+integration, bytes.NewReader(body), header, false)
		}
	}
	gitHub := func(body []byte, kv ...string) func(t *testing.T) hostileAnswer {
		return hook("github_repos", body, signed(body, kv...))
	}
	get := func(path string) func(t *testing.T) hostileAnswer {
		return func(t *testing.T) hostileAnswer { return send(t, "GET", path, nil, nil, true) }
	}
	adminSend := func(method, path string, body []byte) func(t *testing.T) hostileAnswer {
		return func(t *testing.T) hostileAnswer { return send(t, method, path, bytes.NewReader(body), nil, true) }
	}
	// settles waits for an accepted delivery's workflow: it must end (never hang) as wanted:
	// errType "" for success, else the failure's type and a part of its message (parts
	// separated by | are alternatives).
	settles := func(outcome, errType, message string) func(t *testing.T, a hostileAnswer) {
		return func(t *testing.T, a hostileAnswer) {
			wid, _ := a.json(t)["workflow_id"].(string)
			require.NotEmpty(t, wid)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var res intake.IngestResult
			err := s.temporal.GetWorkflow(ctx, wid, "").Get(ctx, &res)
			require.NoError(t, ctx.Err(), "workflow %s did not end within 30 s (a stuck delivery)", wid)
			if errType == "" {
				require.NoError(t, err)
				assert.Equal(t, outcome, res.Outcome)
				return
			}
			var appErr *temporal.ApplicationError
			require.True(t, errors.As(err, &appErr), "%v", err)
			assert.Equal(t, errType, appErr.Type())
			ok := false
			for _, m := range strings.Split(message, "|") {
				ok = ok || strings.Contains(appErr.Message(), m)
			}
			assert.True(t, ok, "%q says none of %q", appErr.Message(), message)
		}
	}
	failsMapping := func(message string) func(t *testing.T, a hostileAnswer) {
		return settles(intake.DeliveryFailed, intake.ErrMapping, message)
	}
	succeeds := settles(intake.DeliverySucceeded, "", "")
	message := func(want string) func(t *testing.T, a hostileAnswer) {
		return func(t *testing.T, a hostileAnswer) { assert.Contains(t, a.json(t)["message"], want) }
	}
	repo := func(fullName, name string) []byte {
		b, err := json.Marshal(map[string]any{"action": "created", "repository": map[string]any{"full_name": fullName, "name": name,
			"html_url": "https://github.com/" + fullName, "private": false, "owner": map[string]any{"login": "octocat"}}})
		require.NoError(t, err)
		return b
	}
	entity := func(template, id string, check func(t *testing.T, e intake.Entity)) func(t *testing.T, a hostileAnswer) {
		return func(t *testing.T, a hostileAnswer) {
			succeeds(t, a)
			var e intake.Entity
			code, _ := s.request("GET", "/api/v1/entities/"+template+"/"+id, nil, true, &e)
			require.Equal(t, 200, code)
			check(t, e)
		}
	}
	dryRun := func(integration any, body string) []byte {
		b, err := json.Marshal(map[string]any{"integration": integration, "body": json.RawMessage(body)})
		require.NoError(t, err)
		return b
	}
	unsaved := func(expr string) map[string]any {
		return map[string]any{"identifier": "dry", "security": map[string]any{"scheme": "none", "allow_unsigned": true},
			"mappings": []any{map[string]any{"template": "team", "entity": map[string]any{"identifier": ".id", "properties": map[string]any{"name": expr}}}}}
	}
	dryRunEntity := func(wantType, wantMessage string) func(t *testing.T, a hostileAnswer) {
		return func(t *testing.T, a hostileAnswer) {
			out := a.json(t)
			assert.Equal(t, false, out["valid"])
			ents, _ := out["entities"].([]any)
			require.Len(t, ents, 1, "%.300s", a.body)
			e := ents[0].(map[string]any)
			assert.Equal(t, wantType, e["error_type"])
			assert.Contains(t, e["message"], wantMessage)
			assert.Less(t, a.took, 10*time.Second)
		}
	}
	// A remote schema document that must never be fetched.
	var schemaFetches atomic.Int32
	remote := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		schemaFetches.Add(1)
		_, _ = w.Write([]byte(`{"type":"string"}`))
	}))
	defer remote.Close()

	deep := func(n int, open, close string) string {
		return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
	}
	big := append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), 1<<20)...), `"}`...)
	longHeader := strings.Repeat("a", 70<<10)
	smallBody := repo("o/small", "small")
	var accepted []string // every delivery_id a row got accepted, to check none stays "accepted"

	rows := []hostileRow{
		// bodies
		{name: "invalid JSON is 400 invalid_json", send: gitHub([]byte(`{not json`)), want: 400, code: "invalid_json"},
		{name: "invalid UTF-8 inside a JSON string is 400 and recorded byte for byte (base64)",
			send: gitHub([]byte("{\"a\":\"\xff\"}")), want: 400, code: "invalid_json",
			then: func(t *testing.T, a hostileAnswer) {
				out := a.json(t)
				assert.Equal(t, "body is not valid UTF-8", out["message"])
				id := out["details"].(map[string]any)["delivery_id"].(string)
				var d intake.DeliveryRecord
				code, _ := s.request("GET", "/api/v1/deliveries/"+id, nil, true, &d)
				require.Equal(t, 200, code)
				assert.Equal(t, intake.DeliveryFailed, d.Status)
				assert.Equal(t, intake.BodyBase64, d.BodyEncoding)
				rawBody, err := d.RawBody()
				require.NoError(t, err)
				assert.Equal(t, "{\"a\":\"\xff\"}", string(rawBody))
			}},
		{name: "100,000 nested [ are 400, not a stack overflow", send: gitHub([]byte(strings.Repeat("[", 100_000))), want: 400, code: "invalid_json"},
		{name: "9,000 nested arrays are JSON: accepted, then a MappingError (the filter wants an object)",
			send: gitHub([]byte(deep(9000, "[", "]"))), want: 202, then: failsMapping("expected an object")},
		{name: "a body of 1 MiB + 1 byte is 413 (before the signature)", send: hook("github_repos", big[:1<<20+1], nil), want: 413, code: "body_too_large"},
		{name: "a chunked body over 1 MiB, no length, is 413", want: 413, code: "body_too_large",
			send: func(t *testing.T) hostileAnswer {
				return send(t, "POST", "/webhooks/github_repos", io.MultiReader(bytes.NewReader(big)), nil, false)
			}},
		{name: "an empty body without allow_empty_body is 400", send: gitHub(nil), want: 400, code: "invalid_json"},
		{name: "a top-level number is accepted and fails its mapping", send: gitHub([]byte(`42`)), want: 202, then: failsMapping("expected an object but got: number")},
		{name: "a top-level array is accepted and fails its mapping", send: gitHub([]byte(`[1,2]`)), want: 202, then: failsMapping("expected an object but got: array")},
		{name: "a top-level string is accepted and fails its mapping", send: gitHub([]byte(`"str"`)), want: 202, then: failsMapping("expected an object but got: string")},
		{name: "a top-level null is accepted and filtered", send: gitHub([]byte(`null`)), want: 202, then: settles(intake.DeliveryFiltered, "", "")},
		{name: "a raw NUL byte after the JSON is 400", send: gitHub([]byte("{\"a\":1}\x00")), want: 400, code: "invalid_json"},
		{name: "an escaped NUL inside a string is ordinary JSON and is stored",
			send: gitHub(repo("o/nul", "a\x00b")), want: 202,
			then: entity("github_repository", "o_nul", func(t *testing.T, e intake.Entity) { assert.Equal(t, "a\x00b", e.Properties["name"]) })},
		{name: "a 200 kB string is stored whole", send: gitHub(repo("o/big", strings.Repeat("b", 200_000))), want: 202,
			then: entity("github_repository", "o_big", func(t *testing.T, e intake.Entity) { assert.Len(t, e.Properties["name"], 200_000) })},
		{name: "a 900 kB string mapped twice fails its mapping instead of blocking its workflow on Temporal's payload limit",
			send: gitHub(repo("o/huge", strings.Repeat("h", 900_000))), want: 202, then: failsMapping("the delivery maps to more than")},
		{name: "an object key holding a NUL, a dot or a leading $ is stored and read back",
			send: hook("hostile_open", []byte(`{"id":"keys","doc":{"a\u0000b":1,"$set":2,"x.y":3}}`), nil), want: 202,
			then: entity("hostile_doc", "keys", func(t *testing.T, e intake.Entity) {
				assert.Equal(t, map[string]any{"a\x00b": 1.0, "$set": 2.0, "x.y": 3.0}, e.Properties["doc"])
			})},
		{name: "arrays in arrays (GeoJSON coordinates) are stored and read back",
			send: hook("hostile_open", []byte(`{"id":"geo","list":[[1,2],[3,[4,[]]]]}`), nil), want: 202,
			then: entity("hostile_doc", "geo", func(t *testing.T, e intake.Entity) {
				assert.Equal(t, []any{[]any{1.0, 2.0}, []any{3.0, []any{4.0, []any{}}}}, e.Properties["list"])
			})},
		{name: "an object nested 300 levels deep fails its mapping (MongoDB stores 100)",
			send: hook("hostile_open", []byte(`{"id":"deep","doc":`+deep(300, `{"a":`, `}`)+`}`), nil), want: 202,
			then: failsMapping("nested more than")},

		// framing
		{name: "a wrong Content-Type does not matter: the body is judged as JSON", send: gitHub(smallBody, "Content-Type", "text/plain"), want: 202},
		{name: "chunked transfer with no length is read like any body", want: 202,
			send: func(t *testing.T) hostileAnswer {
				return send(t, "POST", "/webhooks/github_repos", io.MultiReader(bytes.NewReader(smallBody)), signed(smallBody), false)
			}},
		{name: "a Content-Length shorter than the body: only that much is read (signature mismatch)", want: 401, code: "signature_invalid",
			send: func(t *testing.T) hostileAnswer {
				return raw(t, append([]byte("POST /webhooks/github_repos HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: "+
					sign(gh, smallBody, nil)["X-Hub-Signature-256"]+"\r\nContent-Length: 10\r\n\r\n"), smallBody...), false)
			}},
		{name: "a Content-Length longer than the body, then the sender hangs up: 400", want: 400, code: "bad_request",
			send: func(t *testing.T) hostileAnswer {
				return raw(t, append([]byte("POST /webhooks/github_repos HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"), smallBody...), true)
			}},
		{name: "two different Content-Lengths are refused by net/http", want: 400, plain: true,
			send: func(t *testing.T) hostileAnswer {
				return raw(t, []byte("POST /webhooks/github_repos HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"), false)
			}},
		{name: "duplicate headers are joined, the delivery is accepted",
			send: gitHub(smallBody, "X-Github-Delivery", "a", "X-Github-Delivery", "b", "Content-Type", "application/json", "Content-Type", "text/plain"), want: 202},
		{name: "a 70 KiB header is refused with 431 by net/http and the server lives on", want: 431, plain: true,
			send: gitHub(smallBody, "X-Big", longHeader)},
		{name: "a path with .. after the integration stays on that integration ($meta.path)", want: 202,
			send: func(t *testing.T) hostileAnswer {
				return send(t, "POST", "/webhooks/github_repos/../../api/v1/templates", bytes.NewReader(smallBody), signed(smallBody), false)
			}},
		{name: "percent-encoded slashes after the integration stay on that integration", want: 401, code: "signature_invalid",
			send: func(t *testing.T) hostileAnswer {
				return send(t, "POST", "/webhooks/github_repos/..%2F..%2Fapi%2Fv1%2Ftemplates", bytes.NewReader(smallBody), nil, false)
			}},
		{name: "a path that is not UTF-8 after the integration is accepted", want: 202,
			send: func(t *testing.T) hostileAnswer {
				return send(t, "POST", "/webhooks/github_repos/%ff%fe/%00", bytes.NewReader(smallBody), signed(smallBody), false)
			}},
		{name: "a GET on the webhook path is a JSON 404", send: get("/webhooks/github_repos"), want: 404, code: "not_found"},

		// signature headers
		{name: "the signature header sent twice is refused", want: 401, code: "signature_invalid",
			send: hook("github_repos", smallBody, func() http.Header {
				v := sign(gh, smallBody, nil)["X-Hub-Signature-256"]
				return h("X-Hub-Signature-256", v, "X-Hub-Signature-256", v)
			}())},
		{name: "a wrong then a right signature is refused", want: 401, code: "signature_invalid",
			send: hook("github_repos", smallBody, func() http.Header {
				return h("X-Hub-Signature-256", "sha256=00", "X-Hub-Signature-256", sign(gh, smallBody, nil)["X-Hub-Signature-256"])
			}())},
		{name: "the header name in lower case is the same header", want: 202,
			send: hook("github_repos", smallBody, h("x-hub-signature-256", sign(gh, smallBody, nil)["X-Hub-Signature-256"]))},
		{name: "the hex digest in upper case is accepted", want: 202,
			send: hook("github_repos", smallBody, h("X-Hub-Signature-256", "sha256="+strings.ToUpper(strings.TrimPrefix(sign(gh, smallBody, nil)["X-Hub-Signature-256"], "sha256="))))},
		{name: "the prefix in upper case (SHA256=) is a mismatch", want: 401, code: "signature_invalid",
			send: hook("github_repos", smallBody, h("X-Hub-Signature-256", "SHA256="+strings.TrimPrefix(sign(gh, smallBody, nil)["X-Hub-Signature-256"], "sha256=")))},
		{name: "an empty digest (sha256=) is refused", send: hook("github_repos", smallBody, h("X-Hub-Signature-256", "sha256=")), want: 401, code: "signature_invalid"},
		{name: "a 60 KiB signature is refused and not echoed", want: 401, code: "signature_invalid",
			send: hook("github_repos", smallBody, h("X-Hub-Signature-256", "sha256="+strings.Repeat("f", 60<<10))),
			then: func(t *testing.T, a hostileAnswer) { assert.Less(t, len(a.body), 1000) }},
		{name: "a static secret sent to another integration is refused", send: hook("github_repos", smallBody, h("X-Hub-Signature-256", staticSecret)),
			want: 401, code: "signature_invalid"},
		{name: "a static integration with its secret takes a hostile body and redacts the secret", want: 202,
			send: hook("hostile_static", []byte(`{"id":"st","name":"<script>\u0000</script>"}`), h("X-Token", staticSecret)), then: succeeds},

		// identifiers
		{name: "an integration ID in unicode is 404", send: hook("gith%C3%BCb_repos", smallBody, nil), want: 404, code: "integration_not_found"},
		{name: "an integration ID of 65 characters is 404", send: hook(strings.Repeat("a", 65), smallBody, nil), want: 404, code: "integration_not_found"},
		{name: "an integration ID of ../ is 404", send: hook("..%2Fgithub_repos", smallBody, nil), want: 404, code: "integration_not_found"},
		{name: "an integration ID that is a NUL is 404", send: hook("%00", smallBody, nil), want: 404, code: "integration_not_found"},
		{name: "PUT of an integration named in unicode is 400", send: adminSend("PUT", "/api/v1/integrations/h%C3%BCb", []byte(`{"security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)),
			want: 400, code: "invalid_config"},
		{name: "PUT of a template named with 65 characters is 400", send: adminSend("PUT", "/api/v1/templates/"+strings.Repeat("t", 65), []byte(`{"schema":{"properties":{}}}`)),
			want: 400, code: "invalid_config"},
		{name: "PUT of an integration named .. is 400", send: adminSend("PUT", "/api/v1/integrations/..", []byte(`{"security":{"scheme":"none","allow_unsigned":true},"mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)),
			want: 400, code: "invalid_config"},
		{name: "an entity named NUL is 404", send: get("/api/v1/entities/t/%00"), want: 404, code: "not_found"},
		{name: "an entity with a 20,000-character identifier is 404", send: get("/api/v1/entities/github_repository/" + strings.Repeat("e", 20_000)), want: 404, code: "not_found"},
		{name: "an entity named ../../ is 404", send: get("/api/v1/entities/github_repository/..%2F..%2F"), want: 404, code: "not_found"},
		{name: "a delivery named NUL is 404", send: get("/api/v1/deliveries/%00"), want: 404, code: "not_found"},
		{name: "replaying a delivery named NUL is 404", send: adminSend("POST", "/api/v1/deliveries/%00/replay", nil), want: 404, code: "not_found"},
		{name: "a replay ID with a NUL is 404 (it was a 503 from Temporal)", send: get("/api/v1/replays/bulk-replay.%00"), want: 404, code: "not_found"},
		{name: "cancelling a replay ID that is not UTF-8 is 404", send: adminSend("POST", "/api/v1/replays/bulk-replay.%ff/cancel", nil), want: 404, code: "not_found"},
		{name: "an integration of 65 characters is 404", send: get("/api/v1/integrations/" + strings.Repeat("i", 65)), want: 404, code: "not_found"},

		// admin writes
		{name: "PUT template null is 400", send: adminSend("PUT", "/api/v1/templates/h1", []byte(`null`)), want: 400, code: "invalid_json"},
		{name: "PUT template [] is 400", send: adminSend("PUT", "/api/v1/templates/h1", []byte(`[]`)), want: 400, code: "invalid_json"},
		{name: "PUT template as a string is 400", send: adminSend("PUT", "/api/v1/templates/h1", []byte(`"template"`)), want: 400, code: "invalid_json"},
		{name: "PUT integration null is 400", send: adminSend("PUT", "/api/v1/integrations/h1", []byte(`null`)), want: 400, code: "invalid_json"},
		{name: "PUT integration [] is 400", send: adminSend("PUT", "/api/v1/integrations/h1", []byte(`[]`)), want: 400, code: "invalid_json"},
		{name: "PUT integration as a string is 400", send: adminSend("PUT", "/api/v1/integrations/h1", []byte(`"integration"`)), want: 400, code: "invalid_json"},
		{name: "PUT integration with an empty body is 400", send: adminSend("PUT", "/api/v1/integrations/h1", nil), want: 400, code: "invalid_json"},
		{name: "PUT integration that is not UTF-8 is 400", send: adminSend("PUT", "/api/v1/integrations/h1", []byte("{\"title\":\"\xff\"}")), want: 400, code: "invalid_json"},
		{name: "a 5 MiB template is refused (at most 4 MiB)", want: 400, code: "invalid_json",
			send: adminSend("PUT", "/api/v1/templates/h1", []byte(`{"title":"`+strings.Repeat("t", 5<<20)+`"}`))},
		{name: "a 5 MiB integration is refused (at most 4 MiB)", want: 400, code: "invalid_json",
			send: adminSend("PUT", "/api/v1/integrations/h1", []byte(`{"title":"`+strings.Repeat("t", 5<<20)+`"}`))},
		{name: "unknown fields of a template are dropped, not stored", want: 201,
			send: adminSend("PUT", "/api/v1/templates/h_unknown", []byte(`{"schema":{"properties":{}},"bogus":{"$where":"1"},"__proto__":{}}`)),
			then: func(t *testing.T, a hostileAnswer) {
				assert.NotContains(t, string(a.body), "bogus")
				got := send(t, "GET", "/api/v1/templates/h_unknown", nil, nil, true)
				assert.NotContains(t, string(got.body), "bogus")
			}},
		{name: "unknown fields of an integration are dropped, and its secret is masked", want: 201,
			send: adminSend("PUT", "/api/v1/integrations/h_unknown", []byte(`{"bogus":1,"security":{"scheme":"static","signature_header_name":"X-T","signature_value":"`+staticSecret+`","extra":"x"},
			  "mappings":[{"template":"team","entity":{"identifier":".id","unknown":".x"}}]}`)),
			then: func(t *testing.T, a hostileAnswer) {
				assert.NotContains(t, string(a.body), "bogus")
				assert.Contains(t, string(a.body), intake.Masked)
				got := send(t, "GET", "/api/v1/integrations/h_unknown", nil, nil, true)
				assert.NotContains(t, string(got.body), "bogus")
				assert.Contains(t, string(got.body), intake.Masked)
			}},
		{name: "an integration with a broken JQ names the field and not its secret", want: 400, code: "invalid_config",
			send: adminSend("PUT", "/api/v1/integrations/h_broken", []byte(`{"security":{"scheme":"static","signature_header_name":"X-T","signature_value":"`+staticSecret+`"},
			  "mappings":[{"template":"team","entity":{"identifier":".id | ("}}]}`)),
			then: message("mappings[0].entity.identifier")},
		{name: "a template $ref to a remote URL is refused and not fetched", want: 400, code: "invalid_config",
			send: adminSend("PUT", "/api/v1/templates/h_ref", []byte(`{"schema":{"properties":{"a":{"type":"string","$ref":"`+remote.URL+`/s.json"}}}}`)),
			then: func(t *testing.T, a hostileAnswer) {
				assert.Contains(t, a.json(t)["message"], "templates cannot refer to other documents")
				assert.Zero(t, schemaFetches.Load())
			}},
		{name: "a template $schema at a remote URL is refused and not fetched", want: 400, code: "invalid_config",
			send: adminSend("PUT", "/api/v1/templates/h_ref", []byte(`{"schema":{"properties":{"a":{"type":"string","$schema":"`+remote.URL+`/meta.json"}}}}`)),
			then: func(t *testing.T, a hostileAnswer) { assert.Zero(t, schemaFetches.Load()) }},
		{name: "a template $ref to a local file is refused without reading it", want: 400, code: "invalid_config",
			send: adminSend("PUT", "/api/v1/templates/h_ref", []byte(`{"schema":{"properties":{"a":{"type":"string","$ref":"file:///etc/passwd"}}}}`)),
			then: message("templates cannot refer to other documents")},
		{name: "a JQ that loops fails its delivery with a MappingError within its budget", send: hook("jq_loop", []byte(`{"id":"l"}`), nil), want: 202,
			then: failsMapping("time budget")},
		{name: "[range(1e9)] fails its delivery with a MappingError within its budget", send: hook("jq_range", []byte(`{"id":"r"}`), nil), want: 202,
			then: failsMapping("time budget")},
		{name: `"x" * 1e9 is refused before a byte is allocated`, send: hook("jq_repeat", []byte(`{"id":"x"}`), nil), want: 202,
			then: failsMapping("over the size limit")},
		// gojq grows the array in one step the budget cannot interrupt: on a busy machine that
		// step alone may pass 100 ms, so either limit may be the one that stops it.
		{name: "a sparse array of 10^7 elements fails its mapping instead of blocking its workflow", send: hook("jq_sparse", []byte(`{"id":"s"}`), nil), want: 202,
			then: failsMapping("yields more than|time budget")},
		{name: "a mapped value over 2 MiB fails its mapping instead of blocking its workflow", send: hook("jq_wide", []byte(`{"id":"w"}`), nil), want: 202,
			then: failsMapping("yields more than")},
		{name: "NaN as a property fails its mapping (JSON cannot carry it)", send: hook("jq_nan", []byte(`{"id":"n"}`), nil), want: 202,
			then: failsMapping("NaN or infinite")},
		{name: `a request_identifier of "x" * 1e9 costs the receiver nothing: a fresh key`, send: hook("jq_key", []byte(`{"id":"k"}`), nil), want: 202,
			then: func(t *testing.T, a hostileAnswer) {
				assert.Less(t, a.took, 2*time.Second)
				succeeds(t, a)
			}},
		{name: "a bulk replay with a time that is not RFC 3339 is 400", send: adminSend("POST", "/api/v1/deliveries/replay", []byte(`{"from":"yesterday"}`)), want: 400, code: "invalid_json"},
		{name: "a bulk replay of null is 400", send: adminSend("POST", "/api/v1/deliveries/replay", []byte(`null`)), want: 400, code: "invalid_json"},

		// dry runs
		{name: "a dry run of a JQ that loops answers a MappingError within its budget", want: 200,
			send: adminSend("POST", "/api/v1/integrations/test", dryRun(unsaved("def f: f; f"), `{"id":"a"}`)), then: dryRunEntity(intake.ErrMapping, "time budget")},
		{name: `a dry run of "x" * 1e9 answers a MappingError at once`, want: 200,
			send: adminSend("POST", "/api/v1/integrations/test", dryRun(unsaved(`"x" * 1e9`), `{"id":"a"}`)), then: dryRunEntity(intake.ErrMapping, "over the size limit")},
		{name: "a dry run of env and $ENV sees no environment", want: 200,
			send: adminSend("POST", "/api/v1/integrations/test", dryRun(unsaved(`[env, $ENV] | tojson`), `{"id":"a"}`)),
			then: func(t *testing.T, a hostileAnswer) {
				assert.Contains(t, string(a.body), `"name":"[{},{}]"`)
				assert.NotContains(t, string(a.body), "INTAKE_")
			}},
		{name: "a dry run of input is refused at compile time", want: 400, code: "invalid_config",
			send: adminSend("POST", "/api/v1/integrations/test", dryRun(unsaved("input"), `{"id":"a"}`))},
		{name: "a dry run that includes a file is refused: nothing is read", want: 400, code: "invalid_config",
			send: adminSend("POST", "/api/v1/integrations/test", dryRun(unsaved(`include "/etc/passwd"; .`), `{"id":"a"}`))},
		{name: "a dry run of an unsaved integration with a bad secret names the field, not the secret", want: 400, code: "invalid_config",
			send: adminSend("POST", "/api/v1/integrations/test", dryRun(map[string]any{"security": map[string]any{"scheme": "standard-webhooks", "signature_value": "whsec_!" + staticSecret},
				"mappings": []any{map[string]any{"template": "team", "entity": map[string]any{"identifier": ".id"}}}}, `{"id":"a"}`))},
		{name: "a dry run without a body is 400", send: adminSend("POST", "/api/v1/integrations/github_repos/test", []byte(`{}`)), want: 400, code: "invalid_json"},
		{name: "a dry run with a 100,000-deep body is 400", want: 400, code: "invalid_json",
			send: adminSend("POST", "/api/v1/integrations/github_repos/test", []byte(`{"body":`+strings.Repeat("[", 100_000)+`}`))},
		{name: "a dry run with a 9,000-deep body answers the mapping's error", want: 200,
			send: adminSend("POST", "/api/v1/integrations/github_repos/test", []byte(`{"body":`+deep(9000, "[", "]")+`}`)),
			then: func(t *testing.T, a hostileAnswer) { assert.Equal(t, false, a.json(t)["valid"]) }},
		{name: "a dry run with headers that are not strings is 400", want: 400, code: "invalid_json",
			send: adminSend("POST", "/api/v1/integrations/github_repos/test", []byte(`{"body":{},"headers":{"X":1}}`))},
		{name: "a dry run of an integration that does not exist is 404", want: 404, code: "integration_not_found",
			send: adminSend("POST", "/api/v1/integrations/%00/test", []byte(`{"body":{}}`))},
		{name: "a dry run that fetches with credentials names the URL, never the credential", want: 200,
			send: adminSend("POST", "/api/v1/integrations/hostile_creds/test", []byte(`{"body":{"id":"u1","event":"UPDATE"}}`)),
			then: func(t *testing.T, a hostileAnswer) {
				out := a.json(t)
				require.NotNil(t, out["error"], "%s", a.body)
				assert.Contains(t, fmt.Sprint(out["error"]), "api.example.invalid")
			}},
	}

	// list parameters, on every list
	for _, list := range []string{"entities", "audit_logs", "deliveries"} {
		for _, q := range []string{"limit=0", "limit=-1", "limit=1001", "limit=abc", "limit=1e3", "limit=99999999999999999999999"} {
			rows = append(rows, hostileRow{name: list + " " + q + " is 400", send: get("/api/v1/" + list + "?" + q), want: 400, code: "invalid_limit"})
		}
		for _, c := range []string{"garbage", base64.RawURLEncoding.EncodeToString([]byte("\xff\xfejunk")), "%00", strings.Repeat("A", 5000),
			base64.StdEncoding.EncodeToString([]byte(`{"junk":1}`))} {
			rows = append(rows, hostileRow{name: fmt.Sprintf("%s with a made-up cursor (%.12s) is 400", list, c),
				send: get("/api/v1/" + list + "?cursor=" + c), want: 400, code: "invalid_cursor"})
		}
		injected := "/api/v1/" + list + "?template=%7B%22%24ne%22%3Anull%7D&integration=%7B%22%24ne%22%3Anull%7D&entity_template=%24ne"
		rows = append(rows, hostileRow{name: list + " filters holding Mongo operators are plain values", send: get(injected), want: 200,
			then: func(t *testing.T, a hostileAnswer) { assert.JSONEq(t, `[]`, string(a.body)) }})
	}
	for _, list := range []string{"audit_logs", "deliveries"} {
		for _, q := range []string{"from=yesterday", "to=2025-13-45T00:00:00Z", "from=%00", "to=" + strings.Repeat("9", 5000)} {
			name := strings.SplitN(q, "=", 2)[0]
			rows = append(rows, hostileRow{name: fmt.Sprintf("%s %.30s is 400", list, q), send: get("/api/v1/" + list + "?" + q), want: 400, code: "invalid_" + name})
		}
	}

	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			a := row.send(t)
			require.Less(t, a.status, 500, "a 5xx for hostile input: %.500s", a.body)
			assert.Equal(t, row.want, a.status, "%.500s", a.body)
			for _, secret := range secrets {
				assert.NotContains(t, string(a.body), secret, "a secret in the answer")
				for k, vs := range a.header {
					assert.NotContains(t, strings.Join(vs, " "), secret, "a secret in header %s", k)
				}
			}
			if a.status >= 400 && !row.plain {
				var e map[string]json.RawMessage
				require.NoError(t, json.Unmarshal(a.body, &e), "an error answer is JSON: %.300s", a.body)
				assert.Len(t, e, 3, "exactly error, message, details: %.300s", a.body)
				var errCode, msg string
				require.NoError(t, json.Unmarshal(e["error"], &errCode))
				require.NoError(t, json.Unmarshal(e["message"], &msg))
				assert.NotEmpty(t, msg)
				assert.Contains(t, e, "details")
				if row.code != "" {
					assert.Equal(t, row.code, errCode)
				}
			}
			if a.status == http.StatusAccepted {
				var out map[string]any
				if json.Unmarshal(a.body, &out) == nil {
					if id, ok := out["delivery_id"].(string); ok {
						accepted = append(accepted, id)
					}
				}
			}
			if row.then != nil {
				row.then(t, a)
			}
		})
	}

	t.Run("the process is alive and ready, and a normal signed delivery works end to end", func(t *testing.T) {
		require.Nil(t, s.cmd.ProcessState, "intake dev exited")
		a := send(t, "GET", "/readyz", nil, nil, false)
		require.Equal(t, 200, a.status, "%s", a.body)
		assert.NotContains(t, string(a.body), "broken_integrations")
		body := repo("octo-org/after-hostile", "after-hostile")
		code, out := s.post("github_repos", body, sign(gh, body, nil))
		require.Equal(t, 202, code, "%v", out)
		res, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
		var e intake.Entity
		code, _ = s.request("GET", "/api/v1/entities/github_repository/octo-org_after-hostile", nil, true, &e)
		require.Equal(t, 200, code)
		assert.Equal(t, "after-hostile", e.Title)
	})

	t.Run("no accepted delivery is left behind, and no secret is in any list or log", func(t *testing.T) {
		for _, id := range accepted {
			a := send(t, "GET", "/api/v1/deliveries/"+id, nil, nil, true)
			require.Equal(t, 200, a.status, "%.300s", a.body)
			assert.NotEqual(t, intake.StatusAccepted, a.json(t)["status"], "delivery %s is still accepted", id)
		}
		for _, path := range []string{"/api/v1/integrations", "/api/v1/integrations/hostile_creds", "/api/v1/integrations/hostile_static",
			"/api/v1/integrations/github_repos", "/api/v1/deliveries?limit=1000", "/api/v1/audit_logs?limit=1000", "/api/v1/templates"} {
			a := send(t, "GET", path, nil, nil, true)
			require.Equal(t, 200, a.status, "%s: %.300s", path, a.body)
			for _, secret := range secrets {
				assert.NotContains(t, string(a.body), secret, "%s shows a secret", path)
			}
		}
		for _, secret := range secrets[:4] { // the admin token and the key are the process's own settings
			assert.NotContains(t, s.logs.String(), secret, "a secret in the logs")
		}
	})
	t.Logf("%d hostile rows; the whole test ran in %s", len(rows), time.Since(began).Round(time.Second))
}
