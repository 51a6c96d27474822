package tests

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// server is one `intake serve` process against a dev stack's store (and, by default, its
// Temporal frontend).
type server struct {
	t    testing.TB
	cmd  *exec.Cmd
	logs *lockedBuffer
	base string
	done chan struct{}
	err  error
}

// lockedBuffer is a process's output, read by the test while the process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// serveOpts say where a serve process finds its services (empty: the dev stack's).
type serveOpts struct {
	roles    string
	temporal string
	mongo    string
	env      []string
	args     []string
}

func startServe(t testing.TB, s *stack, o serveOpts) *server {
	var keyEnv []string // dev's generated key, unless the test gave both processes one
	if key, err := os.ReadFile(filepath.Join(s.dir, ".intake", "secret-key")); err == nil {
		keyEnv = []string{"INTAKE_SECRET_KEY=" + strings.TrimSpace(string(key))}
	}
	if o.temporal == "" {
		o.temporal = s.addr("temporal")
	}
	if o.mongo == "" {
		o.mongo = s.addr("mongodb")
	}
	port := freePort(t)
	p := &server{t: t, logs: &lockedBuffer{}, base: fmt.Sprintf("http://127.0.0.1:%d", port), done: make(chan struct{})}
	p.cmd = exec.Command(intakeBin, append([]string{"serve", "--roles", o.roles,
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--temporal-addr", o.temporal,
		"--mongodb-uri", "mongodb://" + o.mongo + "/", "--admin-token", s.token}, o.args...)...)
	p.cmd.Env = append(append(append(os.Environ(), keyEnv...), "INTAKE_LOG_LEVEL=info"), o.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	require.NoError(t, p.cmd.Start())
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("serve --roles %s output:\n%s", o.roles, tail(p.logs.String(), 6000))
		}
	})
	return p
}

func (p *server) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *server) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// readyz returns /readyz's status and message (0 when the process does not answer).
func (p *server) readyz() (int, string) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(p.base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ans struct{ Message string }
	_ = json.Unmarshal(raw, &ans)
	return resp.StatusCode, ans.Message
}

// waitReady waits until /readyz answers 200.
func (p *server) waitReady(within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, msg := p.readyz()
		if code == http.StatusOK {
			return
		}
		if p.exited() || time.Now().After(deadline) {
			p.t.Fatalf("serve did not become ready (last: %d %s):\n%s", code, msg, tail(p.logs.String(), 4000))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// post sends a webhook to this process.
func (p *server) post(integration string, body []byte) (int, map[string]any) {
	resp, err := http.Post(p.base+"/webhooks/"+integration, "application/json", bytes.NewReader(body))
	require.NoError(p.t, err)
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out
}

// testPKI is a CA with a server certificate for 127.0.0.1 (also good for client authentication,
// as the embedded server's own system worker presents it) and a client certificate, as PEM files.
type testPKI struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
	// OtherCA signed a client certificate the server must refuse.
	OtherClientCert, OtherClientKey string
}

func newPKI(t testing.TB) testPKI {
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	serial := int64(1)
	tmpl := func(cn string) *x509.Certificate {
		serial++
		return &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	}
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		c := tmpl(cn)
		c.IsCA, c.BasicConstraintsValid, c.KeyUsage = true, true, x509.KeyUsageCertSign|x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, c, c, &k.PublicKey, k)
		require.NoError(t, err)
		parsed, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return parsed, k, der
	}
	leaf := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage ...x509.ExtKeyUsage) ([]byte, []byte) {
		k := newKey()
		c := tmpl(cn)
		c.ExtKeyUsage, c.KeyUsage = usage, x509.KeyUsageDigitalSignature
		c.IPAddresses, c.DNSNames = []net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost", "temporal.test"}
		der, err := x509.CreateCertificate(rand.Reader, c, ca, &k.PublicKey, caKey)
		require.NoError(t, err)
		kder, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)
		return der, kder
	}
	ca, caKey, caDER := newCA("intake test CA")
	var p testPKI
	p.CA = write("ca.pem", "CERTIFICATE", caDER)
	sc, sk := leaf(ca, caKey, "temporal", x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	p.ServerCert, p.ServerKey = write("server.pem", "CERTIFICATE", sc), write("server-key.pem", "EC PRIVATE KEY", sk)
	cc, ck := leaf(ca, caKey, "intake", x509.ExtKeyUsageClientAuth)
	p.ClientCert, p.ClientKey = write("client.pem", "CERTIFICATE", cc), write("client-key.pem", "EC PRIVATE KEY", ck)
	other, otherKey, _ := newCA("someone else's CA")
	oc, ok := leaf(other, otherKey, "stranger", x509.ExtKeyUsageClientAuth)
	p.OtherClientCert, p.OtherClientKey = write("other.pem", "CERTIFICATE", oc), write("other-key.pem", "EC PRIVATE KEY", ok)
	return p
}

// proxy forwards TCP connections to a target while it is up; down, it closes every connection
// (an outage of the service behind it, as a client sees one).
type proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	up     bool
	conns  map[net.Conn]bool
}

func startProxy(t testing.TB, target string, up bool) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{ln: ln, target: target, up: up, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); p.set(false) })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) set(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.up = up
	if !up {
		for c := range p.conns {
			_ = c.Close()
		}
		p.conns = map[net.Conn]bool{}
	}
}

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	up := p.up
	p.mu.Unlock()
	if !up {
		_ = c.Close()
		return
	}
	b, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[b] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(b, c); _ = b.Close() }()
	_, _ = io.Copy(c, b)
	_ = c.Close()
}
