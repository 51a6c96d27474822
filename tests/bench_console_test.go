package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/store"
)

// BenchmarkConsoleDeliveries stores 10,000 delivery records (INTAKE_BENCH_CONSOLE_DELIVERIES),
// then loads the console's deliveries list in headless Chromium INTAKE_BENCH_CONSOLE_N times
// (default 20) per view, from navigation until the script has filled the table: the first page
// (50 newest), the same filtered by integration and status, and the next page by cursor; next to
// it the admin API's answer alone. Run with `make bench BENCH=Console`.
func BenchmarkConsoleDeliveries(b *testing.B) {
	total, loads := envInt("INTAKE_BENCH_CONSOLE_DELIVERIES", 10_000), envInt("INTAKE_BENCH_CONSOLE_N", 20)
	s := startDev(b)
	ctx := context.Background()
	st, err := store.Open(ctx, "mongodb://"+s.addr("mongodb")+"/", "intake", nil)
	require.NoError(b, err)
	defer st.Close(ctx)
	smp := sampleNamed(b, "03_sonar_project_care_back")
	start := time.Now().UTC().Add(-30 * time.Minute)
	seedStart := time.Now()
	fanOut(8, 0, total, func(i int) {
		d := intake.Delivery{ID: fmt.Sprintf("sonar_webhook.bench%05d", i), Integration: "sonar_webhook", Key: fmt.Sprintf("bench%05d", i),
			Origin: intake.OriginWebhook, Body: smp.Body, Headers: map[string]string{"content-type": "application/json"},
			ReceivedAt: start.Add(time.Duration(i) * 100 * time.Millisecond)}
		o := store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "ingest." + d.ID, RunID: "run",
			Entities: []intake.EntityChange{{Template: "sonar_project", Identifier: "care_back", Operation: intake.OperationUpsert, Outcome: intake.OutcomeUpdated}}}
		if i%4 == 0 {
			o.Status, o.Error = intake.DeliveryFailed, &intake.Failure{Type: intake.ErrRelationMissing, Message: "Relation 'octo-org_care_back' does not exist"}
		}
		require.NoError(b, st.RecordOutcome(ctx, d, o))
	})
	seeded := time.Since(seedStart)

	p := &page{t: b, ctx: browser(b), base: s.base, shots: b.TempDir()}
	p.open("/console/login")
	eval[chromedp.Void](p, `sessionStorage.setItem("intake.adminToken", `+jsString(s.token)+`)`)

	measure := func(path string, wantRows int) []time.Duration {
		out := make([]time.Duration, loads)
		for i := range out {
			t0 := time.Now()
			p.open(path)
			out[i] = time.Since(t0)
			require.Len(b, p.rows("#deliveries"), wantRows, path)
		}
		return out
	}
	b.ResetTimer()
	first := measure("/console/deliveries", 50)
	filtered := measure("/console/deliveries?integration=sonar_webhook&status=failed", 50)
	p.open("/console/deliveries")
	next := eval[string](p, `document.querySelector("#next-page").getAttribute("href")`)
	require.NotEmpty(b, next)
	second := measure("/console/deliveries"+next, 50)
	apiOnly := make([]time.Duration, loads)
	for i := range apiOnly {
		req, _ := http.NewRequest("GET", s.base+"/api/v1/deliveries?limit=50", nil)
		req.Header.Set("Authorization", "Bearer "+s.token)
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		require.NoError(b, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		apiOnly[i] = time.Since(t0)
	}
	b.StopTimer()

	fmt.Printf("\nconsole deliveries list, %d stored deliveries (seeded in %v), %d loads each, navigation until the table is filled:\n",
		total, seeded.Round(time.Millisecond), loads)
	for _, r := range []struct {
		name string
		lat  []time.Duration
	}{{"first page (50 newest)", first}, {"integration + status filter", filtered}, {"next page (cursor)", second}, {"admin API alone, first page", apiOnly}} {
		p50, p99 := percentiles(r.lat)
		fmt.Printf("  %-30s p50 %v  p99 %v\n", r.name, p50.Round(time.Millisecond), p99.Round(time.Millisecond))
	}
	p50, p99 := percentiles(first)
	b.ReportMetric(float64(p50.Microseconds())/1000, "page-p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "page-p99-ms")
}

func percentiles(lat []time.Duration) (time.Duration, time.Duration) {
	s := append([]time.Duration(nil), lat...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(0.5*float64(len(s)-1))], s[int(0.99*float64(len(s)-1))]
}
