// Package signature authenticates webhook deliveries and keeps credentials out of what is
// stored: every scheme an integration's security may name, checked in constant time, and the
// redaction of credential headers. It has no store and no Temporal behind it, so the receiver and
// the workflow's Verify step call the same code.
package signature

import (
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"

	"intake"
)

// Error says which signature check failed; it never contains a secret.
type Error struct{ Reason string }

func (e *Error) Error() string { return e.Reason }

// Signature schemes.
const (
	SchemeAuto       = "auto"
	SchemeHMACSHA256 = "hmac-sha256"
	SchemeHMACSHA1   = "hmac-sha1"
	SchemeStatic     = "static"
	SchemeStandard   = "standard-webhooks"
	SchemeBasic      = "basic"
	SchemeNone       = "none"
)

// StandardWebhooksTolerance is how far webhook-timestamp may be from the receipt time.
const StandardWebhooksTolerance = 5 * time.Minute

// Scheme returns the effective scheme ("auto" by default, "none" without security).
func Scheme(sec *intake.Security) string {
	switch {
	case sec == nil:
		return SchemeNone
	case sec.Scheme == "":
		return SchemeAuto
	}
	return sec.Scheme
}

// Verify checks a delivery's raw body and headers (lower-case names) against the
// integration's security. Every comparison is constant-time; any one of signature_value and
// secrets may match, so secrets rotate without downtime. The receiver and the workflow's first
// step both call it. credential reports that the header carried the secret itself (static
// match): such a header must be redacted before it goes anywhere, and the verdict trusted later.
func Verify(sec *intake.Security, headers map[string]string, body []byte, receivedAt time.Time) (credential bool, err error) {
	scheme := Scheme(sec)
	switch scheme {
	case SchemeNone:
		return false, nil
	case SchemeStandard:
		return false, verifyStandardWebhooks(sec, headers, body, receivedAt)
	case SchemeBasic:
		return true, verifyBasic(sec, headers)
	}
	got, ok := headers[strings.ToLower(sec.SignatureHeaderName)]
	if !ok || got == "" {
		return false, &Error{Reason: fmt.Sprintf("signature header %s missing", sec.SignatureHeaderName)}
	}
	for _, secret := range candidates(sec) {
		if ok, static := matches(scheme, secret, got, body); ok {
			return static, nil
		}
	}
	return false, &Error{Reason: "signature mismatch"}
}

// verifyStandardWebhooks follows the Standard Webhooks spec: HMAC-SHA256 over
// "{webhook-id}.{webhook-timestamp}.{body}" keyed with the base64 part of a whsec_ secret; the
// signature header lists space-separated "v1,<base64>" entries, any of which may match.
func verifyStandardWebhooks(sec *intake.Security, headers map[string]string, body []byte, receivedAt time.Time) error {
	id, ts, sigs := headers["webhook-id"], headers["webhook-timestamp"], headers["webhook-signature"]
	for name, v := range map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sigs} {
		if v == "" {
			return &Error{Reason: fmt.Sprintf("signature header %s missing", name)}
		}
	}
	sec0, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return &Error{Reason: "signature timestamp is not a number"}
	}
	if d := receivedAt.Sub(time.Unix(sec0, 0)); d > StandardWebhooksTolerance || d < -StandardWebhooksTolerance {
		return &Error{Reason: "signature timestamp outside tolerance"}
	}
	signed := append([]byte(id+"."+ts+"."), body...)
	for _, secret := range candidates(sec) {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
		if err != nil {
			continue
		}
		mac := hmac.New(sha256.New, key)
		mac.Write(signed)
		want := mac.Sum(nil)
		for _, entry := range strings.Fields(sigs) {
			version, sig, ok := strings.Cut(entry, ",")
			if !ok || version != "v1" {
				continue
			}
			if b, err := base64.StdEncoding.DecodeString(sig); err == nil && hmac.Equal(b, want) {
				return nil
			}
		}
	}
	return &Error{Reason: "signature mismatch"}
}

// verifyBasic checks "Authorization: Basic base64(user:password)" against "user:password" secrets.
func verifyBasic(sec *intake.Security, headers map[string]string) error {
	name := sec.SignatureHeaderName
	if name == "" {
		name = "Authorization"
	}
	got, ok := headers[strings.ToLower(name)]
	if !ok || got == "" {
		return &Error{Reason: fmt.Sprintf("signature header %s missing", name)}
	}
	enc, ok := strings.CutPrefix(got, "Basic ")
	if !ok {
		return &Error{Reason: "signature header " + name + " is not Basic credentials"}
	}
	cred, err := base64.StdEncoding.DecodeString(strings.TrimSpace(enc))
	if err != nil {
		return &Error{Reason: "signature header " + name + " is not Basic credentials"}
	}
	for _, secret := range candidates(sec) {
		if equal(string(cred), secret) {
			return nil
		}
	}
	return &Error{Reason: "signature mismatch"}
}

func candidates(sec *intake.Security) []string {
	out := make([]string, 0, 1+len(sec.Secrets))
	for _, s := range append([]string{sec.SignatureValue}, sec.Secrets...) {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func matches(scheme, secret, got string, body []byte) (ok, static bool) {
	switch scheme {
	case SchemeStatic:
		return equal(got, secret), true
	case SchemeHMACSHA256:
		_, key := splitAlgorithm(secret)
		return hmacMatches(sha256.New, key, got, body, true), false
	case SchemeHMACSHA1:
		_, key := splitAlgorithm(secret)
		return hmacMatches(sha1.New, key, got, body, true), false
	case SchemeAuto:
		// The seed's semantics: the header is the secret itself, or the hex HMAC of the body
		// keyed with it; a sha256=/sha1= prefix on the secret picks the algorithm.
		algo, key := splitAlgorithm(secret)
		staticOK := equal(got, secret) || (key != secret && equal(got, key))
		h := sha256.New
		if algo == "sha1" {
			h = sha1.New
		}
		if staticOK {
			return true, true
		}
		return hmacMatches(h, key, got, body, false), false
	}
	return false, false
}

func splitAlgorithm(secret string) (algo, key string) {
	for _, a := range []string{"sha256", "sha1"} {
		if rest, ok := strings.CutPrefix(secret, a+"="); ok {
			return a, rest
		}
	}
	return "", secret
}

func hmacMatches(h func() hash.Hash, key, got string, body []byte, allowBase64 bool) bool {
	mac := hmac.New(h, []byte(key))
	mac.Write(body)
	want := mac.Sum(nil)
	_, digest := splitAlgorithm(strings.TrimSpace(got))
	if b, err := hex.DecodeString(strings.ToLower(digest)); err == nil && hmac.Equal(b, want) {
		return true
	}
	if allowBase64 {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding} {
			if b, err := enc.DecodeString(digest); err == nil && hmac.Equal(b, want) {
				return true
			}
		}
	}
	return false
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// DefaultRedacted are the header names masked in every delivery: credentials and session
// tokens that senders and proxies commonly add. An integration's redact_headers adds more.
var DefaultRedacted = []string{
	"authorization", "proxy-authorization", "cookie", "set-cookie",
	"x-api-key", "api-key", "apikey", "x-auth-token", "x-access-token", "x-refresh-token",
	"x-csrf-token", "x-xsrf-token", "x-amz-security-token", "x-goog-iap-jwt-assertion",
	"private-token", "x-vault-token",
}

// Redact masks credentials before headers enter a workflow or the store: the default list,
// the integration's extra names, and the signature header when it carried the secret itself
// (credential). An HMAC digest is not a secret and stays, for re-verification.
func Redact(sec *intake.Security, extra []string, headers map[string]string, credential bool) map[string]string {
	out := make(map[string]string, len(headers))
	for k, v := range headers {
		out[k] = v
	}
	mask := func(name string) {
		k := strings.ToLower(name)
		if _, ok := out[k]; ok {
			out[k] = intake.Masked
		}
	}
	for _, k := range DefaultRedacted {
		mask(k)
	}
	for _, k := range extra {
		mask(k)
	}
	if sec != nil && credential && sec.SignatureHeaderName != "" {
		mask(sec.SignatureHeaderName)
	}
	return out
}
