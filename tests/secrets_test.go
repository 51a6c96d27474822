package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/examples"
)

// Secrets end to end: the API's mask refused or kept, key rotation across restarts with
// `intake rotate-secrets`, and a wrong key leaving the other integrations working.
func TestSecrets(t *testing.T) {
	s := startDev(t)
	kept, err := os.ReadFile(filepath.Join(s.dir, ".intake", "secret-key"))
	require.NoError(t, err)
	oldKey := strings.TrimSpace(string(kept))
	const newKey = "the-new-secret-key-2024"
	sec := exampleSecurity(t, "github_repos")
	sent := 0
	// deliver posts a signed github_repos event; the receiver's 202 means it verified the
	// signature with the decrypted secret. The worker's own check is awaited only where asked:
	// the first workflow after a restart of the embedded Temporal waits ~50 s for its first task.
	deliver := func(t *testing.T, await bool) {
		t.Helper()
		sent++
		name := fmt.Sprintf("secrets-%d", sent)
		body := []byte(fmt.Sprintf(`{"action":"created","repository":{"name":%q,"full_name":"octo-org/%s","private":false,"html_url":"https://github.com/octo-org/%s","owner":{"login":"octocat"}}}`, name, name, name))
		code, out := s.post("github_repos", body, sign(sec, body, map[string]string{"X-GitHub-Event": "repository", "X-GitHub-Delivery": name}))
		require.Equal(t, 202, code, "%v", out)
		if await {
			res, err := s.waitWorkflow(out["workflow_id"].(string))
			require.NoError(t, err)
			assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
		}
	}
	restart := func(keys string) {
		s.stop()
		s.env = []string{"INTAKE_SECRET_KEYS=" + keys}
		s.start()
	}
	type readyz struct {
		Status string            `json:"status"`
		Broken map[string]string `json:"broken_integrations"`
	}
	ready := func() (int, readyz) {
		var r readyz
		code, _ := s.request("GET", "/readyz", nil, false, &r)
		return code, r
	}
	const undecryptable = "cannot decrypt its secrets: the key it was written with is not in INTAKE_SECRET_KEYS (security.signature_value)"

	t.Run("the mask is refused unless it stands for a stored value", func(t *testing.T) {
		var e struct {
			Error, Message string
			Details        []map[string]string
		}
		code, _ := s.request("PUT", "/api/v1/integrations/masked_hook", []byte(`{"security":{"scheme":"hmac-sha256","signature_header_name":"X-Sig","signature_value":"********"},
		  "mappings":[{"template":"team","entity":{"identifier":".id"}}]}`), true, &e)
		assert.Equal(t, 400, code)
		assert.Equal(t, "invalid_config", e.Error)
		assert.Equal(t, `security.signature_value: "********" is the API's mask, not a secret; send the secret`, e.Message)
		require.Len(t, e.Details, 1)
		assert.Equal(t, "security.signature_value", e.Details[0]["field"])
		code, _ = s.request("GET", "/api/v1/integrations/masked_hook", nil, true, nil)
		assert.Equal(t, 404, code)

		var in map[string]any
		code, _ = s.request("GET", "/api/v1/integrations/github_repos", nil, true, &in)
		require.Equal(t, 200, code)
		code, h := s.request("PUT", "/api/v1/integrations/github_repos", in, true, nil)
		assert.Equal(t, 200, code)
		assert.Equal(t, "unchanged", h.Get("X-Intake-Result"), "the masks stand for the stored secrets")
		in["security"].(map[string]any)["secrets"] = []any{intake.Masked}
		code, _ = s.request("PUT", "/api/v1/integrations/github_repos", in, true, &e)
		assert.Equal(t, 400, code)
		assert.Equal(t, "security.secrets[0]", e.Details[0]["field"], "the seed's github_repos has no stored secret at index 0")
		delete(in["security"].(map[string]any), "secrets")
		in["title"] = "GitHub Repositories (edited)"
		code, h = s.request("PUT", "/api/v1/integrations/github_repos", in, true, nil)
		assert.Equal(t, 200, code)
		assert.Equal(t, "updated", h.Get("X-Intake-Result"))
		deliver(t, true)
	})

	t.Run("a restart with a new key in front still reads secrets written with the old one", func(t *testing.T) {
		restart(newKey + "," + oldKey)
		deliver(t, false)
	})

	t.Run("rotate-secrets re-encrypts with the newest key, then the old key can go", func(t *testing.T) {
		rotate := func() int {
			cmd := exec.Command(intakeBin, "rotate-secrets", "--mongodb-uri", "mongodb://"+s.addr("mongodb")+"/")
			cmd.Dir = s.dir
			cmd.Env = append(os.Environ(), "INTAKE_SECRET_KEYS="+newKey+","+oldKey)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "%s", out)
			m := regexp.MustCompile(`re-encrypted (\d+) integration`).FindStringSubmatch(string(out))
			require.NotNil(t, m, "%s", out)
			n, _ := strconv.Atoi(m[1])
			return n
		}
		assert.GreaterOrEqual(t, rotate(), 2, "github_repos and sonar_webhook")
		assert.Equal(t, 0, rotate(), "idempotent")
		restart(newKey)
		_, r := ready()
		assert.Empty(t, r.Broken)
		deliver(t, false)
	})

	t.Run("a wrong key: ready, the integration reported broken, the others still work", func(t *testing.T) {
		putIntegration(t, s, `{"identifier":"open_hook","security":{"scheme":"none","allow_unsigned":true},
		  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
		restart("a-wrong-key")
		code, r := ready()
		assert.Equal(t, 200, code)
		assert.Equal(t, "ready", r.Status)
		assert.Equal(t, undecryptable, r.Broken["github_repos"])
		assert.NotContains(t, r.Broken, "open_hook")

		code, out := s.post("open_hook", []byte(`{"id":"sg-open","name":"Open"}`), nil)
		require.Equal(t, 202, code, "%v", out)
		res, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
		assert.Equal(t, intake.DeliverySucceeded, res.Outcome)

		body := []byte(`{"action":"created","repository":{"full_name":"a/b"}}`)
		code, out = s.post("github_repos", body, sign(sec, body, nil))
		assert.Equal(t, 503, code, "the sender retries until an operator fixes the key")
		assert.Equal(t, "integration_unavailable", out["error"])
		assert.NotContains(t, out["message"], "decrypt", "the reason is for operators (readyz, log, API), not senders")

		var e map[string]any
		code, _ = s.request("GET", "/api/v1/integrations/github_repos", nil, true, &e)
		assert.Equal(t, 409, code)
		assert.Equal(t, "integration_undecryptable", e["error"])
		var list []map[string]any
		code, _ = s.request("GET", "/api/v1/integrations", nil, true, &list)
		require.Equal(t, 200, code)
		byID := map[string]map[string]any{}
		for _, in := range list {
			byID[in["identifier"].(string)] = in
		}
		assert.Nil(t, byID["open_hook"]["status"])
		assert.Equal(t, "undecryptable", byID["github_repos"]["status"])
		assert.Equal(t, intake.Masked, byID["github_repos"]["security"].(map[string]any)["signature_value"])

		// Sending the secrets again repairs it (sealed with the key this process has).
		ints, err := examples.Integrations()
		require.NoError(t, err)
		for _, in := range ints {
			if in.Identifier == "github_repos" {
				code, _ = s.request("PUT", "/api/v1/integrations/github_repos", in, true, nil)
				assert.Equal(t, 200, code)
			}
		}
		_, r = ready()
		assert.NotContains(t, r.Broken, "github_repos")
		deliver(t, true)

		for _, secret := range []string{"your-webhook-secret", "next-secret", oldKey, newKey} {
			assert.NotContains(t, s.logs.String(), secret)
		}
	})
}
