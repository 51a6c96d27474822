// Package pubsub is the Google Pub/Sub starter: one subscriber per pubsub integration, each
// message a Delivery whose workflow is started before the message is acked (nacked otherwise,
// so Pub/Sub redelivers it).
package pubsub

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	ps "cloud.google.com/go/pubsub/v2"

	"intake"
	"intake/mappings"
	"intake/metrics"
	"intake/starters"
)

// Listener follows the configuration: it runs a subscriber per enabled pubsub integration and
// restarts it when the integration's subscription changes. PUBSUB_EMULATOR_HOST is honoured by
// the client library.
type Listener struct {
	Project string
	Catalog *mappings.Catalog
	Accept  *starters.Acceptor
	Log     *slog.Logger
	// MaxOutstanding is the flow control: messages held (being started) at once per subscriber.
	MaxOutstanding int
	SyncEvery      time.Duration

	client *ps.Client
	mu     sync.Mutex
	subs   map[string]*subscriber // integration -> subscriber
}

type subscriber struct {
	subscription string
	batch        *mappings.BatchPlan
	cancel       context.CancelFunc
	done         chan struct{}
}

// Run receives until ctx ends.
func (l *Listener) Run(ctx context.Context) error {
	if l.MaxOutstanding <= 0 {
		l.MaxOutstanding = 64
	}
	c, err := ps.NewClient(ctx, l.Project)
	if err != nil {
		return fmt.Errorf("pubsub client for project %s: %w", l.Project, err)
	}
	defer c.Close()
	l.client = c
	l.subs = map[string]*subscriber{}
	starters.Follow(ctx, l.SyncEvery, l.sync, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, s := range l.subs {
			s.cancel()
			<-s.done
		}
	})
	return nil
}

func (l *Listener) sync() {
	want := map[string]string{}
	batches := map[string]*mappings.BatchPlan{}
	for _, p := range l.Catalog.Programs() {
		in := &p.Integration
		if in.SourceKind() == intake.SourcePubSub && in.IsEnabled() && in.Source != nil && in.Source.Subscription != "" {
			want[in.Identifier] = in.Source.Subscription
			batches[in.Identifier] = p.Batch
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, s := range l.subs {
		if want[id] != s.subscription || !sameBatch(batches[id], s.batch) {
			s.cancel()
			<-s.done
			delete(l.subs, id)
		}
	}
	for id, sub := range want {
		if _, ok := l.subs[id]; ok {
			continue
		}
		ctx, cancel := context.WithCancel(context.Background())
		s := &subscriber{subscription: sub, batch: batches[id], cancel: cancel, done: make(chan struct{})}
		l.subs[id] = s
		go func(id string) {
			defer close(s.done)
			l.receive(ctx, id, sub, s.batch)
		}(id)
	}
}

// ShortID is a subscription's last path segment (the form used in workflow IDs).
func ShortID(subscription string) string {
	return subscription[strings.LastIndex(subscription, "/")+1:]
}

func sameBatch(a, b *mappings.BatchPlan) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

func (l *Listener) receive(ctx context.Context, integration, subscription string, batch *mappings.BatchPlan) {
	sub := l.client.Subscriber(subscription)
	sub.ReceiveSettings.MaxOutstandingMessages = l.MaxOutstanding
	sub.ReceiveSettings.NumGoroutines = 2
	short := ShortID(subscription)
	var b *batcher
	if batch != nil {
		// A batch is held until it is settled: flow control must let a whole one in, and more.
		sub.ReceiveSettings.MaxOutstandingMessages = max(l.MaxOutstanding, 2*batch.MaxRecords)
		b = &batcher{l: l, integration: integration, plan: batch, in: make(chan held)}
		go b.run(ctx)
	}
	l.Log.Info("pubsub subscriber starting", "integration", integration, "subscription", subscription, "batched", batch != nil)
	for ctx.Err() == nil {
		err := sub.Receive(ctx, func(ctx context.Context, m *ps.Message) {
			metrics.PubSubReceived.WithLabelValues(short).Inc()
			d := intake.Delivery{
				Integration: integration, Key: short + "." + m.ID, Origin: intake.OriginPubSub,
				Body: m.Data, Headers: m.Attributes, ReceivedAt: time.Now().UTC(),
				Meta: map[string]any{"subscription": short, "message_id": m.ID, "publish_time": m.PublishTime.UTC().Format(time.RFC3339Nano)},
			}
			if b != nil {
				select {
				case b.in <- held{d: d, m: m}:
				case <-ctx.Done():
					m.Nack()
				}
				return
			}
			// Acked once settled: started, or recorded as failed when it can never start (so a
			// poison message is not redelivered forever); nacked on a transient failure.
			if _, err := l.Accept.Accept(ctx, &d); err != nil {
				l.Log.Warn("workflow start failed; message nacked for redelivery", "integration", integration, "message_id", m.ID, "err", err)
				m.Nack()
				return
			}
			m.Ack()
		})
		if err != nil && ctx.Err() == nil {
			l.Log.Warn("pubsub receive stopped; retrying", "integration", integration, "subscription", subscription, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
}

// held is a received message waiting for its batch to be settled.
type held struct {
	d intake.Delivery
	m *ps.Message
}

// batcher gathers a batching integration's messages (max_records, max_wait) and settles each
// batch as one batch workflow: acked once started (or recorded failed), nacked on a transient
// failure, so Pub/Sub redelivers them (a redelivered record is claimed once).
type batcher struct {
	l           *Listener
	integration string
	plan        *mappings.BatchPlan
	in          chan held
}

func (b *batcher) run(ctx context.Context) {
	for {
		var first held
		select {
		case first = <-b.in:
		case <-ctx.Done():
			return
		}
		batch := []held{first}
		deadline := time.After(b.plan.MaxWait)
	fill:
		for len(batch) < b.plan.MaxRecords {
			select {
			case h := <-b.in:
				batch = append(batch, h)
			case <-deadline:
				break fill
			case <-ctx.Done():
				break fill
			}
		}
		go b.settle(ctx, batch)
	}
}

func (b *batcher) settle(ctx context.Context, batch []held) {
	records := make([]intake.Delivery, len(batch))
	for i := range batch {
		records[i] = batch[i].d
	}
	err := b.l.Accept.AcceptBatch(ctx, b.integration, records)
	for _, h := range batch {
		if err != nil {
			h.m.Nack()
		} else {
			h.m.Ack()
		}
	}
	if err != nil {
		b.l.Log.Warn("batch workflow start failed; messages nacked for redelivery", "integration", b.integration, "records", len(batch), "err", err)
	}
}
