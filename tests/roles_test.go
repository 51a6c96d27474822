package tests

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"intake"
)

// metricSum adds up the samples of a counter on a process's /metrics whose labels contain label.
func metricSum(t testing.TB, base, name, label string) int {
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	total := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, label) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

// TestRolesApart: the production shape. One `intake dev --roles none` is the cluster (its
// Temporal frontend and store, no receiver, worker or listener of its own); against it two
// receivers, two workers and one listener, each its own `intake serve` process.
func TestRolesApart(t *testing.T) {
	broker := startBroker(t, 3)
	s := startDevWith(t, []string{"--roles", "none"}, client.Options{})
	putIntegration(t, s, teamsHook)
	code, _ := s.post("teams_hook", []byte(`{"id":"x"}`), nil)
	require.Equal(t, http.StatusNotFound, code, "the cluster runs no receiver")

	recv := []*server{startServe(t, s, serveOpts{roles: "receiver"}), startServe(t, s, serveOpts{roles: "receiver"})}
	for _, r := range recv {
		r.waitReady(time.Minute)
	}
	// Accepted, but nobody works on it until a worker process starts: the cluster has none.
	code, out := recv[0].post("teams_hook", []byte(`{"id":"sg-k"}`))
	require.Equal(t, http.StatusAccepted, code, "%v", out)
	time.Sleep(3 * time.Second)
	var d intake.DeliveryRecord
	s.request("GET", "/api/v1/deliveries/"+out["delivery_id"].(string), nil, true, &d)
	require.Equal(t, intake.StatusAccepted, d.Status, "no worker has taken it")

	wrk := []*server{startServe(t, s, serveOpts{roles: "worker"}), startServe(t, s, serveOpts{roles: "worker"})}
	lst := startServe(t, s, serveOpts{roles: "listeners", args: []string{"--kafka-brokers", strings.Join(broker.ListenAddrs(), ",")}})
	for _, p := range append(wrk, lst) {
		p.waitReady(time.Minute)
	}
	_, err := s.waitWorkflow(out["workflow_id"].(string))
	require.NoError(t, err, "a worker process takes the waiting delivery")

	count := func(path string) int {
		var items []map[string]any
		s.request("GET", path, nil, true, &items)
		return len(items)
	}
	w := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: usersTopic, Balancer: &kafkago.RoundRobin{},
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	produce := func(from, to int) {
		var msgs []kafkago.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, userRecord(i, "create"))
		}
		require.NoError(t, w.WriteMessages(context.Background(), msgs...))
	}
	// post sends webhook i to the receivers in turn, as a load balancer would.
	var failedPosts atomic.Int64
	post := func(i int) {
		code, out := recv[i%2].post("teams_hook", []byte(fmt.Sprintf(`{"id":"r-%03d"}`, i)))
		if code != http.StatusAccepted {
			failedPosts.Add(1)
			t.Errorf("post %d: %d %v", i, code, out)
		}
	}
	succeeded := func(want int) func() bool {
		return func() bool {
			return count("/api/v1/audit_logs?integration=teams_hook&status=SUCCESS&limit=1000") >= want+1 &&
				count("/api/v1/audit_logs?integration=users_kafka&status=SUCCESS&limit=1000") >= want/2
		}
	}

	// 1. Rate: 200 webhooks from 8 senders over both receivers and 100 Kafka records, both workers.
	started := time.Now()
	go produce(0, 100)
	fanOut(8, 0, 200, post)
	require.Eventually(t, succeeded(200), 3*time.Minute, 200*time.Millisecond)
	took := time.Since(started)
	t.Logf("roles apart: 300 deliveries (200 webhooks over 2 receivers, 100 Kafka records) on 2 workers in %s: %.1f deliveries/s end to end",
		took.Round(100*time.Millisecond), 300/took.Seconds())
	for i, p := range recv {
		assert.Positive(t, metricSum(t, p.base, "intake_deliveries_accepted_total", `integration="teams_hook"`), "receiver %d accepted some", i)
	}
	done := 0
	for i, p := range wrk {
		n := metricSum(t, p.base, "intake_deliveries_total", `outcome="succeeded"`)
		assert.Positive(t, n, "worker %d finished some", i)
		done += n
	}
	assert.Equal(t, 301, done, "the two workers finished every delivery, the cluster none")

	// 2. Racing merges split over the two workers: 4 entities, 8 deliveries each, each delivery
	// merging its own property; every property survives.
	props, maps := []string{}, []string{}
	for i := 0; i < 8; i++ {
		props = append(props, fmt.Sprintf(`"p%d":{"type":"string"}`, i))
		maps = append(maps, fmt.Sprintf(`"p%d":".p%d"`, i, i))
	}
	code, _ = s.request("PUT", "/api/v1/templates/wide", []byte(`{"schema":{"properties":{`+strings.Join(props, ",")+`}}}`), true, nil)
	require.Equal(t, 201, code)
	putIntegration(t, s, `{"identifier":"wide_merge","security":{"scheme":"none","allow_unsigned":true},
	  "mappings":[{"template":"wide","entity":{"identifier":".id","properties":{`+strings.Join(maps, ",")+`}}}]}`)
	time.Sleep(2 * time.Second) // every process's configuration cache follows
	var ids sync.Map
	fanOut(32, 0, 32, func(i int) {
		code, out := recv[i%2].post("wide_merge", []byte(fmt.Sprintf(`{"id":"w%d","p%d":"v%d"}`, i/8, i%8, i%8)))
		if assert.Equal(t, http.StatusAccepted, code, "%v", out) {
			ids.Store(out["workflow_id"], true)
		}
	})
	ids.Range(func(id, _ any) bool {
		_, err := s.waitWorkflow(id.(string))
		assert.NoError(t, err)
		return true
	})
	for e := 0; e < 4; e++ {
		var got intake.Entity
		s.request("GET", fmt.Sprintf("/api/v1/entities/wide/w%d", e), nil, true, &got)
		for i := 0; i < 8; i++ {
			assert.Equal(t, fmt.Sprintf("v%d", i), got.Properties[fmt.Sprintf("p%d", i)], "w%d p%d", e, i)
		}
	}

	// 3. One worker killed (kill -9) mid-load: the other finishes everything. Activities the dead
	// worker had started are retried once their StartToClose timeout (1 min) passes.
	var killed sync.Once
	phase3 := time.Now()
	go produce(100, 200)
	fanOut(8, 200, 400, func(i int) {
		post(i)
		if i == 260 {
			killed.Do(wrk[0].kill)
		}
	})
	require.Eventually(t, succeeded(400), 4*time.Minute, 500*time.Millisecond)
	t.Logf("roles apart, one worker killed mid-load: 300 deliveries in %s", time.Since(phase3).Round(100*time.Millisecond))
	time.Sleep(3 * time.Second) // anything processed twice would show up now
	require.Zero(t, failedPosts.Load())
	assert.Equal(t, 401, count("/api/v1/audit_logs?integration=teams_hook&status=SUCCESS&limit=1000"), "exactly once")
	assert.Equal(t, 200, count("/api/v1/audit_logs?integration=users_kafka&status=SUCCESS&limit=1000"), "exactly once")
	assert.Equal(t, 0, count("/api/v1/audit_logs?status=FAILURE&limit=1000"))
	assert.Equal(t, 401, count("/api/v1/entities?template=team&limit=1000"), "none lost")
	assert.Equal(t, 200, count("/api/v1/entities?template=users&limit=1000"), "none lost")
	assert.Equal(t, 401, count("/api/v1/deliveries?integration=teams_hook&status=succeeded&limit=1000"))
	assert.Equal(t, 200, count("/api/v1/deliveries?integration=users_kafka&status=succeeded&limit=1000"))
}
