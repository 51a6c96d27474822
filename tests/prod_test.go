package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"google.golang.org/protobuf/types/known/durationpb"

	"intake/tclient"
)

const teamsHook = `{"identifier":"teams_hook","security":{"scheme":"none","allow_unsigned":true},
  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".id"}}}]}`

// TestServeRoles: serve processes against a dev stack's Temporal and store, each role apart.
func TestServeRoles(t *testing.T) {
	s := startDev(t)
	putIntegration(t, s, teamsHook)

	t.Run("a namespace lacking a search attribute is refused at start, naming it", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := s.temporal.WorkflowService().RegisterNamespace(ctx, &workflowservice.RegisterNamespaceRequest{
			Namespace: "bare", WorkflowExecutionRetentionPeriod: durationpb.New(24 * time.Hour)})
		require.NoError(t, err)
		three := map[string]enumspb.IndexedValueType{}
		for _, a := range []string{"IntakeIntegration", "IntakeOrigin", "IntakeTemplate"} {
			three[a] = enumspb.INDEXED_VALUE_TYPE_KEYWORD
		}
		require.Eventually(t, func() bool {
			_, err := s.temporal.OperatorService().AddSearchAttributes(ctx, &operatorservice.AddSearchAttributesRequest{Namespace: "bare", SearchAttributes: three})
			if err != nil {
				return false
			}
			res, err := s.temporal.OperatorService().ListSearchAttributes(ctx, &operatorservice.ListSearchAttributesRequest{Namespace: "bare"})
			return err == nil && len(res.GetCustomAttributes()) >= 3
		}, 30*time.Second, 500*time.Millisecond)

		p := startServe(t, s, serveOpts{roles: "receiver", args: []string{"--temporal-namespace", "bare"}})
		select {
		case <-p.done:
		case <-time.After(time.Minute):
			t.Fatal("serve kept running against a namespace without IntakeOutcome")
		}
		require.Error(t, p.err, "serve must exit non-zero")
		assert.Contains(t, p.logs.String(), "Temporal namespace bare lacks the Keyword search attribute(s) IntakeOutcome;")
		assert.Contains(t, p.logs.String(), "temporal operator search-attribute create --namespace bare --name IntakeOutcome --type Keyword")
	})

	t.Run("a receiver and a worker started before Temporal is reachable wait and become ready when it is", func(t *testing.T) {
		frontend := startProxy(t, s.addr("temporal"), false)
		mongo := startProxy(t, s.addr("mongodb"), true)
		recv := startServe(t, s, serveOpts{roles: "receiver", temporal: frontend.addr(), mongo: mongo.addr()})
		wrk := startServe(t, s, serveOpts{roles: "worker", temporal: frontend.addr()})
		time.Sleep(4 * time.Second)
		for _, p := range []*server{recv, wrk} {
			require.False(t, p.exited(), "a role must not exit while Temporal is unreachable:\n%s", p.logs.String())
			code, msg := p.readyz()
			assert.Equal(t, http.StatusServiceUnavailable, code)
			assert.Equal(t, "Temporal is not reachable", msg)
		}
		code, _ := recv.post("teams_hook", []byte(`{"id":"early"}`))
		assert.Equal(t, http.StatusServiceUnavailable, code, "no Temporal: the sender retries")

		frontend.set(true)
		recv.waitReady(45 * time.Second)
		wrk.waitReady(45 * time.Second)
		code, out := recv.post("teams_hook", []byte(`{"id":"after-outage"}`))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		_, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)

		// The receiver needs Temporal only: a store outage does not take it out of the balancer.
		mongo.set(false)
		for i := 0; i < 5; i++ {
			code, msg := recv.readyz()
			require.Equal(t, http.StatusOK, code, "receiver not ready while MongoDB is down: %s", msg)
			time.Sleep(400 * time.Millisecond)
		}
		mongo.set(true)

		// A Temporal outage makes both unready, and they recover without a restart.
		frontend.set(false)
		require.Eventually(t, func() bool { c, _ := wrk.readyz(); return c == http.StatusServiceUnavailable }, 20*time.Second, 200*time.Millisecond)
		require.Eventually(t, func() bool { c, _ := recv.readyz(); return c == http.StatusServiceUnavailable }, 20*time.Second, 200*time.Millisecond)
		frontend.set(true)
		wrk.waitReady(45 * time.Second)
		recv.waitReady(45 * time.Second)
	})
}

// TestServeSecuredTemporal: a frontend that requires client certificates (mTLS), reached by
// intake dev and a serve process with INTAKE_TEMPORAL_TLS_*, and payloads sealed with the
// secret key (INTAKE_PAYLOAD_CODEC=aes-gcm) that the codec endpoint opens for the Temporal UI.
func TestServeSecuredTemporal(t *testing.T) {
	pki := newPKI(t)
	tlsFor := func(cert, key string) *tls.Config {
		pair, err := tls.LoadX509KeyPair(cert, key)
		require.NoError(t, err)
		pem, err := os.ReadFile(pki.CA)
		require.NoError(t, err)
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(pem))
		return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool}
	}
	const secretKey = "8d3c4a9f2b7e6d1c0a5f4e3d2c1b0a998877665544332211ffeeddccbbaa0099"
	rawKey, err := hex.DecodeString(secretKey)
	require.NoError(t, err)
	codec, err := tclient.NewCodec([][]byte{rawKey})
	require.NoError(t, err)
	env := []string{"INTAKE_TEMPORAL_TLS_CERT=" + pki.ClientCert, "INTAKE_TEMPORAL_TLS_KEY=" + pki.ClientKey,
		"INTAKE_TEMPORAL_TLS_CA=" + pki.CA, "INTAKE_PAYLOAD_CODEC=aes-gcm", "INTAKE_SECRET_KEY=" + secretKey}
	mtls := client.ConnectionOptions{TLS: tlsFor(pki.ClientCert, pki.ClientKey)}
	// The test's client holds the key too (like every intake process); raw below has none.
	s := startDevWith(t, []string{"--temporal-frontend-tls-cert", pki.ServerCert, "--temporal-frontend-tls-key", pki.ServerKey,
		"--temporal-frontend-tls-ca", pki.CA, "--temporal-ui-url", "http://ui.example:8233"},
		client.Options{ConnectionOptions: mtls, DataConverter: codec.DataConverter()}, env...)
	putIntegration(t, s, teamsHook)

	t.Run("the frontend refuses plaintext and certificates of another CA", func(t *testing.T) {
		for name, opts := range map[string]client.ConnectionOptions{
			"plaintext":         {},
			"TLS, no cert":      {TLS: &tls.Config{RootCAs: tlsFor(pki.ClientCert, pki.ClientKey).RootCAs}},
			"another CA's cert": {TLS: func() *tls.Config { c := tlsFor(pki.OtherClientCert, pki.OtherClientKey); return c }()},
		} {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := client.DialContext(ctx, client.Options{HostPort: s.addr("temporal"), ConnectionOptions: opts})
			cancel()
			if err == nil {
				c.Close()
			}
			assert.Error(t, err, name)
		}
	})

	t.Run("serve with a client certificate receives and works", func(t *testing.T) {
		p := startServe(t, s, serveOpts{roles: "receiver,worker", env: env})
		p.waitReady(time.Minute)
		code, out := p.post("teams_hook", []byte(`{"id":"over-mtls"}`))
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		_, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
	})

	t.Run("payloads in history are sealed; the codec endpoint opens them", func(t *testing.T) {
		body := `{"id":"sealed-team-7f3a"}`
		code, out := s.post("teams_hook", []byte(body), nil)
		require.Equal(t, http.StatusAccepted, code, "%v", out)
		wfID := out["workflow_id"].(string)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := s.waitWorkflow(wfID)
		require.NoError(t, err)
		// Without the key the result is unreadable.
		raw, err := client.Dial(client.Options{HostPort: s.addr("temporal"), ConnectionOptions: mtls})
		require.NoError(t, err)
		defer raw.Close()
		var res map[string]any
		require.Error(t, raw.GetWorkflow(ctx, wfID, "").Get(ctx, &res))
		history := s.history(wfID)
		assert.NotContains(t, history, "sealed-team-7f3a", "the body must not be readable in the cluster")
		assert.Contains(t, history, "binary/encrypted")

		var sealed []*commonpb.Payload
		it := s.temporal.GetWorkflowHistory(ctx, wfID, "", false, 0)
		for it.HasNext() {
			ev, err := it.Next()
			require.NoError(t, err)
			if a := ev.GetWorkflowExecutionStartedEventAttributes(); a != nil {
				sealed = a.GetInput().GetPayloads()
			}
		}
		require.NotEmpty(t, sealed)

		remote := func(token string) converter.PayloadCodec {
			return converter.NewRemotePayloadCodec(converter.RemotePayloadCodecOptions{Endpoint: s.base + "/codec",
				ModifyRequest: func(r *http.Request) error {
					r.Header.Set("Authorization", "Bearer "+token)
					r.Header.Set("X-Namespace", "default")
					return nil
				}})
		}
		_, err = remote("wrong").Decode(sealed)
		require.Error(t, err, "the codec endpoint needs the token")
		opened, err := remote(s.token).Decode(sealed)
		require.NoError(t, err)
		var plain strings.Builder
		for _, p := range opened {
			plain.Write(p.GetData())
		}
		assert.Contains(t, plain.String(), "sealed-team-7f3a")
		// And the other way: what the endpoint seals, it opens.
		resealed, err := remote(s.token).Encode(opened)
		require.NoError(t, err)
		assert.NotContains(t, string(resealed[0].GetData()), "sealed-team-7f3a")

		// The Temporal UI calls it from its origin (INTAKE_TEMPORAL_UI_URL's by default).
		preflight := func(origin string) http.Header {
			req, _ := http.NewRequest(http.MethodOptions, s.base+"/codec/decode", nil)
			req.Header.Set("Origin", origin)
			req.Header.Set("Access-Control-Request-Method", "POST")
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			return resp.Header
		}
		h := preflight("http://ui.example:8233")
		assert.Equal(t, "http://ui.example:8233", h.Get("Access-Control-Allow-Origin"))
		assert.Contains(t, h.Get("Access-Control-Allow-Headers"), "X-Namespace")
		assert.Empty(t, preflight("http://evil.example").Get("Access-Control-Allow-Origin"))
	})
}
