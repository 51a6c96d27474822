package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// kafkaPhase measures how fast a Kafka backlog becomes entities: first N1 records
// (INTAKE_BENCH_KAFKA_SINGLE_N, default 2000) through the seed's users_kafka, one workflow per
// record; then N2 records (INTAKE_BENCH_KAFKA_BATCH_N, default 20000) through a batching
// integration (max_records 500, max_wait 200ms). Each is timed from the listener's start, with the
// whole backlog waiting, until the last record's delivery finished (intake_deliveries_total).
func kafkaPhase(b *testing.B, s *stack, brokers []string) {
	single, batched := envInt("INTAKE_BENCH_KAFKA_SINGLE_N", 2000), envInt("INTAKE_BENCH_KAFKA_BATCH_N", 20000)
	createTeams(b, s, "sg-k")
	putBatchedUsers(b, s, "users.batch", 500, "200ms")
	produce := func(topic string, from, n int) {
		w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.RoundRobin{},
			AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond, BatchSize: 1000}
		defer w.Close()
		for start := from; start < from+n; start += 5000 {
			var msgs []kafkago.Message
			for i := start; i < min(start+5000, from+n); i++ {
				msgs = append(msgs, userRecord(i, "create"))
			}
			require.NoError(b, w.WriteMessages(context.Background(), msgs...))
		}
	}
	run := func(integration, topic string, from, n int) time.Duration {
		produce(topic, from, n)
		before := finished(b, s, integration)
		start := time.Now()
		l := startListenerB(b, s, s.addr("temporal"), "--kafka-brokers", strings.Join(brokers, ","))
		defer l.stop()
		require.Eventually(b, func() bool { return finished(b, s, integration)-before >= n }, 60*time.Minute, 250*time.Millisecond)
		return time.Since(start)
	}
	users := countEntities(b, s, "users")
	tSingle := run("users_kafka", usersTopic, 0, single)
	tBatch := run("users_batch", "users.batch", 100000, batched)
	require.GreaterOrEqual(b, countEntities(b, s, "users"), users+single+batched)
	rs, rb := float64(single)/tSingle.Seconds(), float64(batched)/tBatch.Seconds()
	fmt.Printf("  kafka backlog on 3 partitions, listener start to last delivery finished:\n")
	fmt.Printf("    one workflow per record: %d records in %v = %.1f records/s\n", single, tSingle.Round(time.Millisecond), rs)
	fmt.Printf("    batch mode (500/200ms):  %d records in %v = %.1f records/s (%.1fx)\n", batched, tBatch.Round(time.Millisecond), rb, rb/rs)
	b.ReportMetric(rs, "records/s-single")
	b.ReportMetric(rb, "records/s-batched")
}

// finished sums intake_deliveries_total of an integration on the dev stack (its worker).
func finished(t testing.TB, s *stack, integration string) int {
	resp, err := http.Get(s.base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	total := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "intake_deliveries_total{") && strings.Contains(line, `integration="`+integration+`"`) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// profilePhase, with INTAKE_BENCH_PPROF and INTAKE_BENCH_PROFILES (a folder) set, records a CPU
// profile of the dev process over the next seconds into that folder as name.pprof; the
// function it returns waits for it. Otherwise it does nothing.
func profilePhase(b *testing.B, name string, seconds int) (wait func()) {
	addr, dir := os.Getenv("INTAKE_BENCH_PPROF"), os.Getenv("INTAKE_BENCH_PROFILES")
	if addr == "" || dir == "" {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, seconds))
		if err != nil {
			b.Logf("profile %s: %v", name, err)
			return
		}
		defer resp.Body.Close()
		f, err := os.Create(filepath.Join(dir, name+".pprof"))
		if err != nil {
			b.Logf("profile %s: %v", name, err)
			return
		}
		defer f.Close()
		_, _ = io.Copy(f, resp.Body)
	}()
	return func() { <-done }
}

// profiled passes INTAKE_BENCH_PPROF (an address) to a benchmark's intake dev as its profiler
// address, to see where a run's time goes (go tool pprof http://ADDR/debug/pprof/profile).
func profiled() []string {
	if addr := os.Getenv("INTAKE_BENCH_PPROF"); addr != "" {
		return []string{"INTAKE_PPROF_ADDR=" + addr}
	}
	return nil
}
