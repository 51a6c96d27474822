package tclient

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/converter"
)

func TestTLSFilesConfig(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("hello"), 0o600))
	for _, tc := range []struct {
		name    string
		files   TLSFiles
		wantErr string
	}{
		{"a certificate without its key is refused", TLSFiles{Prefix: "X", Cert: "c.pem"}, "X_CERT and X_KEY go together"},
		{"a key without its certificate is refused", TLSFiles{Prefix: "X", Key: "k.pem"}, "X_CERT and X_KEY go together"},
		{"a missing CA file is named", TLSFiles{Prefix: "X", CA: filepath.Join(dir, "absent.pem")}, "X_CA"},
		{"a CA file without a certificate is refused", TLSFiles{Prefix: "X", CA: notPEM}, "holds no PEM certificate"},
		{"a missing key pair is named", TLSFiles{Prefix: "X", Cert: notPEM, Key: notPEM}, "X_CERT/X_KEY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.files.Config()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
	t.Run("a server name alone gives TLS with the system roots", func(t *testing.T) {
		f := TLSFiles{ServerName: "tenant.tmprl.cloud"}
		require.True(t, f.Set())
		cfg, err := f.Config()
		require.NoError(t, err)
		assert.Equal(t, "tenant.tmprl.cloud", cfg.ServerName)
		assert.Nil(t, cfg.RootCAs)
		assert.Empty(t, cfg.Certificates)
	})
	assert.False(t, TLSFiles{Prefix: "X"}.Set(), "no setting: no TLS")
}

func key(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func TestCodec(t *testing.T) {
	payload, err := converter.GetDefaultDataConverter().ToPayload(map[string]string{"body": "secret-looking text"})
	require.NoError(t, err)
	oldCodec, err := NewCodec([][]byte{key(1)})
	require.NoError(t, err)
	sealed, err := oldCodec.Encode([]*commonpb.Payload{payload})
	require.NoError(t, err)

	t.Run("a sealed payload hides data and encoding", func(t *testing.T) {
		assert.NotContains(t, string(sealed[0].Data), "secret-looking")
		assert.Equal(t, EncodingEncrypted, string(sealed[0].Metadata[converter.MetadataEncoding]))
	})
	t.Run("it opens to the original payload", func(t *testing.T) {
		opened, err := oldCodec.Decode(sealed)
		require.NoError(t, err)
		assert.Equal(t, payload.Data, opened[0].Data)
		assert.Equal(t, payload.Metadata, opened[0].Metadata)
	})
	t.Run("after a rotation the old key still opens, the new one seals", func(t *testing.T) {
		rotated, err := NewCodec([][]byte{key(2), key(1)})
		require.NoError(t, err)
		opened, err := rotated.Decode(sealed)
		require.NoError(t, err)
		assert.Equal(t, payload.Data, opened[0].Data)
		fresh, err := rotated.Encode([]*commonpb.Payload{payload})
		require.NoError(t, err)
		_, err = oldCodec.Decode(fresh)
		require.Error(t, err, "the old key alone cannot open what the new key sealed")
		assert.Contains(t, err.Error(), "not among INTAKE_SECRET_KEYS")
	})
	t.Run("a tampered payload is refused", func(t *testing.T) {
		bad := &commonpb.Payload{Metadata: sealed[0].Metadata, Data: append([]byte(nil), sealed[0].Data...)}
		bad.Data[len(bad.Data)-1] ^= 1
		_, err := oldCodec.Decode([]*commonpb.Payload{bad})
		require.Error(t, err)
	})
	t.Run("payloads written before the codec pass through", func(t *testing.T) {
		opened, err := oldCodec.Decode([]*commonpb.Payload{payload})
		require.NoError(t, err)
		assert.Equal(t, payload, opened[0])
	})
	t.Run("no key, no codec", func(t *testing.T) {
		_, err := NewCodec(nil)
		require.Error(t, err)
	})
}

func TestCodecServer(t *testing.T) {
	codec, err := NewCodec([][]byte{key(3)})
	require.NoError(t, err)
	srv := httptest.NewServer(&CodecServer{Codec: codec, Token: "tok", Origins: []string{"https://ui.example/"}})
	defer srv.Close()
	do := func(method, path, token, origin string) *http.Response {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader([]byte(`{"payloads":[]}`)))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp
	}
	for _, tc := range []struct {
		name                  string
		method, token, origin string
		status                int
		allowOrigin           string
	}{
		{"decode with the token answers", http.MethodPost, "tok", "", 200, ""},
		{"no token is refused", http.MethodPost, "", "", 401, ""},
		{"a wrong token is refused", http.MethodPost, "nope", "", 401, ""},
		{"the UI's preflight is answered without a token", http.MethodOptions, "", "https://ui.example", 204, "https://ui.example"},
		{"another origin gets no CORS grant", http.MethodOptions, "", "https://evil.example", 204, ""},
		{"GET is not the protocol", http.MethodGet, "tok", "", 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := do(tc.method, "/codec/decode", tc.token, tc.origin)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, tc.allowOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
		})
	}
}

func TestPollWatch(t *testing.T) {
	w := &PollWatch{}
	h := w.Handler()
	assert.False(t, w.Polling(), "nothing polled yet")
	h.WithTags(map[string]string{"operation": "GetWorkflowExecutionHistory"}).Counter("temporal_long_request").Inc(1)
	assert.False(t, w.Polling(), "a history long poll is not a task-queue poll")
	poll := h.WithTags(map[string]string{"operation": "PollWorkflowTaskQueue"})
	poll.Counter("temporal_long_request").Inc(1)
	assert.True(t, w.Polling())
	poll.WithTags(map[string]string{"status_code": "Unavailable"}).Counter("temporal_long_request_failure").Inc(1)
	assert.False(t, w.Polling(), "the last poll failed")
	poll.Counter("temporal_long_request").Inc(1)
	assert.True(t, w.Polling(), "polling again")
}
