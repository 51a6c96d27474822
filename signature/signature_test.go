package signature_test

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/signature"
)

// GitHub's published example (docs: "Validating webhook deliveries").
const (
	githubSecret    = "It's a Secret to Everybody"
	githubPayload   = "Hello, World!"
	githubSignature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
)

func hmacOf(newHash string, key, body string) []byte {
	var m = hmac.New(sha256.New, []byte(key))
	if newHash == "sha1" {
		m = hmac.New(sha1.New, []byte(key))
	}
	m.Write([]byte(body))
	return m.Sum(nil)
}

func TestVerifySignature(t *testing.T) {
	body := `{"a":1}`
	sha256hex := hex.EncodeToString(hmacOf("sha256", "k1", body))
	sha1hex := hex.EncodeToString(hmacOf("sha1", "k1", body))
	tests := []struct {
		name       string
		sec        intake.Security
		header     string // value of X-Sig; "" = absent
		body       string
		wantErr    string
		credential bool
	}{
		{"github published vector, auto with sha256= key prefix", intake.Security{SignatureHeaderName: "X-Hub-Signature-256", SignatureValue: "sha256=" + githubSecret}, githubSignature, githubPayload, "", false},
		{"github published vector, hmac-sha256", intake.Security{SignatureHeaderName: "X-Hub-Signature-256", SignatureValue: githubSecret, Scheme: "hmac-sha256"}, githubSignature, githubPayload, "", false},
		{"github published vector, upper-case hex", intake.Security{SignatureHeaderName: "X-Hub-Signature-256", SignatureValue: githubSecret, Scheme: "hmac-sha256"}, strings.ToUpper(githubSignature[7:]), githubPayload, "", false},
		{"github vector with a changed body is refused", intake.Security{SignatureHeaderName: "X-Hub-Signature-256", SignatureValue: githubSecret, Scheme: "hmac-sha256"}, githubSignature, githubPayload + " ", "signature mismatch", false},
		{"auto accepts the header equal to the secret", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "k1"}, "k1", body, "", true},
		{"auto accepts hex hmac without prefix", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "k1"}, sha256hex, body, "", false},
		{"auto sha1= prefix selects HMAC-SHA1", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "sha1=k1"}, "sha1=" + sha1hex, body, "", false},
		{"hmac-sha256 base64 digest", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "k1", Scheme: "hmac-sha256"}, base64.StdEncoding.EncodeToString(hmacOf("sha256", "k1", body)), body, "", false},
		{"hmac-sha1", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "k1", Scheme: "hmac-sha1"}, "sha1=" + sha1hex, body, "", false},
		{"hmac-sha1 refuses a sha256 digest", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "k1", Scheme: "hmac-sha1"}, sha256hex, body, "signature mismatch", false},
		{"static", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "tok", Scheme: "static"}, "tok", body, "", true},
		{"static wrong", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "tok", Scheme: "static"}, "tok2", body, "signature mismatch", false},
		{"hmac is not accepted as static", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "k1", Scheme: "static"}, sha256hex, body, "signature mismatch", false},
		{"rotated secret matches", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "old", Secrets: []string{"k1"}, Scheme: "hmac-sha256"}, sha256hex, body, "", false},
		{"wrong secret", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "other"}, sha256hex, body, "signature mismatch", false},
		{"missing header", intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: "k1"}, "", body, "signature header X-Sig missing", false},
		{"none accepts anything", intake.Security{Scheme: "none", AllowUnsigned: true}, "", body, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{}
			if tt.header != "" {
				headers[strings.ToLower(tt.sec.SignatureHeaderName)] = tt.header
			}
			credential, err := signature.Verify(&tt.sec, headers, []byte(tt.body), time.Now())
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "signature")
				assert.Equal(t, tt.wantErr, err.Error())
				for _, s := range append([]string{tt.sec.SignatureValue}, tt.sec.Secrets...) {
					if s != "" {
						assert.NotContains(t, err.Error(), s, "a refusal never names a secret")
					}
				}
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.credential, credential)
		})
	}
}

func TestRedactHeaders(t *testing.T) {
	sec := &intake.Security{SignatureHeaderName: "X-Token", SignatureValue: "s3cret", Scheme: "static"}
	in := map[string]string{"x-token": "s3cret", "authorization": "Bearer abc", "cookie": "a=b", "x-other": "keep"}
	out := signature.Redact(sec, nil, in, true)
	assert.Equal(t, intake.Masked, out["x-token"])
	assert.Equal(t, intake.Masked, out["authorization"])
	assert.Equal(t, intake.Masked, out["cookie"])
	assert.Equal(t, "keep", out["x-other"])
	assert.Equal(t, "s3cret", in["x-token"], "the input map is not modified")
	hm := signature.Redact(sec, nil, map[string]string{"x-token": "sha256=abcd"}, false)
	assert.Equal(t, "sha256=abcd", hm["x-token"], "an HMAC digest is not a secret and stays for re-verification")
}

// The Standard Webhooks published test vector (standard-webhooks/standard-webhooks libraries).
const (
	swSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	swID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	swTimestamp = "1614265330"
	swPayload   = `{"test": 2432232314}`
	swSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestStandardWebhooks(t *testing.T) {
	at := time.Unix(1614265330, 0)
	headers := func(sig, ts string) map[string]string {
		h := map[string]string{"webhook-id": swID, "webhook-timestamp": ts, "webhook-signature": sig}
		for k, v := range h {
			if v == "" {
				delete(h, k)
			}
		}
		return h
	}
	tests := []struct {
		name    string
		sec     intake.Security
		headers map[string]string
		at      time.Time
		wantErr string
	}{
		{"published vector", intake.Security{Scheme: "standard-webhooks", SignatureValue: swSecret}, headers(swSignature, swTimestamp), at, ""},
		{"one of several v1 signatures matches", intake.Security{Scheme: "standard-webhooks", SignatureValue: swSecret}, headers("v1,Zm9vYmFy v2,abc "+swSignature, swTimestamp), at, ""},
		{"rotated secret matches", intake.Security{Scheme: "standard-webhooks", SignatureValue: "whsec_" + base64.StdEncoding.EncodeToString([]byte("old")), Secrets: []string{swSecret}}, headers(swSignature, swTimestamp), at, ""},
		{"wrong secret", intake.Security{Scheme: "standard-webhooks", SignatureValue: "whsec_" + base64.StdEncoding.EncodeToString([]byte("other"))}, headers(swSignature, swTimestamp), at, "signature mismatch"},
		{"timestamp 6 minutes old", intake.Security{Scheme: "standard-webhooks", SignatureValue: swSecret}, headers(swSignature, swTimestamp), at.Add(6 * time.Minute), "signature timestamp outside tolerance"},
		{"timestamp 6 minutes ahead", intake.Security{Scheme: "standard-webhooks", SignatureValue: swSecret}, headers(swSignature, swTimestamp), at.Add(-6 * time.Minute), "signature timestamp outside tolerance"},
		{"4 minutes old is within tolerance", intake.Security{Scheme: "standard-webhooks", SignatureValue: swSecret}, headers(swSignature, swTimestamp), at.Add(4 * time.Minute), ""},
		{"missing signature header", intake.Security{Scheme: "standard-webhooks", SignatureValue: swSecret}, headers("", swTimestamp), at, "signature header webhook-signature missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cred, err := signature.Verify(&tt.sec, tt.headers, []byte(swPayload), tt.at)
			assert.False(t, cred, "an HMAC is not a credential")
			if tt.wantErr == "" {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, tt.wantErr, err.Error())
		})
	}
}

func TestBasic(t *testing.T) {
	sec := &intake.Security{Scheme: "basic", SignatureValue: "ci:old-pass", Secrets: []string{"ci:new-pass"}}
	auth := func(s string) map[string]string {
		return map[string]string{"authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(s))}
	}
	for name, tc := range map[string]struct {
		headers map[string]string
		wantErr string
	}{
		"valid":          {auth("ci:old-pass"), ""},
		"rotated":        {auth("ci:new-pass"), ""},
		"wrong password": {auth("ci:nope"), "signature mismatch"},
		"missing header": {map[string]string{}, "signature header Authorization missing"},
		"bearer instead": {map[string]string{"authorization": "Bearer x"}, "signature header Authorization is not Basic credentials"},
	} {
		t.Run(name, func(t *testing.T) {
			cred, err := signature.Verify(sec, tc.headers, []byte(`{}`), time.Now())
			if tc.wantErr == "" {
				require.NoError(t, err)
				assert.True(t, cred, "basic credentials are redacted and the verdict trusted")
				return
			}
			require.Error(t, err)
			assert.Equal(t, tc.wantErr, err.Error())
			assert.NotContains(t, err.Error(), "pass")
		})
	}
}

func TestRedactDefaultsAndExtraNames(t *testing.T) {
	in := map[string]string{"x-api-key": "k1", "set-cookie": "s=1", "x-vault-token": "v", "x-custom-secret": "c", "x-request-id": "r"}
	out := signature.Redact(nil, []string{"X-Custom-Secret"}, in, false)
	for _, k := range []string{"x-api-key", "set-cookie", "x-vault-token", "x-custom-secret"} {
		assert.Equal(t, intake.Masked, out[k], k)
	}
	assert.Equal(t, "r", out["x-request-id"])
}

// FuzzVerify: any headers and body give a verdict without panicking, a refusal never carries a
// secret, and a body signed with the secret is always accepted.
func FuzzVerify(f *testing.F) {
	f.Add("sha256=abc", "It's a Secret to Everybody", []byte("Hello, World!"), "auto")
	f.Add("", "k", []byte("{}"), "hmac-sha1")
	f.Add("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "v1,bad", []byte(`{"a":1}`), "standard-webhooks")
	f.Add("Basic dTpw", "u:p", []byte(""), "basic")
	f.Fuzz(func(t *testing.T, header, secret string, body []byte, scheme string) {
		if secret == "" || strings.ContainsAny(secret, "\x00") {
			return
		}
		sec := &intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: secret, Scheme: scheme}
		headers := map[string]string{"x-sig": header, "authorization": header, "webhook-id": header,
			"webhook-timestamp": header, "webhook-signature": header}
		_, err := signature.Verify(sec, headers, body, time.Now())
		if err != nil && len(secret) >= 24 { // long enough not to occur in the fixed wording by chance
			assert.NotContains(t, err.Error(), secret)
		}
		if scheme == "hmac-sha256" {
			m := hmac.New(sha256.New, []byte(secret))
			m.Write(body)
			headers["x-sig"] = "sha256=" + hex.EncodeToString(m.Sum(nil))
			_, err := signature.Verify(sec, headers, body, time.Now())
			assert.NoError(t, err)
		}
	})
}
