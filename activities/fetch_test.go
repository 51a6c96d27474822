package activities_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake/activities"
)

// fetchSecret is sent as a header in every fetch test; no error message may contain it.
const fetchSecret = "Bearer s3cret-token"

// fetchServer starts a local HTTP server (on 127.0.0.1) that counts the requests it answers.
func fetchServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// fetchErr asserts err is a *FetchError with the given status and retryability, whose message
// contains msg and never the secret header value.
func fetchErr(t *testing.T, err error, status int, retryable bool, msg string) {
	t.Helper()
	var fe *activities.FetchError
	require.True(t, errors.As(err, &fe), "want a *FetchError, got %T: %v", err, err)
	assert.Equal(t, status, fe.Status, "status")
	assert.Equal(t, retryable, fe.Retryable, "retryable")
	assert.Contains(t, fe.Error(), msg)
	assert.NotContains(t, fe.Error(), "s3cret")
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func TestFetchAnswers(t *testing.T) {
	loopback := activities.FetchPolicy{Allow: []string{"127.0.0.1"}}
	tests := []struct {
		name      string
		policy    activities.FetchPolicy
		headers   map[string]string
		handler   http.HandlerFunc
		want      string // body on success
		status    int    // on failure
		retryable bool
		msg       string // on failure: part of the message
	}{
		{name: "2xx JSON answer is returned", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, map[string]any{"id": "42", "name": "thing"})
			},
			want: `{"id":"42","name":"thing"}` + "\n"},
		{name: "caller headers are sent and Accept defaults to application/json", policy: loopback,
			headers: map[string]string{"Authorization": fetchSecret, "X-Api-Key": "k1"},
			handler: func(w http.ResponseWriter, r *http.Request) {
				writeJSON(w, []string{r.Header.Get("Authorization"), r.Header.Get("X-Api-Key"), r.Header.Get("Accept")})
			},
			want: `["Bearer s3cret-token","k1","application/json"]` + "\n"},
		{name: "a caller Accept header is kept", policy: loopback,
			headers: map[string]string{"accept": "application/vnd.api+json"},
			handler: func(w http.ResponseWriter, r *http.Request) { writeJSON(w, r.Header.Values("Accept")) },
			want:    `["application/vnd.api+json"]` + "\n"},
		{name: "an answer of exactly MaxBytes is returned", policy: activities.FetchPolicy{Allow: []string{"127.0.0.1"}, MaxBytes: 10},
			handler: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `"12345678"`) },
			want:    `"12345678"`},
		{name: "404 is non-retryable and names status and target", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no such thing", http.StatusNotFound) },
			status:  404, msg: "upstream answered 404 Not Found for GET http://127.0.0.1:"},
		{name: "400 is non-retryable", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusBadRequest) },
			status:  400, msg: "upstream answered 400 Bad Request"},
		{name: "500 is retryable", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) },
			status:  500, retryable: true, msg: "upstream answered 500 Internal Server Error"},
		{name: "503 is retryable", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) },
			status:  503, retryable: true, msg: "503 Service Unavailable"},
		{name: "429 is retryable", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTooManyRequests) },
			status:  429, retryable: true, msg: "429 Too Many Requests"},
		{name: "408 is retryable", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusRequestTimeout) },
			status:  408, retryable: true, msg: "408 Request Timeout"},
		{name: "a 2xx answer that is not JSON is non-retryable", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "<html>login</html>") },
			status:  200, msg: "upstream answered non-JSON"},
		{name: "an empty 2xx answer is non-JSON", policy: loopback,
			handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
			status:  204, msg: "upstream answered non-JSON"},
		{name: "an answer of MaxBytes+1 is non-retryable", policy: activities.FetchPolicy{Allow: []string{"127.0.0.1"}, MaxBytes: 10},
			handler: func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, `"123456789"`) },
			status:  200, msg: "upstream answer is over the 10-byte limit"},
		{name: "a streamed answer over MaxBytes without Content-Length is non-retryable", policy: activities.FetchPolicy{Allow: []string{"127.0.0.1"}, MaxBytes: 10},
			handler: func(w http.ResponseWriter, r *http.Request) {
				for range 5 {
					fmt.Fprint(w, "[1,2,3]")
					w.(http.Flusher).Flush()
				}
			},
			status: 200, msg: "upstream answer is over the 10-byte limit"},
		{name: "an answer slower than Timeout is retryable", policy: activities.FetchPolicy{Allow: []string{"127.0.0.1"}, Timeout: 200 * time.Millisecond},
			handler: func(w http.ResponseWriter, r *http.Request) {
				select {
				case <-r.Context().Done():
				case <-time.After(3 * time.Second):
				}
				writeJSON(w, "late")
			},
			retryable: true, msg: "within 200ms"},
		{name: "a body that stalls past Timeout is retryable", policy: activities.FetchPolicy{Allow: []string{"127.0.0.1"}, Timeout: 200 * time.Millisecond},
			handler: func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, `{"partial":`)
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
				case <-time.After(3 * time.Second):
				}
			},
			retryable: true, msg: "within 200ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, _ := fetchServer(t, tt.handler)
			headers := tt.headers
			if headers == nil {
				headers = map[string]string{"Authorization": fetchSecret}
			}
			body, err := activities.NewFetcher(tt.policy).Fetch(context.Background(), srv.URL+"/things/42?token=q", headers)
			if tt.msg == "" {
				require.NoError(t, err)
				assert.Equal(t, tt.want, string(body))
				return
			}
			assert.Nil(t, body)
			fetchErr(t, err, tt.status, tt.retryable, tt.msg)
			assert.NotContains(t, err.Error(), "token=q", "the query may carry a key")
		})
	}
}

func TestFetchConnectionRefusedIsRetryable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close()) // nothing listens there any more

	_, err = activities.NewFetcher(activities.FetchPolicy{Allow: []string{"127.0.0.1"}}).
		Fetch(context.Background(), "http://"+addr+"/x", map[string]string{"Authorization": fetchSecret})
	fetchErr(t, err, 0, true, "GET http://"+addr+"/x failed")
}

func TestFetchRefusesInvalidInput(t *testing.T) {
	f := activities.NewFetcher(activities.FetchPolicy{})
	tests := []struct {
		name    string
		url     string
		headers map[string]string
		msg     string
	}{
		{"a relative URL is refused", "/things/1", nil, "not an absolute http(s) URL"},
		{"a file URL is refused", "file:///etc/passwd", nil, "not an absolute http(s) URL"},
		{"user info is refused", "http://u:p@example.com/", nil, "user info"},
		{"a header value with a newline is refused without echoing it", "http://example.com/", map[string]string{"Authorization": "Bearer s3cret\r\nX-Evil: 1"}, `header "Authorization" has an invalid name or value`},
		{"an invalid header name is refused", "http://example.com/", map[string]string{"Bad Name": "v"}, "invalid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.Fetch(context.Background(), tt.url, tt.headers)
			fetchErr(t, err, 0, false, tt.msg)
		})
	}
}

func TestFetchTargetPolicy(t *testing.T) {
	srv, hits := fetchServer(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "ok") })
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	byIP := fmt.Sprintf("http://127.0.0.1:%d/x", port)
	byName := fmt.Sprintf("http://localhost:%d/x", port)
	tests := []struct {
		name  string
		allow []string
		url   string
		msg   string // "" = allowed
	}{
		{"loopback target is refused when Allow is empty", nil, byIP,
			"hydration target 127.0.0.1 (127.0.0.1) is not allowed: private/loopback/link-local address (set INTAKE_HYDRATION_ALLOW to permit it)"},
		{"a name resolving to loopback is refused when Allow is empty", nil, byName,
			"hydration target localhost (127.0.0.1) is not allowed"},
		{"Allow of another range does not permit loopback", []string{"10.0.0.0/8", "::1"}, byIP,
			"hydration target 127.0.0.1 (127.0.0.1) is not allowed"},
		{"a host-name entry does not permit the literal IP", []string{"localhost"}, byIP,
			"hydration target 127.0.0.1 (127.0.0.1) is not allowed"},
		{"Allow of the IP permits it", []string{"127.0.0.1"}, byIP, ""},
		{"Allow of a CIDR permits it", []string{"127.0.0.0/8"}, byIP, ""},
		{"Allow of an IPv4-mapped IPv6 entry permits the IPv4 address", []string{"::ffff:127.0.0.1"}, byIP, ""},
		{"Allow of a host name permits that name whatever it resolves to", []string{"localhost"}, byName, ""},
		{"host-name entries match case-insensitively", []string{"LocalHost."}, byName, ""},
		{"Allow of the IP permits a name resolving to it", []string{"127.0.0.1"}, byName, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := hits.Load()
			body, err := activities.NewFetcher(activities.FetchPolicy{Allow: tt.allow}).
				Fetch(context.Background(), tt.url, map[string]string{"Authorization": fetchSecret})
			if tt.msg == "" {
				require.NoError(t, err)
				assert.JSONEq(t, `"ok"`, string(body))
				return
			}
			fetchErr(t, err, 0, false, tt.msg)
			assert.Equal(t, before, hits.Load(), "a refused target is never reached")
		})
	}
}

func TestFetchRedirects(t *testing.T) {
	// other is a second origin (another port) that reports the credentials it received.
	other, _ := fetchServer(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"authorization": r.Header.Get("Authorization"), "key": r.Header.Get("X-Api-Key"), "accept": r.Header.Get("Accept")})
	})
	mux := http.NewServeMux()
	redirect := func(from, to string) {
		mux.HandleFunc(from, func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, to, http.StatusFound) })
	}
	redirect("/to-metadata", "http://169.254.169.254/latest/meta-data")
	redirect("/to-private", "http://10.0.0.1/")
	redirect("/to-mapped-loopback", "http://[::ffff:127.0.0.1]:1/")
	redirect("/to-ftp", "ftp://example.com/x")
	redirect("/to-data", "/data")
	redirect("/to-other-origin", other.URL+"/data")
	for i := range 6 {
		redirect(fmt.Sprintf("/chain/%d", i+1), fmt.Sprintf("/chain/%d", i))
	}
	mux.HandleFunc("/chain/0", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, "end of chain") })
	mux.HandleFunc("/data", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]string{"authorization": r.Header.Get("Authorization"), "key": r.Header.Get("X-Api-Key"), "accept": r.Header.Get("Accept")})
	})
	srv, _ := fetchServer(t, mux.ServeHTTP)
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name  string
		allow []string
		url   string
		want  string // body on success
		msg   string // on failure
	}{
		{name: "redirect to the metadata address is refused before any dial", allow: []string{"127.0.0.1"}, url: srv.URL + "/to-metadata",
			msg: "hydration target 169.254.169.254 (169.254.169.254) is not allowed: private/loopback/link-local address"},
		{name: "redirect to a private address is refused before any dial", allow: []string{"127.0.0.1"}, url: srv.URL + "/to-private",
			msg: "hydration target 10.0.0.1 (10.0.0.1) is not allowed"},
		{name: "redirect to IPv4-mapped loopback is refused when only a host name is allowed", allow: []string{"localhost"},
			url: fmt.Sprintf("http://localhost:%d/to-mapped-loopback", port),
			msg: "hydration target ::ffff:127.0.0.1 (127.0.0.1) is not allowed"},
		{name: "redirect to a non-http scheme is refused", allow: []string{"127.0.0.1"}, url: srv.URL + "/to-ftp",
			msg: "upstream redirected to a ftp URL"},
		{name: "redirect to another allowed path is followed with the caller's headers", allow: []string{"127.0.0.1"}, url: srv.URL + "/to-data",
			want: `{"accept":"application/json","authorization":"Bearer s3cret-token","key":"k1"}`},
		{name: "redirect to another origin is followed without the caller's headers", allow: []string{"127.0.0.1"}, url: srv.URL + "/to-other-origin",
			want: `{"accept":"application/json","authorization":"","key":""}`},
		{name: "five redirects are followed", allow: []string{"127.0.0.1"}, url: srv.URL + "/chain/5", want: `"end of chain"`},
		{name: "a sixth redirect is refused", allow: []string{"127.0.0.1"}, url: srv.URL + "/chain/6",
			msg: "upstream redirected more than 5 times"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			body, err := activities.NewFetcher(activities.FetchPolicy{Allow: tt.allow}).
				Fetch(context.Background(), tt.url, map[string]string{"Authorization": fetchSecret, "X-Api-Key": "k1"})
			if tt.msg == "" {
				require.NoError(t, err)
				assert.JSONEq(t, tt.want, string(body))
				return
			}
			fetchErr(t, err, 0, false, tt.msg)
			// A dial to an unroutable address would hang until the 10s timeout.
			assert.Less(t, time.Since(start), 2*time.Second)
		})
	}
}

func TestFetcherIsSafeForConcurrentUse(t *testing.T) {
	srv, hits := fetchServer(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, r.URL.Path) })
	f := activities.NewFetcher(activities.FetchPolicy{Allow: []string{"127.0.0.1"}})
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			body, err := f.Fetch(context.Background(), fmt.Sprintf("%s/%d", srv.URL, i), nil)
			if err == nil && string(body) != fmt.Sprintf("%q\n", fmt.Sprintf("/%d", i)) {
				err = fmt.Errorf("fetch %d got %s", i, body)
			}
			errs <- err
		}()
	}
	for range 20 {
		assert.NoError(t, <-errs)
	}
	assert.Equal(t, int32(20), hits.Load())
}

func TestCheckURL(t *testing.T) {
	tests := []struct {
		name  string
		allow []string
		url   string
		err   string // "" = accepted
	}{
		{"https host name with a path placeholder is accepted", nil, "https://api.example.com/things/{id}", ""},
		{"placeholders in path and query are accepted", nil, "http://api.example.com:8080/things/{id}?expand={id}&v={version}", ""},
		{"a public literal IP is accepted", nil, "https://93.184.215.14/x/{id}", ""},
		{"host names are not resolved at write time", nil, "http://localhost/x", ""},
		{"an allowed literal IP is accepted", []string{"127.0.0.1"}, "http://127.0.0.1:8080/{id}", ""},
		{"a literal IP in an allowed CIDR is accepted", []string{"10.0.0.0/8"}, "https://10.1.2.3/x", ""},
		{"an allowed IPv6 loopback is accepted", []string{"::1"}, "http://[::1]:9000/x", ""},
		{"loopback is refused", nil, "http://127.0.0.1/{id}", "hydration URL host 127.0.0.1 is not allowed: private/loopback/link-local address (set INTAKE_HYDRATION_ALLOW to permit it)"},
		{"loopback elsewhere in 127/8 is refused", []string{"127.0.0.1"}, "http://127.0.0.2/", "is not allowed"},
		{"10/8 is refused", nil, "https://10.0.0.1/x", "is not allowed"},
		{"172.16/12 is refused", nil, "https://172.16.5.4/x", "is not allowed"},
		{"192.168/16 is refused", nil, "https://192.168.1.1/x", "is not allowed"},
		{"the metadata address is refused", nil, "http://169.254.169.254/latest/meta-data", "is not allowed"},
		{"CGNAT is refused", nil, "http://100.64.0.1/", "is not allowed"},
		{"unspecified IPv4 is refused", nil, "http://0.0.0.0:8080/", "is not allowed"},
		{"multicast is refused", nil, "http://224.0.0.1/", "is not allowed"},
		{"IPv6 loopback is refused", nil, "http://[::1]/", "is not allowed"},
		{"unspecified IPv6 is refused", nil, "http://[::]/", "is not allowed"},
		{"IPv6 link-local with a zone is refused", nil, "http://[fe80::1%25eth0]/", "is not allowed"},
		{"IPv6 unique-local is refused", nil, "http://[fd12:3456::1]/", "is not allowed"},
		{"IPv4-mapped loopback is refused", nil, "http://[::ffff:127.0.0.1]/", "is not allowed"},
		{"IPv4-mapped metadata address is refused", nil, "http://[::ffff:169.254.169.254]/", "is not allowed"},
		{"NAT64 form of the metadata address is refused", nil, "http://[64:ff9b::a9fe:a9fe]/", "is not allowed"},
		{"ftp scheme is refused", nil, "ftp://example.com/{id}", "scheme must be http or https"},
		{"a URL without scheme is refused", nil, "example.com/{id}", "scheme must be http or https"},
		{"user info is refused", nil, "https://user:pw@example.com/{id}", "user info is not allowed"},
		{"a URL without host is refused", nil, "https:///things/{id}", "has no host"},
		{"a placeholder in the host is refused", nil, "https://{id}.example.com/x", "never in scheme, host or port"},
		{"a placeholder in the port is refused", nil, "https://example.com:{port}/x", "never in scheme, host or port"},
		{"an unparsable URL is refused", nil, "https://exa mple.com/", "not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := activities.FetchPolicy{Allow: tt.allow}.CheckURL(tt.url)
			if tt.err == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.err)
		})
	}
}

func TestExpandURL(t *testing.T) {
	tests := []struct {
		name string
		tmpl string
		id   string
		want string
		err  string
	}{
		{"a path id is path-escaped so it adds no segment", "https://api.example.com/things/{id}", "a/b c", "https://api.example.com/things/a%2Fb%20c", ""},
		{"a query id is query-escaped so it adds no parameter", "https://api.example.com/things?id={id}&v=2", "a&b=c d", "https://api.example.com/things?id=a%26b%3Dc+d&v=2", ""},
		{"each placeholder is escaped for where it stands", "https://h/things/{id}?expand={id}", "x/y", "https://h/things/x%2Fy?expand=x%2Fy", ""},
		{"? and # in an id stay in the path", "https://h/things/{id}/detail", "a?b#c", "https://h/things/a%3Fb%23c/detail", ""},
		{"an id cannot move the host", "https://h/{id}", "//evil.example/x", "https://h/%2F%2Fevil.example%2Fx", ""},
		{"a dotted id that is not a dot segment is kept", "https://h/things/{id}", "v1.2", "https://h/things/v1.2", ""},
		{"other placeholders are left as they are", "https://h/{kind}/{id}", "7", "https://h/{kind}/7", ""},
		{"a template without placeholder is returned unchanged", "https://h/all", "", "https://h/all", ""},
		{"an id of .. is refused", "https://h/things/{id}", "..", "", `id ".." cannot be put in a URL`},
		{"an id of . is refused", "https://h/things/{id}", ".", "", `id "." cannot be put in a URL`},
		{"an empty id is refused", "https://h/things/{id}", "", "", `id "" cannot be put in a URL`},
		{"a placeholder in the host is refused", "https://{id}.example.com/x", "a", "", "never in scheme, host or port"},
		{"a placeholder at the end of the host is refused", "https://example.com{id}", "a", "", "never in scheme, host or port"},
		{"a placeholder in the port is refused", "https://example.com:{id}/x", "80", "", "never in scheme, host or port"},
		{"a placeholder in the user info is refused", "https://{id}@example.com/x", "a", "", "never in scheme, host or port"},
		{"a placeholder in the scheme is refused", "{id}://example.com/x", "http", "", "never in scheme, host or port"},
		{"a placeholder in the fragment is refused", "https://h/x#{id}", "a", "", "fragment"},
		{"a template without scheme is refused", "h/things/{id}", "a", "", "no scheme://host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := activities.ExpandURL(tt.tmpl, tt.id)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			u, err := url.Parse(got)
			require.NoError(t, err)
			tu, _ := url.Parse(strings.ReplaceAll(tt.tmpl, "{id}", "x"))
			assert.Equal(t, tu.Host, u.Host, "the host is the template's")
		})
	}
}

func TestParseAllow(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		err  string
	}{
		{"empty means nothing allowed", "", nil, ""},
		{"entries are trimmed and empties dropped", " 127.0.0.1 , 10.0.0.0/8,,localhost ,", []string{"127.0.0.1", "10.0.0.0/8", "localhost"}, ""},
		{"IPv6 addresses, CIDRs and service names are accepted", "::1,fd00::/8,my_service.internal,Api-1.Example.com.", []string{"::1", "fd00::/8", "my_service.internal", "Api-1.Example.com."}, ""},
		{"a bad prefix length names the entry", "127.0.0.1, 10.0.0.0/33", nil, `entry "10.0.0.0/33": not a valid CIDR`},
		{"a URL is refused", "http://example.com", nil, `entry "http://example.com"`},
		{"host:port is refused", "example.com:8080", nil, `entry "example.com:8080": not an IP, a CIDR or a host name`},
		{"an incomplete IP is refused", "10.0.0", nil, `entry "10.0.0"`},
		{"a label starting with a hyphen is refused", "-bad.example", nil, `entry "-bad.example"`},
		{"an IPv6 zone is refused", "fe80::1%eth0", nil, `entry "fe80::1%eth0": an IPv6 zone is not supported`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := activities.ParseAllow(tt.in)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}
