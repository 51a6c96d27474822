// Package kafka is the Kafka starter: one consumer group per set of kafka integrations, each
// record a Delivery whose workflow is started before its offset is committed.
package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"intake"
	"intake/mappings"
	"intake/metrics"
	"intake/starters"
)

// Listener follows the configuration: it runs a consumer for every consumer group that kafka
// integrations name (or the default group) over the union of their topics, and restarts a
// group's consumer when its topics change.
type Listener struct {
	Brokers      []string
	DefaultGroup string
	Conn         Conn
	Catalog      *mappings.Catalog
	Accept       *starters.Acceptor
	Log          *slog.Logger
	// SyncEvery is how often the configuration is compared with the running consumers.
	SyncEvery time.Duration
	// SessionTimeout of the group members: how long a dead consumer holds its partitions.
	SessionTimeout time.Duration

	mu     sync.Mutex
	groups map[string]*consumer
	// wantGroups are the groups the configuration asked for at the last sync.
	wantGroups []string

	transportOnce sync.Once
	transport     *kafkago.Transport
}

// Waiting lists the consumer groups the configuration wants that have not joined yet (empty:
// every group consumes; listeners are ready).
func (l *Listener) Waiting() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups == nil {
		return []string{"(listener starting)"}
	}
	var out []string
	for _, g := range l.wantGroups {
		if c, ok := l.groups[g]; !ok || !c.joined.Load() {
			out = append(out, g)
		}
	}
	return out
}

// Batch bounds how many records are started at once before their offsets are committed.
const Batch = 64

// Run consumes until ctx ends, then stops every consumer (committing what was started).
func (l *Listener) Run(ctx context.Context) {
	l.groups = map[string]*consumer{}
	starters.Follow(ctx, l.SyncEvery, l.sync, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range l.groups {
			c.stop()
		}
	})
}

// wanted computes, from the configuration, each group's sorted topics.
func (l *Listener) wanted() map[string][]string {
	sets := map[string]map[string]bool{}
	for _, p := range l.Catalog.Programs() {
		in := &p.Integration
		if in.SourceKind() != intake.SourceKafka || !in.IsEnabled() {
			continue
		}
		group := l.groupOf(in)
		if sets[group] == nil {
			sets[group] = map[string]bool{}
		}
		for _, t := range topicsOf(in) {
			sets[group][t] = true
		}
	}
	out := map[string][]string{}
	for g, set := range sets {
		for t := range set {
			out[g] = append(out[g], t)
		}
		sort.Strings(out[g])
	}
	return out
}

func (l *Listener) groupOf(in *intake.Integration) string {
	if in.Source != nil && in.Source.Group != "" {
		return in.Source.Group
	}
	return l.DefaultGroup
}

// topicsOf is an integration's topics: source.topics plus the mappings' topic routing.
func topicsOf(in *intake.Integration) []string {
	var out []string
	if in.Source != nil {
		out = append(out, in.Source.Topics...)
	}
	for _, m := range in.Mappings {
		if m.Topic != "" {
			out = append(out, m.Topic)
		}
	}
	return out
}

func (l *Listener) sync() {
	want := l.wanted()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.wantGroups = l.wantGroups[:0]
	for g, topics := range want {
		if len(topics) > 0 {
			l.wantGroups = append(l.wantGroups, g)
		}
	}
	sort.Strings(l.wantGroups)
	for g, c := range l.groups {
		st := c.reader.Stats()
		if st.Rebalances > 0 {
			c.joined.Store(true) // a generation of the group was joined
		}
		metrics.KafkaLag.WithLabelValues(g).Set(float64(st.Lag))
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		l.reportLag(ctx, g, c.topics)
		cancel()
	}
	for g, c := range l.groups {
		if c.stopped() && c.outOfRange.Load() {
			// A recreated topic (or another cluster): move the group's offsets, then start again.
			_ = c.reader.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := l.resetOffsets(ctx, g, c.topics); err != nil {
				l.Log.Warn("kafka offset reset failed; retrying", "group", g, "err", err)
			}
			cancel()
			delete(l.groups, g)
			continue
		}
		if topics, ok := want[g]; !ok || !slices.Equal(topics, c.topics) {
			l.Log.Info("kafka consumer stopping", "group", g, "topics", c.topics)
			c.stop()
			delete(l.groups, g)
		}
	}
	for g, topics := range want {
		if _, ok := l.groups[g]; ok || len(topics) == 0 {
			continue
		}
		l.Log.Info("kafka consumer starting", "group", g, "topics", topics)
		l.groups[g] = l.start(g, topics)
	}
}

type consumer struct {
	group  string
	topics []string
	reader *kafkago.Reader
	cancel context.CancelFunc
	done   chan struct{}
	// outOfRange is set when the consumer stopped on a committed offset outside a partition.
	outOfRange atomic.Bool
	joined     atomic.Bool
}

// stopped reports whether the consumer ended on its own.
func (c *consumer) stopped() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

func (c *consumer) stop() {
	c.cancel()
	<-c.done
	_ = c.reader.Close() // commits what was marked
}

func (l *Listener) start(group string, topics []string) *consumer {
	session := l.SessionTimeout
	if session <= 0 {
		session = 10 * time.Second
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:        l.Brokers,
		Dialer:         l.Conn.dialer(),
		GroupID:        group,
		GroupTopics:    topics,
		StartOffset:    kafkago.FirstOffset, // a new group starts at the earliest offset
		CommitInterval: 500 * time.Millisecond,
		SessionTimeout: session,
		// Rebalances wait for this long at most; short keeps restarts and topic changes quick.
		RebalanceTimeout:      session,
		HeartbeatInterval:     session / 5,
		WatchPartitionChanges: true,
		// Past a partition's end the reader would wait forever (a recreated topic restarts its
		// offsets); surfacing the error lets the listener move the group's offsets.
		OffsetOutOfRangeError: true,
		MaxWait:               250 * time.Millisecond,
		ErrorLogger: kafkago.LoggerFunc(func(msg string, args ...any) {
			l.Log.Debug("kafka reader", "group", group, "detail", strings.TrimSpace(fmt.Sprintf(msg, args...)))
		}),
	})
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{group: group, topics: topics, reader: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(c.done)
		l.consume(ctx, c)
	}()
	return c
}

// consume fetches records, starts their workflows a batch at a time and commits a batch only
// once every record in it is owned by Temporal. While Temporal is unreachable it retries with
// backoff and fetches nothing more (the fetch buffer is bounded).
func (l *Listener) consume(ctx context.Context, c *consumer) {
	msgs := make(chan kafkago.Message, Batch)
	go func() {
		defer close(msgs)
		for {
			m, err := c.reader.FetchMessage(ctx)
			if err != nil {
				if ctx.Err() != nil || errors.Is(err, context.Canceled) {
					return
				}
				if errors.Is(err, kafkago.OffsetOutOfRange) {
					l.Log.Warn("kafka committed offset is outside a partition; the group's offsets will be reset", "group", c.group, "topics", c.topics)
					c.outOfRange.Store(true)
					c.cancel()
					return
				}
				l.Log.Warn("kafka fetch failed", "group", c.group, "err", err)
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Second):
				}
				continue
			}
			select {
			case msgs <- m:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		first, ok := <-msgs
		if !ok {
			return
		}
		// Without batching, take what is already fetched (up to Batch); with it, wait up to
		// max_wait for max_records.
		limit, wait := Batch, time.Duration(0)
		if b := l.batchOf(c.group); b != nil {
			limit, wait = max(b.MaxRecords, Batch), b.MaxWait
		}
		batch := []kafkago.Message{first}
		var deadline <-chan time.Time
		if wait > 0 {
			deadline = time.After(wait)
		}
	fill:
		for len(batch) < limit {
			var m kafkago.Message
			ok := false
			if deadline == nil {
				select {
				case m, ok = <-msgs:
				default:
				}
			} else {
				select {
				case m, ok = <-msgs:
				case <-deadline:
				}
			}
			if !ok {
				break fill
			}
			batch = append(batch, m)
		}
		if !l.startAll(ctx, c.group, batch) {
			return // stopping: the batch is not committed and will be consumed again
		}
		if err := c.reader.CommitMessages(ctx, batch...); err != nil && ctx.Err() == nil {
			l.Log.Warn("kafka commit failed", "group", c.group, "err", err)
		}
	}
}

// batchOf is how much a fetch of the group gathers: the largest max_records and max_wait of
// its batching integrations (nil: none batches).
func (l *Listener) batchOf(group string) *mappings.BatchPlan {
	var out *mappings.BatchPlan
	for _, p := range l.Catalog.Programs() {
		in := &p.Integration
		if p.Batch == nil || in.SourceKind() != intake.SourceKafka || !in.IsEnabled() || l.groupOf(in) != group {
			continue
		}
		if out == nil {
			out = &mappings.BatchPlan{}
		}
		out.MaxRecords, out.MaxWait = max(out.MaxRecords, p.Batch.MaxRecords), max(out.MaxWait, p.Batch.MaxWait)
	}
	return out
}

// startAll settles the records of a fetch: one workflow per record, or one per run of records
// of a batching integration and partition, started in parallel and each retried until it
// succeeds. It reports false when stopping before everything was settled.
func (l *Listener) startAll(ctx context.Context, group string, batch []kafkago.Message) bool {
	var wg sync.WaitGroup
	var failed sync.Once
	ok := true
	sem := make(chan struct{}, 16)
	run := func(settle func() bool) {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if !settle() {
				failed.Do(func() { ok = false })
			}
		}()
	}
	batches := map[batchKey]*pending{}
	var order []batchKey
	for _, m := range batch {
		metrics.KafkaConsumed.WithLabelValues(group, m.Topic).Inc()
		for _, r := range l.route(group, m) {
			if r.batch == nil {
				d := r.delivery
				run(func() bool { return l.startWithRetry(ctx, d) })
				continue
			}
			k := batchKey{r.delivery.Integration, m.Topic, m.Partition}
			p := batches[k]
			if p == nil {
				p = &pending{plan: r.batch}
				batches[k] = p
				order = append(order, k)
			}
			p.records = append(p.records, r.delivery)
		}
	}
	for _, k := range order {
		records, limit := batches[k].records, batches[k].plan.MaxRecords
		for start := 0; start < len(records); start += limit {
			chunk := records[start:min(start+limit, len(records))]
			run(func() bool { return l.startBatchWithRetry(ctx, k.integration, chunk) })
		}
	}
	wg.Wait()
	return ok
}

type batchKey struct {
	integration string
	topic       string
	partition   int
}

// pending collects one integration's records of one partition, in offset order.
type pending struct {
	plan    *mappings.BatchPlan
	records []intake.Delivery
}

// startBatchWithRetry settles a batch like startWithRetry settles a record.
func (l *Listener) startBatchWithRetry(ctx context.Context, integration string, records []intake.Delivery) bool {
	for attempt := 0; ; attempt++ {
		if err := l.Accept.AcceptBatch(ctx, integration, records); err == nil {
			return true
		} else {
			l.Log.Warn("batch workflow start failed; retrying", "integration", integration, "records", len(records), "err", err, "attempt", attempt+1)
		}
		if !starters.Backoff(ctx, attempt) {
			return false
		}
	}
}

// startWithRetry settles one record: started, or recorded as failed when it can never start (a
// poison record never stalls its partition). Transient failures retry with backoff, forever: the
// record is not committed until it is settled.
func (l *Listener) startWithRetry(ctx context.Context, d intake.Delivery) bool {
	for attempt := 0; ; attempt++ {
		if _, err := l.Accept.Accept(ctx, &d); err == nil {
			return true
		} else {
			l.Log.Warn("workflow start failed; retrying", "integration", d.Integration, "key", d.Key, "err", err, "attempt", attempt+1)
		}
		if !starters.Backoff(ctx, attempt) {
			return false
		}
	}
}

// routed is a record's Delivery for one integration, with that integration's batch plan.
type routed struct {
	delivery intake.Delivery
	batch    *mappings.BatchPlan
}

// route turns a record into one Delivery per kafka integration of the group that reads its topic.
func (l *Listener) route(group string, m kafkago.Message) []routed {
	headers := map[string]string{}
	for _, h := range m.Headers {
		k := strings.ToLower(h.Key)
		if prev, ok := headers[k]; ok {
			headers[k] = prev + ", " + string(h.Value)
		} else {
			headers[k] = string(h.Value)
		}
	}
	// The record's timestamp is part of the key: after a topic is deleted and created again (or
	// another cluster), a new record at a used offset is not a duplicate of the old one.
	key := m.Topic + "." + strconv.Itoa(m.Partition) + "." + strconv.FormatInt(m.Offset, 10) + "." + strconv.FormatInt(m.Time.UnixMilli(), 10)
	var out []routed
	for _, p := range l.Catalog.Programs() {
		in := &p.Integration
		if in.SourceKind() != intake.SourceKafka || !in.IsEnabled() || l.groupOf(in) != group || !slices.Contains(topicsOf(in), m.Topic) {
			continue
		}
		out = append(out, routed{delivery: intake.Delivery{
			Integration: in.Identifier, Key: key, Origin: intake.OriginKafka, Body: m.Value, Headers: headers,
			Meta:       map[string]any{"topic": m.Topic, "partition": m.Partition, "offset": m.Offset, "key": string(m.Key)},
			ReceivedAt: time.Now().UTC(),
		}, batch: p.Batch})
	}
	if len(out) == 0 {
		l.Log.Warn("kafka record matches no integration; committed", "group", group, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
	}
	return out
}
