// Package metrics owns intake's Prometheus series, shared by the receiver, the listeners and the
// workers of a process, and served on GET /metrics.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Registry holds every series of one process.
var Registry = prometheus.NewRegistry()

var (
	// Deliveries counts finished deliveries by outcome (succeeded, filtered, failed).
	Deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intake_deliveries_total", Help: "Finished deliveries by integration, origin and outcome.",
	}, []string{"integration", "origin", "outcome"})
	// Accepted counts deliveries whose workflow start succeeded (or found a duplicate).
	Accepted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intake_deliveries_accepted_total", Help: "Deliveries handed to Temporal, by integration, origin and duplicate.",
	}, []string{"integration", "origin", "duplicate"})
	// AcceptLatency is the time from receipt to the 202 answer.
	AcceptLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "intake_accept_latency_seconds", Help: "Webhook receipt to 202, by integration.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"integration"})
	// SignatureFailures counts refused webhook signatures.
	SignatureFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intake_signature_failures_total", Help: "Refused webhook signatures by integration.",
	}, []string{"integration"})
	// StartFailures counts workflow starts that failed (Temporal unreachable).
	StartFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intake_workflow_start_failures_total", Help: "Failed workflow starts by integration.",
	}, []string{"integration"})
	// KafkaConsumed counts records fetched by the Kafka listener.
	KafkaConsumed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intake_kafka_records_consumed_total", Help: "Kafka records consumed, by group and topic.",
	}, []string{"group", "topic"})
	// KafkaLag is the consumer lag a group's reader reports.
	KafkaLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "intake_kafka_lag", Help: "Kafka consumer lag (records behind the high watermark) by group.",
	}, []string{"group"})
	// PubSubReceived counts messages received by the Pub/Sub listener.
	PubSubReceived = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intake_pubsub_messages_received_total", Help: "Pub/Sub messages received, by subscription.",
	}, []string{"subscription"})
	// DeliveryDuration is the time from receipt to the recorded outcome (end to end).
	DeliveryDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "intake_delivery_duration_seconds", Help: "Receipt to recorded outcome, by integration, origin and outcome.",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900},
	}, []string{"integration", "origin", "outcome"})
	// InFlight counts deliveries whose workflow is running (the backlog), from Temporal's visibility.
	InFlight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "intake_deliveries_in_flight", Help: "Deliveries whose workflow is running, by integration.",
	}, []string{"integration"})
	// KafkaPartitionLag is how far a group's committed offset is behind each partition's end.
	KafkaPartitionLag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "intake_kafka_partition_lag", Help: "Records between a group's committed offset and the partition's end.",
	}, []string{"group", "topic", "partition"})
	// ActivityRetries counts activity attempts after the first.
	ActivityRetries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "intake_activity_retries_total", Help: "Activity attempts after the first, by activity.",
	}, []string{"activity"})
)

func init() {
	Registry.MustRegister(Deliveries, Accepted, AcceptLatency, SignatureFailures, StartFailures, ActivityRetries,
		DeliveryDuration, InFlight, KafkaPartitionLag,
		KafkaConsumed, KafkaLag, PubSubReceived,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}

// Webhook observes the receiver's outcomes.
type Webhook struct{}

// Accepted records the latency of an accepted webhook (receipt to 202).
func (Webhook) Accepted(integration string, d time.Duration) {
	AcceptLatency.WithLabelValues(integration).Observe(d.Seconds())
}

// SignatureFailed records a refused signature.
func (Webhook) SignatureFailed(integration string) {
	SignatureFailures.WithLabelValues(integration).Inc()
}
