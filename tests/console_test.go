package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/examples"
)

// chromiumPath is Debian's chromium (make deps-browser installs it); INTAKE_CHROMIUM overrides.
func chromiumPath(t testing.TB) string {
	p := os.Getenv("INTAKE_CHROMIUM")
	if p == "" {
		p = "/usr/bin/chromium"
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("no Chromium at %s: run `make deps-browser` (the console's browser tests need it)", p)
	}
	return p
}

// browser starts a headless Chromium with a fresh profile; it is closed when the test ends.
func browser(t testing.TB) context.Context {
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900), // a laptop screen
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	require.NoError(t, chromedp.Do(ctx)) // starts the browser now, without a step's time limit
	t.Cleanup(func() { cancel(); cancelAlloc() })
	return ctx
}

// page drives one browser tab with a time limit per step.
type page struct {
	t     testing.TB
	ctx   context.Context
	base  string
	shots string
}

func (p *page) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(p.ctx, 45*time.Second)
}

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := p.step()
	defer cancel()
	require.NoError(p.t, chromedp.Do(ctx, steps...))
}

func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := p.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(p.t, err, "%s", js)
	return v
}

// open loads a console page and waits until its script has filled it.
func (p *page) open(path string) {
	p.t.Helper()
	p.do(chromedp.Navigate(p.base+path), chromedp.WaitReady(chromedp.CSS(`body[data-loaded="true"]`)))
}

// loaded waits for the page the browser went to (a click, a form) to be filled.
func (p *page) loaded(name string) {
	p.t.Helper()
	p.do(chromedp.WaitReady(chromedp.CSS(`body[data-page="` + name + `"][data-loaded="true"]`)))
}

func (p *page) click(sel string) {
	p.t.Helper()
	p.do(chromedp.Click(chromedp.CSS(sel)))
}

func (p *page) text(sel string) string {
	p.t.Helper()
	return eval[string](p, `document.querySelector(`+jsString(sel)+`).innerText`)
}

// until waits for a JavaScript condition to hold; the page may navigate meanwhile.
func (p *page) until(js string) {
	p.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`Boolean(`+js+`)`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			require.Failf(p.t, "condition never held", "%s (last error: %v)", js, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *page) location() *url.URL {
	p.t.Helper()
	u, err := url.Parse(eval[string](p, `location.href`))
	require.NoError(p.t, err)
	return u
}

// rows gives a table's body as cell texts.
func (p *page) rows(table string) [][]string {
	p.t.Helper()
	return eval[[][]string](p, `Array.from(document.querySelectorAll(`+jsString(table+" tbody tr")+`)).map(r => Array.from(r.cells).map(c => c.textContent))`)
}

// setValue replaces a field's value the way typing would (an input event follows).
func (p *page) setValue(sel, v string) {
	p.t.Helper()
	eval[chromedp.Void](p, `(() => { const e = document.querySelector(`+jsString(sel)+`); e.value = `+jsString(v)+`; e.dispatchEvent(new Event("input", {bubbles: true})); })()`)
}

func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := p.step()
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)) // quality 100 is PNG
	require.NoError(p.t, err)
	require.NoError(p.t, os.WriteFile(filepath.Join(p.shots, name+".png"), png, 0o644))
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// sonarBody is sample 03's body for another project pointing at another repository.
func sonarBody(t testing.TB, key, repo, date string) []byte {
	smp := sampleNamed(t, "03_sonar_project_care_back")
	var b map[string]any
	require.NoError(t, json.Unmarshal(smp.Body, &b))
	b["key"], b["name"] = key, key
	b["components"] = []any{map[string]any{"key": key, "name": repo, "qualifier": "TRK"}}
	if date != "" {
		b["lastAnalysisDate"] = date
	}
	raw, err := json.Marshal(b)
	require.NoError(t, err)
	return raw
}

func sampleNamed(t testing.TB, name string) examples.Sample {
	all, err := examples.Samples()
	require.NoError(t, err)
	for _, s := range all {
		if s.Name == name+".json" {
			return s
		}
	}
	t.Fatalf("no sample %s", name)
	return examples.Sample{}
}

// The operator's console, driven in a real browser against `intake dev`: signing in, the
// overview, finding the failed Sonar delivery of the replay story, its audit entries, a replay
// that succeeds once the repository arrives, a bulk replay with live progress cancelled, the
// stored configuration with secrets masked, the mapping playground, and no data without the token.
func TestConsole(t *testing.T) {
	s := startDev(t)
	sonar := exampleSecurity(t, "sonar_webhook")
	shots := os.Getenv("INTAKE_CONSOLE_SCREENSHOTS")
	if shots == "" {
		shots = filepath.Join(t.TempDir(), "screenshots")
	}
	require.NoError(t, os.MkdirAll(shots, 0o755))
	t.Logf("screenshots in %s", shots)

	// The replay story: Sonar's care_back arrives before its GitHub repository exists.
	care := sampleNamed(t, "03_sonar_project_care_back")
	code, out := s.post("sonar_webhook", care.Body, sign(sonar, care.Body, care.Headers))
	require.Equal(t, 202, code, "%v", out)
	sonarID, sonarWorkflow := out["delivery_id"].(string), out["workflow_id"].(string)
	_, err := s.waitWorkflow(sonarWorkflow)
	require.Error(t, err, "care_back fails: its repository does not exist yet")

	p := &page{t: t, ctx: browser(t), base: s.base, shots: shots}

	t.Run("without the token the pages hold no data", func(t *testing.T) {
		p.t = t
		for _, path := range []string{"/console/", "/console/deliveries", "/console/deliveries/" + url.PathEscape(sonarID),
			"/console/audit", "/console/integrations", "/console/integrations/sonar_webhook", "/console/templates",
			"/console/templates/sonar_project", "/console/playground", "/console/replays/bulk-replay.x"} {
			resp, err := http.Get(s.base + path)
			require.NoError(t, err)
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode, path)
			html := string(raw)
			for _, data := range []string{"care_back", "octo-org", "your-secret-token", "RelationMissing", s.token} {
				if strings.Contains(path, data) {
					continue // the page's own address is not data
				}
				assert.NotContains(t, html, data, "%s carries no data", path)
			}
		}
		resp, err := http.Get(s.base + "/console")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, s.base+"/console/", resp.Request.URL.String(), "/console leads to the console")

		// In the browser: sent to the sign-in page, nothing of the delivery on it.
		p.do(chromedp.Navigate(s.base + "/console/deliveries/" + url.PathEscape(sonarID)))
		p.until(`location.pathname === "/console/login"`)
		assert.NotContains(t, p.text("body"), "Relation")
		// A wrong token is refused by the API and leads back to the sign-in page with the reason.
		eval[chromedp.Void](p, `sessionStorage.setItem("intake.adminToken", "wrong-token")`)
		p.do(chromedp.Navigate(s.base + "/console/deliveries"))
		p.until(`location.pathname === "/console/login" && document.querySelector("#login-status").textContent.includes("refused")`)
		assert.NotContains(t, p.text("body"), sonarID)
		p.do(chromedp.SendKeys(chromedp.CSS("#token"), "still-wrong"), chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
		p.until(`document.querySelector("#login-status").textContent === "Token refused by the admin API."`)
		assert.Equal(t, "/console/login", p.location().Path)
		p.screenshot("login")
	})

	t.Run("sign in with the token, once per session", func(t *testing.T) {
		p.t = t
		p.do(chromedp.Navigate(s.base+"/console/login?next=/console/"), chromedp.WaitReady(chromedp.CSS("#token")),
			chromedp.SendKeys(chromedp.CSS("#token"), s.token), chromedp.Click(chromedp.CSS(`#login button[type="submit"]`)))
		p.loaded("overview")
		assert.Equal(t, s.token, eval[string](p, `sessionStorage.getItem("intake.adminToken")`), "kept in sessionStorage")
		assert.NotContains(t, p.text("body"), s.token, "the token is never shown")
		assert.Empty(t, eval[string](p, `document.cookie`), "no cookie")
	})

	t.Run("overview counts the last hour's deliveries by outcome per integration", func(t *testing.T) {
		p.t = t
		p.open("/console/")
		rows := p.rows("#counts")
		require.NotEmpty(t, rows)
		assert.Contains(t, rows, []string{"sonar_webhook", "0", "0", "0", "1", "1"})
		assert.Contains(t, p.text("#counts thead"), "failed", "outcomes are spelled out")
		p.screenshot("overview")
	})

	t.Run("find the failed Sonar delivery, follow its audit entries, replay it once the repository exists", func(t *testing.T) {
		p.t = t
		p.open("/console/deliveries")
		p.do(chromedp.SetValue(chromedp.CSS(`input[name="integration"]`), "sonar_webhook"), chromedp.SetValue(chromedp.CSS(`select[name="status"]`), "failed"),
			chromedp.Click(chromedp.CSS(`#filters button[type="submit"]`)))
		p.until(`location.search.includes("status=failed") && document.body.dataset.loaded === "true"`)
		rows := p.rows("#deliveries")
		require.Len(t, rows, 1)
		assert.Equal(t, sonarID, rows[0][1])
		assert.Equal(t, []string{"sonar_webhook", "WEBHOOK", "failed"}, rows[0][2:5])
		assert.Contains(t, rows[0][5], "RelationMissing: Relation 'octo-org_care_back' does not exist")
		p.screenshot("deliveries")

		p.click(`#deliveries a[href="/console/deliveries/` + url.PathEscape(sonarID) + `"]`)
		p.loaded("delivery")
		summary := p.text("#summary")
		assert.Contains(t, summary, "failed")
		assert.Contains(t, summary, "Relation 'octo-org_care_back' does not exist")
		assert.Contains(t, p.text("#body"), `"key": "care_back"`, "the body as JSON")
		assert.Equal(t, [][]string{{"0", "sonar_project", "care_back", "upsert", "failed", intake.ErrRelationMissing, "Relation 'octo-org_care_back' does not exist"}},
			p.rows("#entities"))
		assert.Contains(t, p.text("#headers"), "x-sonar-webhook-hmac-sha256", "the headers as received (credentials redacted by the API)")
		assert.NotContains(t, p.text("body"), sonar.SignatureValue, "no secret")
		link := eval[string](p, `document.querySelector('#summary a[target="_blank"]').href`)
		assert.True(t, strings.HasPrefix(link, "http://"+s.addr("ui")+"/namespaces/default/workflows/"+url.PathEscape(sonarWorkflow)+"/"), link)
		resp, err := http.Get(link)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode, "the Temporal UI answers the link")
		audit := p.rows("#audit")
		require.Len(t, audit, 1)
		assert.Equal(t, []string{"WEBHOOK", "CREATE", "FAILURE", "sonar_project/care_back", "Relation 'octo-org_care_back' does not exist"}, audit[0][1:])

		// Follow its audit entries to the audit log.
		p.click("#audit-link")
		p.loaded("audit")
		entries := p.rows("#audit")
		require.Len(t, entries, 1)
		assert.Equal(t, []string{"sonar_webhook", "WEBHOOK", "CREATE", "FAILURE", "sonar_project/care_back", "Relation 'octo-org_care_back' does not exist", sonarID}, entries[0][1:])
		p.screenshot("audit")

		// The repository arrives through GitHub; fix nothing, replay.
		gh := sampleNamed(t, "01_github_repository_created")
		code, out := s.post("github_repos", gh.Body, sign(exampleSecurity(t, "github_repos"), gh.Body, gh.Headers))
		require.Equal(t, 202, code, "%v", out)
		_, err = s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)

		p.click(`#audit a[href="/console/deliveries/` + url.PathEscape(sonarID) + `"]`)
		p.loaded("delivery")
		p.click("#replay")
		p.until(`document.querySelector("#replay-status").textContent === "Replay finished: succeeded"`)
		assert.Contains(t, p.text("#summary"), "succeeded")
		replays := p.rows("#replays")
		require.Len(t, replays, 1)
		assert.True(t, strings.HasPrefix(replays[0][0], "replay.sonar_webhook."), replays[0][0])
		assert.Equal(t, "succeeded", replays[0][1])
		assert.Equal(t, "created", p.rows("#entities")[0][4])
		audit = p.rows("#audit")
		require.Len(t, audit, 2, "newest first: the replay's success, then the original failure")
		assert.Equal(t, []string{"REPLAY", "CREATE", "SUCCESS"}, audit[0][1:4])
		assert.Equal(t, []string{"WEBHOOK", "CREATE", "FAILURE"}, audit[1][1:4])
		p.screenshot("delivery")
		expectEntities(t, s, care.Expect, "")
	})

	t.Run("bulk replay of a filter shows live progress and can be cancelled", func(t *testing.T) {
		p.t = t
		const n = 60
		var ids []string
		for i := 0; i < n; i++ {
			b := sonarBody(t, fmt.Sprintf("orphan_%02d", i), "octo-org_nowhere", "")
			code, out := s.post("sonar_webhook", b, sign(sonar, b, nil))
			require.Equal(t, 202, code, "%v", out)
			ids = append(ids, out["workflow_id"].(string))
		}
		for _, id := range ids {
			_, err := s.waitWorkflow(id)
			require.Error(t, err)
		}
		// The origin filter: all of them came by webhook, none by Kafka.
		p.open("/console/deliveries?integration=sonar_webhook&status=failed&origin=KAFKA")
		assert.Empty(t, p.rows("#deliveries"))
		assert.Equal(t, "No delivery matches.", p.text(`.empty[data-for="deliveries"]`))
		p.open("/console/deliveries?integration=sonar_webhook&status=failed&origin=WEBHOOK&limit=100")
		assert.Len(t, p.rows("#deliveries"), n)
		var counts struct {
			Counts []struct {
				Integration, Status string
				Count               int
			}
		}
		code, _ := s.request("GET", "/api/v1/deliveries/counts", nil, true, &counts)
		require.Equal(t, 200, code)
		assert.Contains(t, counts.Counts, struct {
			Integration, Status string
			Count               int
		}{"sonar_webhook", "failed", n})

		p.open("/console/deliveries?integration=sonar_webhook&status=failed&limit=20")
		assert.Len(t, p.rows("#deliveries"), 20, "a page of 20")
		// Paging follows X-Next-Cursor.
		p.click("#next-page")
		p.until(`location.search.includes("cursor=") && document.body.dataset.loaded === "true"`)
		second := p.rows("#deliveries")
		assert.Len(t, second, 20)
		p.click("#bulk-start")
		p.click("#bulk-confirm")
		p.until(`document.body.dataset.page === "replay" && !document.querySelector("#cancel").hidden`)
		assert.Contains(t, p.text("#progress"), "Running")
		// Live progress: the page follows the replay as it goes.
		p.until(`(() => { const m = document.querySelector("#progress").innerText.match(/Replayed so far\s+(\d+)/); return m && +m[1] >= 10; })()`)
		p.screenshot("replay")
		p.click("#cancel")
		p.loaded("replay") // the page stops polling once the replay has stopped
		progress := p.text("#progress")
		assert.Contains(t, progress, "Canceled")
		replayID := strings.TrimPrefix(p.location().Path, "/console/replays/")
		var r struct {
			Status   string
			Progress struct{ Started int }
		}
		code, _ = s.request("GET", "/api/v1/replays/"+replayID, nil, true, &r)
		require.Equal(t, 200, code)
		assert.Equal(t, "Canceled", r.Status)
		assert.Less(t, r.Progress.Started, n, "cancelled before the end")
	})

	t.Run("integrations and templates show the stored JSON with secrets masked", func(t *testing.T) {
		p.t = t
		p.open("/console/integrations")
		var names []string
		for _, r := range p.rows("#integrations") {
			names = append(names, r[0])
		}
		assert.Contains(t, names, "sonar_webhook")
		p.screenshot("integrations")
		p.click(`#integrations a[href="/console/integrations/sonar_webhook"]`)
		p.loaded("integration")
		doc := p.text("#document")
		assert.Contains(t, doc, `"signature_value": "`+intake.Masked+`"`)
		assert.NotContains(t, p.text("body"), sonar.SignatureValue)
		p.screenshot("integration")
		p.open("/console/templates")
		p.screenshot("templates")
		p.click(`#templates a[href="/console/templates/sonar_project"]`)
		p.loaded("template")
		assert.Contains(t, p.text("#document"), `"last_analysis_date"`)
		p.screenshot("template")
	})

	t.Run("the playground shows a validation error for a bad payload and the entities for a good one", func(t *testing.T) {
		p.t = t
		p.open("/console/playground?integration=sonar_webhook")
		// Typed key by key: the dry run follows the typing.
		p.do(chromedp.SendKeys(chromedp.CSS("#pg-body"), string(sonarBody(t, "dry_back", "octo-org_care_back", "yesterday"))))
		p.until(`document.querySelector("#pg-state").textContent === "done"`)
		ents := p.rows("#pg-entities")
		require.Len(t, ents, 1)
		assert.Equal(t, []string{"sonar_project", "dry_back", "failed", intake.ErrValidation}, ents[0][:4])
		assert.Contains(t, ents[0][4], "last_analysis_date")
		assert.Contains(t, p.text("#pg-verdict"), "Not valid")

		good := string(sonarBody(t, "dry_back", "octo-org_care_back", ""))
		p.setValue("#pg-body", good)
		p.until(`document.querySelector("#pg-state").textContent === "done" && document.querySelector("#pg-verdict").textContent.startsWith("Valid")`)
		assert.Equal(t, [][]string{{"sonar_project", "dry_back", "created", "", ""}}, p.rows("#pg-entities"))
		assert.Equal(t, [][]string{{"0", "sonar_project", "passed"}}, p.rows("#pg-mappings"))
		p.screenshot("playground")
		code, _ := s.request("GET", "/api/v1/entities/sonar_project/dry_back", nil, true, nil)
		assert.Equal(t, 404, code, "a dry run writes nothing")

		// Not JSON: said at once, nothing sent.
		p.setValue("#pg-body", `{"key": `)
		p.until(`document.querySelector("#pg-state").textContent === "not sent"`)
		assert.Contains(t, p.text("#pg-problem"), "Not valid JSON")
	})
}
