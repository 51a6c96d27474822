package tests

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"
)

// A topic deleted and created again: its new records reuse offsets the old ones had, and are
// still all ingested (the record's timestamp is part of the delivery key).
func TestKafkaRecreatedTopic(t *testing.T) {
	broker := startBroker(t, 1)
	s := startDev(t)
	createTeams(t, s, "sg-k")
	const topic = "recreated.users"
	putIntegration(t, s, `{"identifier":"recreated_users","source":{"kind":"kafka","topics":["`+topic+`"],"group":"recreated"},
	  "mappings":[{"template":"users","entity":{"identifier":".user_id","properties":{"firstname":".firstname"}}}]}`)
	ctx := context.Background()
	produce := func(from, to int) {
		w := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: topic, AllowAutoTopicCreation: true, BatchTimeout: 5 * time.Millisecond}
		defer w.Close()
		var msgs []kafkago.Message
		for i := from; i < to; i++ {
			msgs = append(msgs, userRecord(i, "create"))
		}
		require.NoError(t, w.WriteMessages(ctx, msgs...))
	}
	count := func() int {
		var items []map[string]any
		s.request("GET", "/api/v1/deliveries?integration=recreated_users&status=succeeded&limit=1000", nil, true, &items)
		return len(items)
	}
	l := startListener(t, s, s.addr("temporal"), nil, "--kafka-brokers", strings.Join(broker.ListenAddrs(), ","))
	defer l.stop()
	produce(0, 20)
	require.Eventually(t, func() bool { return count() == 20 }, 2*time.Minute, 300*time.Millisecond)

	admin := &kafkago.Client{Addr: kafkago.TCP(broker.ListenAddrs()...)}
	res, err := admin.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: []string{topic}})
	require.NoError(t, err)
	require.NoError(t, res.Errors[topic])
	time.Sleep(2 * time.Second)
	produce(100, 110) // offsets 0..9 again, in a new topic
	require.Eventually(t, func() bool { return count() == 30 }, 2*time.Minute, 300*time.Millisecond,
		"the recreated topic's records are ingested, not taken for duplicates")
	for i := 100; i < 110; i++ {
		code, _ := s.request("GET", fmt.Sprintf("/api/v1/entities/users/k%04d", i), nil, true, nil)
		require.Equal(t, 200, code)
	}
}
