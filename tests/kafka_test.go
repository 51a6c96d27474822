package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
	"intake/examples"
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

// startBroker runs an in-process Kafka-protocol broker for the test: topics created on first use
// with the given partitions, quick group joins; closed when the test ends.
func startBroker(t testing.TB, partitions int, opts ...kfake.Opt) *kfake.Cluster {
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(partitions),
		kfake.GroupMinSessionTimeout(time.Second)}, opts...)
	broker, err := kfake.NewCluster(opts...)
	require.NoError(t, err)
	t.Cleanup(broker.Close)
	return broker
}

// usersTopic is the topic of the seed's users_kafka integration.
const usersTopic = "identity_provider_users"

// userRecord is an identity provider's user record in the shape the seed's users_kafka reads,
// in support group (team) sg-k; its header_filter keeps the records whose header event is create.
func userRecord(i int, event string) kafkago.Message {
	return kafkago.Message{
		Key:     []byte(fmt.Sprintf("k%04d", i)),
		Value:   []byte(fmt.Sprintf(`{"user_id":"k%04d","firstname":"User","lastname":"%d","support_groups":[{"id":"sg-k","name":"Kafka"}]}`, i, i)),
		Headers: []kafkago.Header{{Key: "event", Value: []byte(event)}},
	}
}

// createTeams makes team entities through a webhook integration of their own, so that user
// records may name them (the seed's users_kafka does not create missing related entities).
func createTeams(t testing.TB, s *stack, ids ...string) {
	putIntegration(t, s, `{"identifier":"teams_hook","security":{"scheme":"none","allow_unsigned":true},
	  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".id"}}}]}`)
	for _, id := range ids {
		code, out := s.post("teams_hook", []byte(`{"id":"`+id+`"}`), nil)
		require.Equal(t, 202, code, "%v", out)
		_, err := s.waitWorkflow(out["workflow_id"].(string))
		require.NoError(t, err)
	}
}

func TestKafkaListener(t *testing.T) {
	broker := startBroker(t, 3)
	brokers := strings.Join(broker.ListenAddrs(), ",")
	s := startDev(t)
	// The seed's users_kafka is consumed as loaded from examples/, verbatim: no source, the
	// mapping's topic and header_filter.
	var users intake.Integration
	code, _ := s.request("GET", "/api/v1/integrations/users_kafka", nil, true, &users)
	require.Equal(t, 200, code)
	require.Nil(t, users.Source)
	require.Len(t, users.Mappings, 1)
	assert.Equal(t, usersTopic, users.Mappings[0].Topic)
	assert.Equal(t, `.event == "create"`, users.Mappings[0].HeaderFilter)
	assert.False(t, users.Mappings[0].CreateMissingRelatedEntities)
	createTeams(t, s, "sg-k")

	w := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: usersTopic, Balancer: &kafkago.RoundRobin{},
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	ctx := context.Background()
	produce := func(from, to int, event string) {
		var msgs []kafkago.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, userRecord(i, event))
		}
		require.NoError(t, w.WriteMessages(ctx, msgs...))
	}
	count := func(path string) int {
		var items []map[string]any
		s.request("GET", path, nil, true, &items)
		return len(items)
	}

	// Temporal lost after the listener joined: it fetches, cannot start, commits nothing.
	kafkaArgs := []string{"--kafka-brokers", brokers}
	link := startProxy(t, s.addr("temporal"), true)
	dead := startListener(t, s, link.addr(), nil, kafkaArgs...)
	require.Eventually(t, func() bool { return strings.Contains(dead.logs.String(), "kafka consumer starting") },
		time.Minute, 100*time.Millisecond)
	link.set(false)
	produce(0, 50, "create")
	require.Eventually(t, func() bool { return strings.Contains(dead.logs.String(), "workflow start failed; retrying") },
		time.Minute, 100*time.Millisecond)
	dead.kill()

	// The real listener: 50 waiting records, then 1000 more while it is killed half-way.
	l := startListener(t, s, s.addr("temporal"), nil, kafkaArgs...)
	produce(50, 550, "create")
	produce(1050, 1060, "update") // header_filter drops another event: committed, recorded as filtered
	require.Eventually(t, func() bool { return count("/api/v1/entities?template=users&limit=1000") >= 300 }, 3*time.Minute, 200*time.Millisecond)
	l.kill()
	produce(550, 1050, "create")
	l = startListener(t, s, s.addr("temporal"), nil, kafkaArgs...)

	require.Eventually(t, func() bool { return count("/api/v1/entities?template=users&limit=1000") == 1000 }, 5*time.Minute, 500*time.Millisecond,
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

	var filtered []intake.DeliveryRecord
	s.request("GET", "/api/v1/deliveries?integration=users_kafka&status=filtered&limit=1000", nil, true, &filtered)
	for _, d := range filtered {
		assert.Equal(t, "update", d.Headers["event"], "only records of another event are filtered")
	}

	// A record's key is topic.partition.offset.timestamp_ms, so a recreated topic's records are
	// never taken for old ones.
	var d intake.DeliveryRecord
	all := func() []intake.DeliveryRecord {
		var list []intake.DeliveryRecord
		for cursor := ""; ; {
			var page []intake.DeliveryRecord
			_, h := s.request("GET", "/api/v1/deliveries?integration=users_kafka&limit=1000&cursor="+url.QueryEscape(cursor), nil, true, &page)
			list = append(list, page...)
			if cursor = h.Get("X-Next-Cursor"); cursor == "" {
				return list
			}
		}
	}
	for _, r := range all() {
		if r.Meta["partition"] == float64(0) && r.Meta["offset"] == float64(0) {
			d = r
		}
	}
	require.NotEmpty(t, d.ID, "the delivery of partition 0, offset 0")
	assert.Regexp(t, `^users_kafka\.`+usersTopic+`\.0\.0\.\d{13}$`, d.ID)
	assert.Equal(t, intake.OriginKafka, d.Origin)
	assert.Equal(t, "create", d.Headers["event"])
	var e intake.Entity
	code, _ = s.request("GET", "/api/v1/entities/users/k0042", nil, true, &e)
	require.Equal(t, 200, code)
	assert.Equal(t, "User 42", e.Title)
	assert.Equal(t, map[string]any{"firstname": "User", "lastname": "42"}, e.Properties)
	assert.Equal(t, []any{"sg-k"}, e.Relations["team"])

	// The example records (examples/samples) as a producer sends them: a user in no team, and one
	// whose team does not exist (the seed's FAILURE, "Relation 'compilers' does not exist").
	samples, err := examples.Samples()
	require.NoError(t, err)
	var userSamples []examples.Sample
	for _, smp := range samples {
		if smp.Integration == "users_kafka" {
			require.Equal(t, usersTopic, smp.Topic, smp.Name)
			var value bytes.Buffer
			require.NoError(t, json.Compact(&value, smp.Body))
			msg := kafkago.Message{Value: value.Bytes()}
			for k, v := range smp.Headers {
				msg.Headers = append(msg.Headers, kafkago.Header{Key: k, Value: []byte(v)})
			}
			require.NoError(t, w.WriteMessages(ctx, msg))
			userSamples = append(userSamples, smp)
		}
	}
	require.GreaterOrEqual(t, len(userSamples), 2)
	for _, smp := range userSamples {
		for _, want := range smp.Expect.Audit {
			var got intake.AuditEntry
			require.Eventually(t, func() bool {
				var entries []intake.AuditEntry
				s.request("GET", "/api/v1/audit_logs?integration=users_kafka&entity_template="+want.EntityTemplate+"&status="+want.Status+"&limit=1000", nil, true, &entries)
				for _, e := range entries {
					if e.Context.Entity == want.Entity {
						got = e
						return true
					}
				}
				return false
			}, 2*time.Minute, 300*time.Millisecond, "%s: audit entry %s %s %s", smp.Name, want.Action, want.Status, want.Entity)
			assert.Equal(t, want.Action, got.Action, smp.Name)
			assert.Equal(t, intake.OriginKafka, got.Trigger.Origin)
			assert.Equal(t, want.Message, got.Message, smp.Name)
			if want.Details != nil {
				assert.Equal(t, want.Details, got.Details, smp.Name)
			}
		}
		for _, want := range smp.Expect.Entities {
			var got intake.Entity
			code, _ := s.request("GET", "/api/v1/entities/"+want.Template+"/"+want.Identifier, nil, true, &got)
			require.Equal(t, 200, code, "%s: entity %s/%s", smp.Name, want.Template, want.Identifier)
			assert.Equal(t, want.Title, got.Title)
			assert.Equal(t, want.Properties, got.Properties)
			for k, v := range want.Relations {
				assert.Equal(t, fmt.Sprint(v), fmt.Sprint(got.Relations[k]), "relation %s", k)
			}
			assert.Equal(t, "users_kafka", got.UpdatedBy)
		}
		for _, absent := range smp.Expect.Absent {
			code, _ := s.request("GET", "/api/v1/entities/"+absent.Template+"/"+absent.Identifier, nil, true, nil)
			assert.Equal(t, 404, code, "%s: %s/%s", smp.Name, absent.Template, absent.Identifier)
		}
	}

	// The backlog per partition: each partition of the users topic has a lag series (0 once
	// everything is committed).
	require.Eventually(t, func() bool {
		resp, err := http.Get(l.base + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		return strings.Count(string(raw), `intake_kafka_partition_lag{group="intake",partition=`) == 3
	}, 30*time.Second, 500*time.Millisecond, "one lag series per partition")

	// Poison records between good ones: each becomes a failed delivery with its reason (and an
	// audit entry), is committed, and the partition keeps moving.
	poison := []kafkago.Message{
		userRecord(2000, "create"),
		{Key: []byte("bad-json"), Value: []byte("this is not JSON"), Headers: []kafkago.Header{{Key: "event", Value: []byte("create")}}},
		{Key: []byte("tombstone"), Value: nil},
		{Key: []byte("binary"), Value: []byte{0xff, 0xfe, 0x00, 0x01}},
		userRecord(2001, "create"),
	}
	w2 := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: usersTopic, Balancer: &kafkago.Hash{},
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer w2.Close()
	for i := range poison {
		poison[i].Key = []byte("same-partition") // one partition: the good record after them must still come through
	}
	require.NoError(t, w2.WriteMessages(ctx, poison...))
	require.Eventually(t, func() bool {
		c1, _ := s.request("GET", "/api/v1/entities/users/k2001", nil, true, nil)
		return c1 == 200
	}, 2*time.Minute, 300*time.Millisecond, "the record after the poison ones is ingested")
	var failed []intake.DeliveryRecord
	require.Eventually(t, func() bool {
		s.request("GET", "/api/v1/deliveries?integration=users_kafka&status=failed&limit=1000", nil, true, &failed)
		n := 0
		for _, f := range failed {
			if f.Error != nil && f.Error.Type == "InvalidDelivery" {
				n++
			}
		}
		return n == 3
	}, time.Minute, 300*time.Millisecond)
	reasons := map[string]string{}
	for _, f := range failed {
		if f.Error != nil && f.Error.Type == "InvalidDelivery" {
			reasons[f.BodyEncoding] += f.Error.Message + "; "
		}
	}
	assert.Contains(t, reasons[intake.BodyText], "tombstone")
	assert.Contains(t, reasons[intake.BodyText], "not JSON", "the text record keeps its body as text")
	assert.Contains(t, reasons[intake.BodyBase64], "UTF-8", "the binary record keeps its body as base64")
	var rejected []intake.AuditEntry
	s.request("GET", "/api/v1/audit_logs?integration=users_kafka&status=FAILURE&limit=1000", nil, true, &rejected)
	n := 0
	for _, e := range rejected {
		if e.ResourceType == "delivery" {
			n++
		}
	}
	assert.Equal(t, 3, n, "each poison record has an audit entry")

	// A new integration on a topic that does not exist yet, in a group of its own: followed
	// without a restart.
	putIntegration(t, s, `{"identifier":"teams_kafka","source":{"kind":"kafka","topics":["teams.events"],"group":"teams"},
	  "mappings":[{"template":"team","entity":{"identifier":".id","properties":{"name":".name"}}}]}`)
	time.Sleep(3 * time.Second) // the listener picks the group up; a new group starts at the earliest offset anyway
	tw := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: "teams.events", AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer tw.Close()
	require.NoError(t, tw.WriteMessages(ctx, kafkago.Message{Value: []byte(`{"id":"kafka-team","name":"From Kafka"}`)}))
	require.Eventually(t, func() bool {
		code, _ := s.request("GET", "/api/v1/entities/team/kafka-team", nil, true, nil)
		return code == 200
	}, 2*time.Minute, 300*time.Millisecond)
}
