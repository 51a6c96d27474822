package tests

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"
)

// BenchmarkAcceptOpenLoop offers webhooks at fixed rates (25, 50, 100/s for 10 s each, sent on a
// clock whatever the answers do) and reports the POST -> 202 latency p50/p99 at each rate, next to
// the latency of bare empty-workflow starts offered at the same rate on the same server.
func BenchmarkAcceptOpenLoop(b *testing.B) {
	s := startDev(b)
	sec := exampleSecurity(b, "github_repos")
	w := worker.New(s.temporal, "bench-empty-open", worker.Options{})
	w.RegisterWorkflow(emptyWorkflow)
	require.NoError(b, w.Start())
	defer w.Stop()
	ctx := context.Background()
	seq := 0
	offer := func(rate int, dur time.Duration, send func(i int)) []time.Duration {
		n := int(float64(rate) * dur.Seconds())
		lat := make([]time.Duration, n)
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; i < n; i++ {
			<-tick.C
			seq++
			wg.Add(1)
			go func(i, k int) {
				defer wg.Done()
				start := time.Now()
				send(k)
				lat[i] = time.Since(start)
			}(i, seq)
		}
		wg.Wait()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		return lat
	}
	q := func(lat []time.Duration, p float64) time.Duration {
		return lat[int(p*float64(len(lat)-1))].Round(100 * time.Microsecond)
	}
	b.ResetTimer()
	fmt.Printf("\nopen-loop accept latency (10 s per rate, embedded stack):\n")
	for _, rate := range []int{25, 50, 100} {
		hooks := offer(rate, 10*time.Second, func(k int) {
			bd := []byte(fmt.Sprintf(`{"action":"created","repository":{"name":"o%d","full_name":"open/o%d","private":false,"html_url":"https://github.com/open/o%d","stargazers_count":1,"language":"Go","owner":{"login":"open"}}}`, k, k, k))
			code, out := s.post("github_repos", bd, sign(sec, bd, nil))
			require.Equal(b, 202, code, "%v", out)
		})
		starts := offer(rate, 10*time.Second, func(k int) {
			_, err := s.temporal.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: fmt.Sprintf("bench-open-%d-%d", time.Now().UnixNano(), k), TaskQueue: "bench-empty-open"}, emptyWorkflow)
			require.NoError(b, err)
		})
		fmt.Printf("  %3d/s  POST->202 p50 %-8v p99 %-8v | bare start p50 %-8v p99 %-8v | p99 ratio %.1f\n", rate,
			q(hooks, .5), q(hooks, .99), q(starts, .5), q(starts, .99), float64(q(hooks, .99))/float64(q(starts, .99)))
	}
}
