package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"intake"
	"intake/examples"
	"intake/mappings"
	"intake/store"
)

// BenchmarkIntake is `make bench`: every figure of the throughput goals, in one run, on one
// `intake dev` (and one in-process Kafka broker), so that the ratios compare like with like on a
// shared machine. In order: the raw gojq and store ceilings; N signed GitHub webhooks posted one
// after the other (accept latency POST → 202, end to end); INTAKE_BENCH_ROUNDS (default 3)
// rounds of N more from 8 senders, each between two series of N empty workflows (8 starters),
// with each round's ratio and their median; open-loop offers at 25, 50 and 100/s (POST → 202
// next to bare empty-workflow starts at the same rates); a Kafka backlog through one workflow
// per record, then through batch mode. N is INTAKE_BENCH_N (default 2000);
// INTAKE_BENCH_KAFKA_SINGLE_N (2000) and INTAKE_BENCH_KAFKA_BATCH_N (20000) size the Kafka
// phases; INTAKE_BENCH_PHASES (a comma list of webhook, openloop, kafka; default all) runs fewer
// phases while tuning.
func BenchmarkIntake(b *testing.B) {
	n := envInt("INTAKE_BENCH_N", 2000)
	phases := os.Getenv("INTAKE_BENCH_PHASES")
	want := func(p string) bool { return phases == "" || strings.Contains(","+phases+",", ","+p+",") }
	var broker *kfake.Cluster
	if want("kafka") {
		broker = startBroker(b, 3)
	}
	s := startDev(b, profiled()...)
	b.ResetTimer()

	stackName := "intake dev: Temporal + FerretDB"
	if broker != nil {
		stackName += " + in-process Kafka"
	}
	fmt.Printf("\nintake benchmark, one embedded stack (%s), %d deliveries per webhook phase:\n", stackName, n)
	fmt.Printf("  ceilings: raw gojq mapping %.0f payloads/s, raw store upsert by _id %.0f/s\n", gojqCeiling(b), storeCeiling(b, s))
	if want("webhook") {
		webhookPhase(b, s, n)
	}
	if want("openloop") {
		openLoopPhase(b, s)
	}
	if broker != nil {
		kafkaPhase(b, s, broker.ListenAddrs())
	}
	b.StopTimer()
}

// webhookPhase posts n signed webhooks sequentially, then n more from 8 senders, and compares
// the 8-sender rate with the empty workflow's, measured right before and right after it.
func webhookPhase(b *testing.B, s *stack, n int) {
	sec := exampleSecurity(b, "github_repos")
	var mu sync.Mutex
	var ids []string
	post := func(i int) time.Duration {
		bd := repoCreated("bench", i)
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

	// sequential: accept latency, end to end
	lat := make([]time.Duration, n)
	seqStart := time.Now()
	for i := 0; i < n; i++ {
		lat[i] = post(i)
	}
	seqAccept := time.Since(seqStart)
	waitAll(b, s, ids)
	seqDone := time.Since(seqStart)

	sortDurations(lat)
	fmt.Printf("  webhook sequential: accept p50 %v p99 %v max %v; accepted %.0f/s; all done after %v = %.1f deliveries/s end to end\n",
		quantile(lat, .5), quantile(lat, .99), lat[len(lat)-1], float64(n)/seqAccept.Seconds(), seqDone.Round(time.Millisecond), float64(n)/seqDone.Seconds())

	// 8 senders, each round between two measures of the empty workflow (E W E W … E, every E
	// shared by the rounds beside it): the machine is shared, so each ratio is taken against
	// what the server did around the same time, and the rounds' median is the figure (one
	// slow stretch of the machine moves one round, not the result). Every series starts once
	// the server has written the visibility records of the one before (settle): a series ends
	// when its last workflow completes, and the close records still queued then would
	// otherwise weigh on the next.
	rounds := envInt("INTAKE_BENCH_ROUNDS", 3)
	empty := func(name string) (float64, time.Duration) {
		settle(b, s)
		cpu0 := s.cpu()
		profiled := profilePhase(b, name, 8)
		rate := emptyWorkflowCeiling(b, s, n)
		cpu := s.cpu().total() - cpu0.total()
		profiled()
		return rate, cpu / time.Duration(n)
	}
	emptyRate, emptyCPU := empty("empty-0")
	var ratios, cpuRatios []float64
	for r := 1; r <= rounds; r++ {
		settle(b, s)
		cpu0 := s.cpu()
		ids = nil
		start := time.Now()
		profiled := profilePhase(b, fmt.Sprintf("webhook-8-senders-%d", r), 8)
		fanOut(8, r*n, (r+1)*n, func(i int) { post(i) })
		accepted := time.Since(start)
		waitAll(b, s, ids)
		took := time.Since(start)
		hookCPU := (s.cpu().total() - cpu0.total()) / time.Duration(n)
		profiled()
		afterRate, afterCPU := empty(fmt.Sprintf("empty-%d", r))
		rate, ceiling, ceilingCPU := float64(n)/took.Seconds(), (emptyRate+afterRate)/2, (emptyCPU+afterCPU)/2
		ratios, cpuRatios = append(ratios, 100*rate/ceiling), append(cpuRatios, 100*float64(ceilingCPU)/float64(hookCPU))
		fmt.Printf("  webhook 8 senders, round %d of %d: accepted %.0f/s; all done after %v = %.1f deliveries/s end to end, empty workflow %.1f/s before and %.1f/s after = %.0f%%;"+
			" CPU per workflow (stack + load generator) %v against %v = %.0f%%\n",
			r, rounds, float64(n)/accepted.Seconds(), took.Round(time.Millisecond), rate, emptyRate, afterRate, ratios[r-1],
			hookCPU.Round(10*time.Microsecond), ceilingCPU.Round(10*time.Microsecond), cpuRatios[r-1])
		b.ReportMetric(rate, fmt.Sprintf("deliveries/s-round-%d", r))
		emptyRate, emptyCPU = afterRate, afterCPU
	}
	fmt.Printf("  webhook 8 senders, %d deliveries a round: median %.0f%% of the empty workflow (CPU per workflow: median %.0f%%)\n",
		n, median(ratios), median(cpuRatios))
	b.ReportMetric(median(ratios), "%-of-empty")
	b.ReportMetric(median(cpuRatios), "%-of-empty-cpu")
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// openLoopPhase offers webhooks at fixed rates (25, 50, 100/s for 10 s each, sent on a clock
// whatever the answers do) and reports POST → 202 p50/p99 at each, next to bare empty-workflow
// starts offered at the same rate on the same server. Each rate starts once the previous one's
// workflows have finished, so a backlog does not carry over.
func openLoopPhase(b *testing.B, s *stack) {
	sec := exampleSecurity(b, "github_repos")
	w := worker.New(s.temporal, "bench-empty-open", worker.Options{})
	w.RegisterWorkflow(emptyWorkflow)
	require.NoError(b, w.Start())
	defer w.Stop()
	ctx := context.Background()
	var mu sync.Mutex
	var ids []string
	var runs []client.WorkflowRun
	seq := 0
	fmt.Printf("  open loop, 10 s per rate:\n")
	for _, rate := range []int{25, 50, 100} {
		settle(b, s)
		hooks := offer(rate, 10*time.Second, &seq, func(k int) {
			bd := repoCreated("open", k)
			code, out := s.post("github_repos", bd, sign(sec, bd, nil))
			require.Equal(b, 202, code, "%v", out)
			mu.Lock()
			ids = append(ids, out["workflow_id"].(string))
			mu.Unlock()
		})
		waitAll(b, s, ids)
		settle(b, s)
		starts := offer(rate, 10*time.Second, &seq, func(k int) {
			run, err := s.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: fmt.Sprintf("bench-open-%d-%d", time.Now().UnixNano(), k), TaskQueue: "bench-empty-open"}, emptyWorkflow)
			require.NoError(b, err)
			mu.Lock()
			runs = append(runs, run)
			mu.Unlock()
		})
		for _, r := range runs {
			require.NoError(b, r.Get(ctx, nil))
		}
		ids, runs = nil, nil
		fmt.Printf("    %3d/s  POST->202 p50 %-8v p99 %-8v | bare start p50 %-8v p99 %-8v | p99 ratio %.1f\n", rate,
			quantile(hooks, .5), quantile(hooks, .99), quantile(starts, .5), quantile(starts, .99),
			float64(quantile(hooks, .99))/float64(quantile(starts, .99)))
		b.ReportMetric(float64(quantile(hooks, .99).Microseconds())/1000, fmt.Sprintf("p99-ms-at-%d/s", rate))
	}
}

// settle waits until the server's visibility says no workflow runs and the stack has gone
// quiet (under a tenth of a core for half a second): the close records of the previous phase are
// written (a workflow that closed before its start record was written has no row saying it
// runs, so the count alone can miss them), and its background work does not weigh on the next
// measure.
func settle(b *testing.B, s *stack) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		res, err := s.temporal.CountWorkflow(context.Background(), &workflowservice.CountWorkflowExecutionsRequest{
			Namespace: "default", Query: "ExecutionStatus = 'Running'"})
		require.NoError(b, err)
		before := s.cpu().stack
		time.Sleep(500 * time.Millisecond)
		if res.GetCount() == 0 && s.cpu().stack-before < 50*time.Millisecond {
			return
		}
		require.True(b, time.Now().Before(deadline), "%d workflows still running, or the stack still busy, after 2 minutes", res.GetCount())
	}
}

// repoCreated is a GitHub "repository created" event for repository owner/r<i>.
func repoCreated(owner string, i int) []byte {
	return []byte(fmt.Sprintf(`{"action":"created","repository":{"name":"r%d","full_name":"%s/r%d","private":false,"html_url":"https://github.com/%s/r%d","stargazers_count":%d,"language":"Go","owner":{"login":%q}}}`,
		i, owner, i, owner, i, i, owner))
}

// offer calls send rate times a second for dur, each call in its own goroutine, and answers the
// sorted latencies of the calls.
func offer(rate int, dur time.Duration, seq *int, send func(k int)) []time.Duration {
	n := int(float64(rate) * dur.Seconds())
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		*seq++
		wg.Add(1)
		go func(i, k int) {
			defer wg.Done()
			start := time.Now()
			send(k)
			lat[i] = time.Since(start)
		}(i, *seq)
	}
	wg.Wait()
	sortDurations(lat)
	return lat
}

func sortDurations(d []time.Duration) { sort.Slice(d, func(i, j int) bool { return d[i] < d[j] }) }

func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[int(q*float64(len(sorted)-1))].Round(100 * time.Microsecond)
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

// cpu is the CPU time (user and system) the stack's process and this one have used so far.
func (s *stack) cpu() cpuTimes {
	return cpuTimes{stack: processCPU(s.t, s.cmd.Process.Pid), self: processCPU(s.t, os.Getpid())}
}

// cpuTimes are the CPU times of the stack's process and of this one.
type cpuTimes struct{ stack, self time.Duration }

func (c cpuTimes) total() time.Duration { return c.stack + c.self }

// processCPU reads a process's utime and stime from /proc (Linux; clock ticks of 10 ms).
func processCPU(t testing.TB, pid int) time.Duration {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// the command name (field 2) may hold spaces: count fields after its closing parenthesis
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime (fields 14 and 15 of stat)
		n, err := strconv.ParseInt(f, 10, 64)
		require.NoError(t, err)
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}
