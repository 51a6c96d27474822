package tests

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"intake"
)

// listener is an `intake serve --roles listeners` process consuming from the test's broker and
// starting workflows on the dev stack's Temporal; killing it never loses the broker's records.
type listener struct {
	t    testing.TB
	cmd  *exec.Cmd
	logs *bytes.Buffer
	base string
}

func startListenerB(t testing.TB, s *stack, temporalAddr string, args ...string) *listener {
	return startListener(t, s, temporalAddr, nil, args...)
}

// accepted reads intake_deliveries_accepted_total from the listener's /metrics.
func (l *listener) accepted() int {
	resp, err := http.Get(l.base + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	total := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "intake_deliveries_accepted_total{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			total += int(v)
		}
	}
	return total
}

func startListener(t testing.TB, s *stack, temporalAddr string, env []string, args ...string) *listener {
	key, err := os.ReadFile(filepath.Join(s.dir, ".intake", "secret-key"))
	require.NoError(t, err)
	port := freePort(t)
	l := &listener{t: t, logs: &bytes.Buffer{}, base: fmt.Sprintf("http://127.0.0.1:%d", port)}
	l.cmd = exec.Command(intakeBin, "serve", "--roles", "listeners",
		"--http-addr", fmt.Sprintf("127.0.0.1:%d", port), "--temporal-addr", temporalAddr,
		"--mongodb-uri", "mongodb://"+s.addr("mongodb")+"/", "--admin-token", "t")
	l.cmd.Args = append(l.cmd.Args, args...)
	l.cmd.Env = append(append(os.Environ(), "INTAKE_SECRET_KEY="+strings.TrimSpace(string(key))), env...)
	l.cmd.Stdout, l.cmd.Stderr = l.logs, l.logs
	require.NoError(t, l.cmd.Start())
	t.Cleanup(func() {
		if l.cmd.ProcessState == nil {
			_ = l.cmd.Process.Kill()
			_ = l.cmd.Wait()
		}
		if t.Failed() {
			t.Logf("listener output:\n%s", tail(l.logs.String(), 6000))
		}
	})
	return l
}

// stop sends SIGTERM and waits: the process shuts down cleanly.
func (l *listener) stop() {
	require.NoError(l.t, l.cmd.Process.Signal(syscall.SIGTERM))
	_ = l.cmd.Wait()
}

func (l *listener) kill() {
	require.NoError(l.t, l.cmd.Process.Kill())
	_ = l.cmd.Wait()
}

func userRecord(i int, eventType string) kafkago.Message {
	return kafkago.Message{
		Key:     []byte(fmt.Sprintf("u%04d", i)),
		Value:   []byte(fmt.Sprintf(`{"type":"user.upserted","user":{"id":"k%04d","display_name":"User %d","email":"k%d@x.io"},"support_groups":[{"id":"sg-k"}]}`, i, i, i)),
		Headers: []kafkago.Header{{Key: "Event-Type", Value: []byte(eventType)}},
	}
}

func TestKafkaListener(t *testing.T) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(3),
		kfake.GroupMinSessionTimeout(time.Second))
	require.NoError(t, err)
	defer broker.Close()
	brokers := strings.Join(broker.ListenAddrs(), ",")
	s := startDev(t)
	w := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: "identity.users", Balancer: &kafkago.RoundRobin{},
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	ctx := context.Background()
	produce := func(from, to int, eventType string) {
		var msgs []kafkago.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, userRecord(i, eventType))
		}
		require.NoError(t, w.WriteMessages(ctx, msgs...))
	}
	count := func(path string) int {
		var items []map[string]any
		s.request("GET", path, nil, true, &items)
		return len(items)
	}

	// Temporal unreachable: the listener fetches, cannot start, commits nothing.
	produce(0, 50, "user")
	kafkaArgs := []string{"--kafka-brokers", brokers}
	dead := startListener(t, s, fmt.Sprintf("127.0.0.1:%d", freePort(t)), nil, kafkaArgs...)
	require.Eventually(t, func() bool { return strings.Contains(dead.logs.String(), "workflow start failed; retrying") },
		time.Minute, 100*time.Millisecond)
	dead.kill()

	// The real listener: 50 waiting records, then 1000 more while it is killed half-way.
	l := startListener(t, s, s.addr("temporal"), nil, kafkaArgs...)
	produce(50, 550, "user")
	produce(1050, 1060, "test") // header_filter drops these: committed, recorded as filtered
	require.Eventually(t, func() bool { return count("/api/v1/entities?template=user&limit=1000") >= 300 }, 3*time.Minute, 200*time.Millisecond)
	l.kill()
	produce(550, 1050, "user")
	l = startListener(t, s, s.addr("temporal"), nil, kafkaArgs...)

	require.Eventually(t, func() bool { return count("/api/v1/entities?template=user&limit=1000") == 1000 }, 5*time.Minute, 500*time.Millisecond,
		"every record becomes an entity")
	require.Eventually(t, func() bool {
		return count("/api/v1/audit_logs?integration=users_kafka&origin=KAFKA&status=SUCCESS&limit=1000") >= 1000
	}, 2*time.Minute, 500*time.Millisecond)
	time.Sleep(3 * time.Second) // anything processed twice would show up now
	assert.Equal(t, 1000, count("/api/v1/audit_logs?integration=users_kafka&origin=KAFKA&status=SUCCESS&limit=1000"), "exactly once")
	assert.Equal(t, 0, count("/api/v1/audit_logs?integration=users_kafka&status=FAILURE&limit=1000"))
	require.Eventually(t, func() bool {
		return count("/api/v1/deliveries?integration=users_kafka&status=filtered&limit=1000") == 10
	},
		time.Minute, 500*time.Millisecond, "filtered records are committed and visible")

	var d intake.DeliveryRecord
	code, _ := s.request("GET", "/api/v1/deliveries/users_kafka.identity.users.0.0", nil, true, &d)
	require.Equal(t, 200, code)
	assert.Equal(t, intake.OriginKafka, d.Origin)
	assert.Equal(t, "user", d.Headers["event-type"])
	var e intake.Entity
	code, _ = s.request("GET", "/api/v1/entities/user/k0042", nil, true, &e)
	require.Equal(t, 200, code)
	assert.Equal(t, "User 42", e.Title)
	assert.Equal(t, []any{"sg-k"}, e.Relations["support_groups"])

	// A new integration on a topic that does not exist yet, in a group of its own: followed
	// without a restart.
	putIntegration(t, s, `{"identifier":"teams_kafka","source":{"kind":"kafka","topics":["teams.events"],"group":"teams"},
	  "mappings":[{"template":"support_group","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
	time.Sleep(3 * time.Second) // the listener picks the group up; a new group starts at the earliest offset anyway
	tw := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: "teams.events", AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer tw.Close()
	require.NoError(t, tw.WriteMessages(ctx, kafkago.Message{Value: []byte(`{"id":"kafka-team","name":"From Kafka"}`)}))
	require.Eventually(t, func() bool {
		code, _ := s.request("GET", "/api/v1/entities/support_group/kafka-team", nil, true, nil)
		return code == 200
	}, 2*time.Minute, 300*time.Millisecond)
}
