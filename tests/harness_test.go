// Package tests runs intake end to end: the real binary, started the way a user starts it, with
// its embedded Temporal server and MongoDB-protocol server, in temporary folders on free ports.
package tests

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/proto"

	"intake"
	"intake/examples"
)

var intakeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "intake-e2e-bin")
	if err != nil {
		panic(err)
	}
	intakeBin = os.Getenv("INTAKE_BIN")
	if intakeBin == "" {
		intakeBin = filepath.Join(dir, "intake")
		build := exec.Command("go", "build", "-o", intakeBin, "../cmd/intake")
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build intake:", err)
			os.Exit(1)
		}
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// stack is one `intake dev` process and what a test needs to talk to it.
type stack struct {
	t        testing.TB
	dir      string
	ports    map[string]int
	cmd      *exec.Cmd
	logs     *bytes.Buffer
	base     string
	token    string
	temporal client.Client
	env      []string
	args     []string       // extra flags of intake dev
	dial     client.Options // how the test's client reaches the frontend (TLS)
}

// freePort picks a free port below Linux's ephemeral range (32768-60999): a stack restarted
// after kill -9 binds its ports again, and a port from that range may meanwhile have become the
// local end of some outgoing connection on a busy machine.
func freePort(t testing.TB) int {
	for range 1000 {
		port := 20000 + rand.IntN(12000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}

// startDev starts `intake dev` in a fresh temporary folder; env adds variables.
func startDev(t testing.TB, env ...string) *stack {
	return startDevWith(t, nil, client.Options{}, env...)
}

// startDevWith starts `intake dev` with extra flags, dialling its frontend with dial's options.
func startDevWith(t testing.TB, args []string, dial client.Options, env ...string) *stack {
	s := &stack{t: t, dir: t.TempDir(), ports: map[string]int{}, env: env, args: args, dial: dial}
	for _, name := range []string{"http", "temporal", "ui", "mongodb"} {
		s.ports[name] = freePort(t)
	}
	s.token = "test-admin-token"
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *stack) addr(name string) string { return "127.0.0.1:" + strconv.Itoa(s.ports[name]) }

func (s *stack) start() {
	t := s.t
	s.logs = &bytes.Buffer{}
	s.cmd = exec.Command(intakeBin, append([]string{"dev",
		"--http-addr", s.addr("http"), "--temporal-addr", s.addr("temporal"),
		"--temporal-ui-addr", s.addr("ui"), "--mongodb-addr", s.addr("mongodb")}, s.args...)...)
	s.cmd.Dir = s.dir
	s.cmd.Env = append(append(os.Environ(), "INTAKE_ADMIN_TOKEN="+s.token, "INTAKE_MONGODB_URI=", "INTAKE_LOG_LEVEL=info"), s.env...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	require.NoError(t, s.cmd.Start())
	s.base = "http://" + s.addr("http")
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) || s.cmd.ProcessState != nil {
			t.Fatalf("intake dev did not become ready:\n%s", s.stuck())
		}
		time.Sleep(200 * time.Millisecond)
	}
	opts := s.dial
	opts.HostPort, opts.Namespace = s.addr("temporal"), "default"
	c, err := client.Dial(opts)
	require.NoError(t, err)
	s.temporal = c
}

// stuck asks a process that did not become ready for its goroutines (SIGQUIT: Go prints every
// stack and exits) and answers the end of what it printed and of the embedded Temporal
// server's own log, where a start that hangs before intake logs anything leaves its traces.
func (s *stack) stuck() string {
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	s.exit(10 * time.Second)
	server, _ := os.ReadFile(filepath.Join(s.dir, ".intake", "temporal", "server.log"))
	return tail(s.logs.String(), 60<<10) + "\n--- end of .intake/temporal/server.log:\n" + tail(string(server), 8<<10)
}

// exit waits until the process, asked to stop, has exited; past limit it is killed (kill -9),
// and exit reports it did not stop of itself.
func (s *stack) exit(limit time.Duration) bool {
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(limit):
		_ = s.cmd.Process.Kill()
		<-done
		return false
	}
}

func (s *stack) stop() {
	if s.temporal != nil {
		s.temporal.Close()
		s.temporal = nil
	}
	if s.cmd != nil && s.cmd.ProcessState == nil {
		_ = s.cmd.Process.Signal(os.Interrupt)
		if !s.exit(15 * time.Second) {
			s.t.Errorf("intake dev did not stop within 15s of SIGINT")
		}
	}
	if s.t.Failed() {
		s.t.Logf("intake dev output:\n%s", tail(s.logs.String(), 8000))
	}
}

// kill stops the process the hard way (kill -9).
func (s *stack) kill() {
	s.temporal.Close()
	s.temporal = nil
	require.NoError(s.t, s.cmd.Process.Kill())
	_ = s.cmd.Wait()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// request sends a JSON request and decodes a JSON answer.
func (s *stack) request(method, path string, body any, admin bool, out any) (int, http.Header) {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		require.NoError(s.t, err)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, s.base+path, rd)
	require.NoError(s.t, err)
	req.Header.Set("Content-Type", "application/json")
	if admin {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(s.t, err)
	if out != nil && len(raw) > 0 {
		require.NoError(s.t, json.Unmarshal(raw, out), "answer: %s", raw)
	}
	return resp.StatusCode, resp.Header
}

// post sends a webhook with the given headers.
func (s *stack) post(integration string, body []byte, headers map[string]string) (int, map[string]any) {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.base+"/webhooks/"+integration, bytes.NewReader(body))
	require.NoError(s.t, err)
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(s.t, err)
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		require.NoError(s.t, json.Unmarshal(raw, &out), "answer: %s", raw)
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		require.NotEmpty(s.t, resp.Header.Get("Retry-After"))
	}
	return resp.StatusCode, out
}

func exampleIntegrations(t testing.TB) []intake.Integration {
	ints, err := examples.Integrations()
	require.NoError(t, err)
	return ints
}

// exampleSecurity gives an example integration's security (nil for stream integrations).
func exampleSecurity(t testing.TB, id string) *intake.Security {
	for _, in := range exampleIntegrations(t) {
		if in.Identifier == id {
			return in.Security
		}
	}
	t.Fatalf("no example integration %s", id)
	return nil
}

// sign returns headers with a hex HMAC-SHA256 signature the way the example's sender signs.
func sign(sec *intake.Security, body []byte, headers map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range headers {
		out[k] = v
	}
	key, prefixed := strings.CutPrefix(sec.SignatureValue, "sha256=")
	m := hmac.New(sha256.New, []byte(key))
	m.Write(body)
	sig := hex.EncodeToString(m.Sum(nil))
	if prefixed {
		sig = "sha256=" + sig
	}
	out[sec.SignatureHeaderName] = sig
	return out
}

// waitWorkflow waits for a delivery's workflow and returns its result or error.
func (s *stack) waitWorkflow(workflowID string) (*intake.IngestResult, error) {
	// Generous: right after a kill -9 the embedded server may take a while to answer on a busy machine.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var res intake.IngestResult
	err := s.temporal.GetWorkflow(ctx, workflowID, "").Get(ctx, &res)
	if err != nil {
		return nil, err
	}
	return &res, nil
}

// historyOf returns a workflow's whole history.
func (s *stack) historyOf(workflowID string) *historypb.History {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	it := s.temporal.GetWorkflowHistory(ctx, workflowID, "", false, 0)
	h := &historypb.History{}
	for it.HasNext() {
		ev, err := it.Next()
		require.NoError(s.t, err)
		h.Events = append(h.Events, ev)
	}
	return h
}

// history returns a workflow's whole history in its wire form, payload bytes as they are.
func (s *stack) history(workflowID string) string {
	var b strings.Builder
	for _, ev := range s.historyOf(workflowID).Events {
		raw, err := proto.Marshal(ev)
		require.NoError(s.t, err)
		b.Write(raw)
	}
	return b.String()
}

// expectEntities checks the entities a sample expects to exist (listed fields only; updatedBy
// when not empty) and to be absent.
func expectEntities(t *testing.T, s *stack, want examples.Expectation, updatedBy string) {
	t.Helper()
	path := func(e examples.ExpectedEntity) string {
		return "/api/v1/entities/" + e.Template + "/" + url.PathEscape(e.Identifier)
	}
	for _, w := range want.Entities {
		var got intake.Entity
		code, _ := s.request("GET", path(w), nil, true, &got)
		require.Equal(t, 200, code, "entity %s/%s", w.Template, w.Identifier)
		if w.Title != "" {
			assert.Equal(t, w.Title, got.Title)
		}
		for k, v := range w.Properties {
			assert.Equal(t, v, got.Properties[k], "property %s", k)
		}
		for k, v := range w.Relations {
			assert.Equal(t, fmt.Sprint(v), fmt.Sprint(got.Relations[k]), "relation %s", k)
		}
		if updatedBy != "" {
			assert.Equal(t, updatedBy, got.UpdatedBy)
		}
	}
	for _, a := range want.Absent {
		code, _ := s.request("GET", path(a), nil, true, nil)
		assert.Equal(t, 404, code, "entity %s/%s must not exist", a.Template, a.Identifier)
	}
}

// fanOut calls do for every i in [from, to) from `senders` goroutines at once, and returns when
// all calls have returned (the load generators of the benchmarks and fault tests).
func fanOut(senders, from, to int, do func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < senders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				do(i)
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}
