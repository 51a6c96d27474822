package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"intake"
	"intake/examples"
	"intake/mappings"
	"intake/store"
)

// BenchmarkWebhookPath posts N signed GitHub webhooks one after the other to a fresh `intake dev`
// (accept latency: POST → 202), then N more from 8 senders, waits until every workflow finished
// (end-to-end deliveries/s), and measures in the same run the ceilings it compares with: raw gojq
// evaluation of the same mapping and raw store upserts by _id on the same embedded server.
// N comes from INTAKE_BENCH_N (default 200). Run with `make bench`.
func BenchmarkWebhookPath(b *testing.B) {
	n := envInt("INTAKE_BENCH_N", 200)
	s := startDev(b)
	sec := exampleSecurity(b, "github_repos")
	body := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"action":"created","repository":{"name":"r%d","full_name":"bench/r%d","private":false,"html_url":"https://github.com/bench/r%d","stargazers_count":%d,"language":"Go","owner":{"login":"bench"}}}`, i, i, i, i))
	}
	var mu sync.Mutex
	var ids []string
	post := func(i int) time.Duration {
		bd := body(i)
		h := sign(sec, bd, map[string]string{"X-GitHub-Delivery": fmt.Sprintf("bench-%d", i)})
		start := time.Now()
		code, out := s.post("github_repos", bd, h)
		d := time.Since(start)
		require.Equal(b, 202, code, "%v", out)
		mu.Lock()
		ids = append(ids, out["workflow_id"].(string))
		mu.Unlock()
		return d
	}
	b.ResetTimer()

	// 1. accept latency, sequential
	lat := make([]time.Duration, n)
	seqStart := time.Now()
	for i := 0; i < n; i++ {
		lat[i] = post(i)
	}
	seqAccept := time.Since(seqStart)
	waitAll(b, s, ids)
	seqDone := time.Since(seqStart)

	// The empty-workflow ceiling right before and right after the 8-sender phase: the machine
	// is shared, so the ratio is taken against what the server did around the same time.
	emptyBefore := emptyWorkflowCeiling(b, s, n)

	// 2. throughput with 8 concurrent senders
	ids = nil
	parStart := time.Now()
	fanOut(8, n, 2*n, func(i int) { post(i) })
	parAccept := time.Since(parStart)
	waitAll(b, s, ids)
	parDone := time.Since(parStart)
	b.StopTimer()

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	jqRate := gojqCeiling(b)
	storeRate := storeCeiling(b, s)
	emptyAfter := emptyWorkflowCeiling(b, s, n)
	emptyRate := (emptyBefore + emptyAfter) / 2

	fmt.Printf("\nwebhook path, %d deliveries each phase (embedded stack, %s):\n", n, "2 cores")
	fmt.Printf("  accept latency sequential   p50 %v  p99 %v  max %v\n", p(0.5), p(0.99), lat[len(lat)-1])
	fmt.Printf("  sequential: accepted %.0f/s, all %d workflows done after %v (%.1f deliveries/s end to end)\n",
		float64(n)/seqAccept.Seconds(), n, seqDone.Round(time.Millisecond), float64(n)/seqDone.Seconds())
	fmt.Printf("  8 senders:  accepted %.0f/s, all %d workflows done after %v (%.1f deliveries/s end to end)\n",
		float64(n)/parAccept.Seconds(), n, parDone.Round(time.Millisecond), float64(n)/parDone.Seconds())
	fmt.Printf("  ceilings: raw gojq mapping %.0f payloads/s, raw store upsert by _id %.0f/s, empty workflow on the same server %.1f/s (8 starters; %.1f before, %.1f after the 8-sender phase)\n",
		jqRate, storeRate, emptyRate, emptyBefore, emptyAfter)
	fmt.Printf("  ratio: end to end with 8 senders / empty workflow = %.0f%%\n", 100*float64(n)/parDone.Seconds()/emptyRate)
	b.ReportMetric(float64(p(0.5).Microseconds())/1000, "accept-p50-ms")
	b.ReportMetric(float64(p(0.99).Microseconds())/1000, "accept-p99-ms")
	b.ReportMetric(float64(n)/parDone.Seconds(), "deliveries/s")
}

// emptyWorkflow does nothing: the per-workflow cost of the Temporal server itself.
func emptyWorkflow(ctx workflow.Context) error { return nil }

// emptyWorkflowCeiling starts n empty workflows from 8 starters on the same embedded server (a
// worker in this process on a task queue of its own) and answers how many complete per second.
func emptyWorkflowCeiling(b *testing.B, s *stack, n int) float64 {
	w := worker.New(s.temporal, "bench-empty", worker.Options{})
	w.RegisterWorkflow(emptyWorkflow)
	require.NoError(b, w.Start())
	defer w.Stop()
	ctx := context.Background()
	runs := make([]client.WorkflowRun, n)
	start := time.Now()
	fanOut(8, 0, n, func(i int) {
		run, err := s.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: fmt.Sprintf("bench-empty-%d-%d", start.UnixNano(), i), TaskQueue: "bench-empty"}, emptyWorkflow)
		require.NoError(b, err)
		runs[i] = run
	})
	for _, r := range runs {
		require.NoError(b, r.Get(ctx, nil))
	}
	return float64(n) / time.Since(start).Seconds()
}

func waitAll(b *testing.B, s *stack, ids []string) {
	for _, id := range ids {
		res, err := s.waitWorkflow(id)
		require.NoError(b, err)
		require.Equal(b, intake.DeliverySucceeded, res.Outcome)
	}
}

// gojqCeiling maps the example GitHub payload with the compiled program, in a loop, for 2 s.
func gojqCeiling(b *testing.B) float64 {
	tpls, err := examples.Templates()
	require.NoError(b, err)
	byID := map[string]*intake.Template{}
	for i := range tpls {
		byID[tpls[i].Identifier] = &tpls[i]
	}
	ints, err := examples.Integrations()
	require.NoError(b, err)
	var prog *mappings.Program
	for _, in := range ints {
		if in.Identifier == "github_repos" {
			prog, err = mappings.Compile(in, byID)
			require.NoError(b, err)
		}
	}
	samples, err := examples.Samples()
	require.NoError(b, err)
	var payload any
	require.NoError(b, json.Unmarshal(samples[0].Body, &payload))
	env := mappings.Env{Headers: map[string]string{"x-github-delivery": "x"}, Meta: map[string]any{}}
	start, count := time.Now(), 0
	for time.Since(start) < 2*time.Second {
		_, changes := prog.Map(context.Background(), payload, env, byID)
		require.Len(b, changes, 1)
		count++
	}
	return float64(count) / time.Since(start).Seconds()
}

// storeCeiling upserts single documents by _id into the running embedded server for 2 s.
func storeCeiling(b *testing.B, s *stack) float64 {
	ctx := context.Background()
	st, err := store.Open(ctx, "mongodb://"+s.addr("mongodb")+"/", "intake", nil)
	require.NoError(b, err)
	defer st.Close(ctx)
	start, count := time.Now(), 0
	revs := map[string]int64{}
	for time.Since(start) < 2*time.Second {
		id := fmt.Sprintf("ceiling/%d", count%500)
		doc := &store.EntityDoc{ID: id, Template: "ceiling", Identifier: id, Properties: map[string]any{"n": count}, Relations: map[string]any{}}
		require.NoError(b, st.WriteEntities(ctx, []store.EntityWrite{{Doc: doc, Rev: revs[id]}}))
		revs[id]++
		count++
	}
	return float64(count) / time.Since(start).Seconds()
}

// BenchmarkBulkReplay fails N deliveries on a missing relation (N from INTAKE_BENCH_REPLAY_N,
// default 1000), creates the related entity, then times one bulk replay of them all.
func BenchmarkBulkReplay(b *testing.B) {
	n := envInt("INTAKE_BENCH_REPLAY_N", 1000)
	s := startDev(b)
	putIntegration(b, s, `{"identifier":"people","security":{"scheme":"none","allow_unsigned":true},
	  "mappings":[{"template":"users","entity":{"identifier":".id","properties":{"firstname":".firstname"},"relations":{"team":".team"}}}]}`)
	putIntegration(b, s, `{"identifier":"teams","security":{"scheme":"none","allow_unsigned":true},
	  "mappings":[{"template":"team","entity":{"identifier":".id"}}]}`)
	ids := make([]string, n)
	for i := 0; i < n; i++ {
		code, out := s.post("people", []byte(fmt.Sprintf(`{"id":"u%05d","firstname":"U%d","team":"later"}`, i, i)), nil)
		require.Equal(b, 202, code)
		ids[i] = out["workflow_id"].(string)
	}
	for _, id := range ids {
		_, err := s.waitWorkflow(id)
		require.Error(b, err)
	}
	code, out := s.post("teams", []byte(`{"id":"later"}`), nil)
	require.Equal(b, 202, code)
	_, err := s.waitWorkflow(out["workflow_id"].(string))
	require.NoError(b, err)

	b.ResetTimer()
	start := time.Now()
	var started map[string]any
	code, _ = s.request("POST", "/api/v1/deliveries/replay", map[string]any{"integration": "people"}, true, &started)
	require.Equal(b, 202, code)
	var p struct {
		Status   string
		Progress struct{ Started, Succeeded, Failed int }
	}
	require.Eventually(b, func() bool {
		s.request("GET", "/api/v1/replays/"+started["replay_id"].(string), nil, true, &p)
		return p.Status == "Completed"
	}, 30*time.Minute, 200*time.Millisecond)
	took := time.Since(start)
	b.StopTimer()
	require.Equal(b, n, p.Progress.Succeeded)
	fmt.Printf("\nbulk replay of %d failed deliveries: %v (%.1f replays/s), %d failed\n", n, took.Round(time.Millisecond), float64(n)/took.Seconds(), p.Progress.Failed)
	b.ReportMetric(float64(n)/took.Seconds(), "replays/s")
}

// BenchmarkKafkaStart produces N records (INTAKE_BENCH_KAFKA_N, default 2000) to an in-process
// broker, then starts an `intake serve --roles listeners` process against the dev stack's
// Temporal and measures how fast it turns them into started workflows (offsets committed), and
// how long until every workflow finished.
func BenchmarkKafkaStart(b *testing.B) {
	n := envInt("INTAKE_BENCH_KAFKA_N", 2000)
	broker := startBroker(b, 3)
	s := startDev(b)
	createTeams(b, s, "sg-k")
	w := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: usersTopic, Balancer: &kafkago.RoundRobin{},
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond, BatchSize: 500}
	defer w.Close()
	var msgs []kafkago.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, userRecord(i, "create"))
	}
	require.NoError(b, w.WriteMessages(context.Background(), msgs...))

	b.ResetTimer()
	start := time.Now()
	l := startListenerB(b, s, s.addr("temporal"), "--kafka-brokers", strings.Join(broker.ListenAddrs(), ","))
	var firstStart, startedAll time.Duration
	require.Eventually(b, func() bool {
		got := l.accepted()
		if got > 0 && firstStart == 0 {
			firstStart = time.Since(start)
		}
		if got >= n {
			startedAll = time.Since(start)
			return true
		}
		return false
	}, 10*time.Minute, 20*time.Millisecond)
	require.Eventually(b, func() bool {
		return countEntities(b, s, "users") >= n
	}, 30*time.Minute, time.Second)
	done := time.Since(start)
	b.StopTimer()
	fmt.Printf("\nkafka listener, %d records on 3 partitions (embedded Temporal, 2 cores):\n", n)
	fmt.Printf("  process start + group join until the first start: %v\n", firstStart.Round(time.Millisecond))
	fmt.Printf("  all started as workflows (offsets committed) %v later: %.0f records/s\n",
		(startedAll - firstStart).Round(time.Millisecond), float64(n)/(startedAll-firstStart).Seconds())
	fmt.Printf("  all %d workflows finished: %v, %.1f deliveries/s end to end\n", n, done.Round(time.Millisecond), float64(n)/done.Seconds())
	b.ReportMetric(float64(n)/(startedAll-firstStart).Seconds(), "starts/s")
}

// countEntities pages through the entities of a template.
func countEntities(t testing.TB, s *stack, template string) int {
	return countAll(s, "/api/v1/entities?template="+template+"&limit=1000")
}
