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
	for _, p := range l.Catalog.Programs() {
		in := &p.Integration
		if in.SourceKind() == intake.SourcePubSub && in.IsEnabled() && in.Source != nil && in.Source.Subscription != "" {
			want[in.Identifier] = in.Source.Subscription
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, s := range l.subs {
		if want[id] != s.subscription {
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
		s := &subscriber{subscription: sub, cancel: cancel, done: make(chan struct{})}
		l.subs[id] = s
		go func(id string) {
			defer close(s.done)
			l.receive(ctx, id, sub)
		}(id)
	}
}

// ShortID is a subscription's last path segment (the form used in workflow IDs).
func ShortID(subscription string) string {
	return subscription[strings.LastIndex(subscription, "/")+1:]
}

func (l *Listener) receive(ctx context.Context, integration, subscription string) {
	sub := l.client.Subscriber(subscription)
	sub.ReceiveSettings.MaxOutstandingMessages = l.MaxOutstanding
	sub.ReceiveSettings.NumGoroutines = 2
	short := ShortID(subscription)
	l.Log.Info("pubsub subscriber starting", "integration", integration, "subscription", subscription)
	for ctx.Err() == nil {
		err := sub.Receive(ctx, func(ctx context.Context, m *ps.Message) {
			metrics.PubSubReceived.WithLabelValues(short).Inc()
			d := intake.Delivery{
				Integration: integration, Key: short + "." + m.ID, Origin: intake.OriginPubSub,
				Body: m.Data, Headers: m.Attributes, ReceivedAt: time.Now().UTC(),
				Meta: map[string]any{"subscription": short, "message_id": m.ID, "publish_time": m.PublishTime.UTC().Format(time.RFC3339Nano)},
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
