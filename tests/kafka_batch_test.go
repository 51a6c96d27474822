package tests

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/activities"
)

// Batch mode (source.batch): records of one partition run as one workflow each batch, still
// exactly once across kill -9 of the listener, a failing record fails alone and replays alone,
// and a poison record is a failed delivery of its own.
func TestKafkaBatchMode(t *testing.T) {
	broker := startBroker(t, 3)
	brokers := strings.Join(broker.ListenAddrs(), ",")
	s := startDev(t)
	createTeams(t, s, "sg-k")
	const topic = "users.batch"
	putBatchedUsers(t, s, topic, 100, "100ms")

	w := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: topic, Balancer: &kafkago.RoundRobin{},
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer w.Close()
	ctx := context.Background()
	produce := func(from, to int) {
		var msgs []kafkago.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, userRecord(i, "create"))
		}
		require.NoError(t, w.WriteMessages(ctx, msgs...))
	}
	count := func(path string) int { return countAll(s, path) }
	users := func() int { return count("/api/v1/entities?template=users&limit=1000") }

	// 600 records waiting, then 400 more while the listener is killed (kill -9) mid-stream.
	produce(0, 600)
	kafkaArgs := []string{"--kafka-brokers", brokers}
	l := startListener(t, s, s.addr("temporal"), nil, kafkaArgs...)
	require.Eventually(t, func() bool { return users() >= 200 }, 3*time.Minute, 100*time.Millisecond)
	l.kill()
	produce(600, 1000)
	l = startListener(t, s, s.addr("temporal"), nil, kafkaArgs...)
	require.Eventually(t, func() bool { return users() == 1000 }, 5*time.Minute, 500*time.Millisecond, "every record becomes an entity")
	success := "/api/v1/audit_logs?integration=users_batch&origin=KAFKA&status=SUCCESS&limit=1000"
	require.Eventually(t, func() bool { return count(success) >= 1000 }, 2*time.Minute, 500*time.Millisecond)
	require.Eventually(t, func() bool {
		return count("/api/v1/deliveries?integration=users_batch&status=succeeded&limit=1000") == 1000
	}, time.Minute, 500*time.Millisecond, "every record is a succeeded delivery of its own")
	time.Sleep(3 * time.Second) // anything processed twice would show up now
	assert.Equal(t, 1000, count(success), "exactly once")
	assert.Equal(t, 0, count("/api/v1/audit_logs?integration=users_batch&status=FAILURE&limit=1000"))

	// Records ran in batches: each delivery names its batch's workflow, whose result lists it.
	// Which records share a batch depends on timing (the last one may go alone after max_wait),
	// so the details are checked on a record of the largest batch.
	var list []intake.DeliveryRecord
	code, _ := s.request("GET", "/api/v1/deliveries?integration=users_batch&limit=1000", nil, true, &list)
	require.Equal(t, 200, code)
	require.Len(t, list, 1000)
	perBatch := map[string]int{}
	d := list[0]
	for _, r := range list {
		if perBatch[r.WorkflowID]++; perBatch[r.WorkflowID] > perBatch[d.WorkflowID] {
			d = r
		}
	}
	assert.Less(t, len(perBatch), 100, "1,000 records ran in fewer than 100 batch workflows")
	assert.Regexp(t, `^users_batch\.`+topic+`\.\d\.\d+\.\d{13}$`, d.ID, "a record keeps its own delivery ID")
	assert.Regexp(t, `^ingest-batch\.users_batch\.`+topic+`\.\d\.\d+-\d+$`, d.WorkflowID)
	batch := batchResult(t, s, d.WorkflowID)
	assert.Greater(t, len(batch.Records), 1, "a batch carries several records")
	found := false
	for _, r := range batch.Records {
		if r.DeliveryID == d.ID {
			found = true
			assert.Equal(t, intake.DeliverySucceeded, r.Outcome)
			require.Len(t, r.Entities, 1)
			assert.Equal(t, intake.OutcomeCreated, r.Entities[0].Outcome)
		}
	}
	assert.True(t, found, "the batch result lists the record")

	// One partition: a good record, a poison one, a record whose team does not exist, a good one.
	w2 := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: topic, Balancer: &kafkago.Hash{},
		AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
	defer w2.Close()
	orphan := userRecord(2001, "create")
	orphan.Value = []byte(`{"user_id":"k2001","firstname":"No","lastname":"Team","support_groups":[{"id":"sg-later"}]}`)
	mixed := []kafkago.Message{userRecord(2000, "create"), {Value: []byte("not JSON")}, orphan, userRecord(2002, "create")}
	for i := range mixed {
		mixed[i].Key = []byte("same-partition")
	}
	require.NoError(t, w2.WriteMessages(ctx, mixed...))
	var failed []intake.DeliveryRecord
	require.Eventually(t, func() bool {
		failed = nil
		s.request("GET", "/api/v1/deliveries?integration=users_batch&status=failed&limit=1000", nil, true, &failed)
		return len(failed) == 2
	}, 2*time.Minute, 300*time.Millisecond, "the poison record and the orphan fail, each alone")
	for _, id := range []string{"k2000", "k2002"} {
		code, _ := s.request("GET", "/api/v1/entities/users/"+id, nil, true, nil)
		assert.Equal(t, 200, code, "%s, in the same batch as the failing record, is ingested", id)
	}
	var orphanDelivery intake.DeliveryRecord
	for _, f := range failed {
		require.NotNil(t, f.Error)
		switch f.Error.Type {
		case "InvalidDelivery":
			assert.Contains(t, f.Error.Message, "not JSON")
		case intake.ErrRelationMissing:
			orphanDelivery = f
			assert.Equal(t, "Relation 'sg-later' does not exist", f.Error.Message)
		default:
			t.Errorf("unexpected failure %v", f.Error)
		}
	}
	require.NotEmpty(t, orphanDelivery.ID)

	// The failed record replays alone once its team exists.
	createTeams(t, s, "sg-later")
	var replay map[string]any
	code, _ = s.request("POST", "/api/v1/deliveries/"+orphanDelivery.ID+"/replay", nil, true, &replay)
	require.Equal(t, 202, code, "%v", replay)
	res, err := s.waitWorkflow(replay["workflow_id"].(string))
	require.NoError(t, err)
	assert.Equal(t, intake.DeliverySucceeded, res.Outcome)
	var e intake.Entity
	code, _ = s.request("GET", "/api/v1/entities/users/k2001", nil, true, &e)
	require.Equal(t, 200, code)
	assert.Equal(t, []any{"sg-later"}, e.Relations["team"])
	assert.Equal(t, 1003, users())
	assert.Equal(t, 1002, count(success), "one SUCCESS entry per record ingested from Kafka")
}

// countAll counts the items of a list endpoint, following X-Next-Cursor.
func countAll(s *stack, path string) int {
	n, cursor := 0, ""
	for {
		var items []map[string]any
		p := path
		if cursor != "" {
			p += "&cursor=" + url.QueryEscape(cursor)
		}
		code, h := s.request("GET", p, nil, true, &items)
		if code != 200 {
			return n
		}
		n += len(items)
		if cursor = h.Get("X-Next-Cursor"); cursor == "" {
			return n
		}
	}
}

// putBatchedUsers stores users_batch: the seed's users_kafka mapping, reading topic in batches,
// in consumer group "batch".
func putBatchedUsers(t testing.TB, s *stack, topic string, maxRecords int, maxWait string) {
	putIntegration(t, s, fmt.Sprintf(`{"identifier":"users_batch","title":"Users, batched",
	  "source":{"kind":"kafka","topics":[%q],"group":"batch","batch":{"max_records":%d,"max_wait":%q}},
	  "mappings":[{"template":"users","entity":{"identifier":".user_id","title":"(.firstname + \" \" + .lastname)",
	    "properties":{"firstname":".firstname","lastname":".lastname"},"relations":{"team":".support_groups[]?.id"}}}]}`,
		topic, maxRecords, maxWait))
}

// batchResult is a finished batch workflow's result.
func batchResult(t *testing.T, s *stack, workflowID string) activities.BatchResult {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res activities.BatchResult
	require.NoError(t, s.temporal.GetWorkflow(ctx, workflowID, "").Get(ctx, &res))
	return res
}
