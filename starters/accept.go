package starters

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.temporal.io/api/serviceerror"

	"intake"
	"intake/metrics"
	"intake/store"
)

// Source is one transport of the accept path (webhook, Kafka, Pub/Sub): it turns what it receives
// into Deliveries, hands each to Acceptor.Accept, and acknowledges (answers, commits, acks) only
// once Accept has settled it: started, or recorded as a failed delivery. A transient error means
// "not settled": the transport retries with backoff (or answers 503, or nacks) and never skips.
// A fourth transport is one folder that implements Run.
type Source interface {
	Run(ctx context.Context)
}

// Recorder is what the accept path writes besides the workflow (the store).
type Recorder interface {
	InsertAudit(ctx context.Context, entries []intake.AuditEntry) error
	RecordAcceptedMany(ctx context.Context, as []store.Accepted) error
	Queued(id string)
	RecordRejected(ctx context.Context, d intake.Delivery, f intake.Failure) error
}

// Acceptor is the one accept path of every source.
type Acceptor struct {
	Starter *Starter
	Store   Recorder
	Log     *slog.Logger
	// MaxBody bounds a delivery's body (always under Temporal's 2 MB payload limit).
	MaxBody int64
	// RecordAtOnce records the delivery as accepted when its workflow starts (the webhook
	// receiver: an operator sees it within RecordEvery); streams leave it to the workflow's end,
	// one store write fewer per record. Records are written in bulk (StartRecording), off the
	// accept path: the sender's 202 never waits for the store.
	RecordAtOnce bool

	accepted chan store.Accepted
}

// RecordEvery is how long an accepted delivery's record waits before it is written. A workflow
// that ends meanwhile records the whole delivery itself, and then its queued record is not sent
// at all (Store.RecordAcceptedMany): one store write instead of an insert and an update, which
// under load is most deliveries.
const RecordEvery = time.Second

// StartRecording writes the records of accepted deliveries (RecordAtOnce) in bulk until ctx
// ends, then writes what is left and closes the channel it returns. Call it once, before the
// first Accept. A record that cannot be written (the store down) is left to the workflow,
// which records the delivery when it ends; so is one past a full queue.
func (a *Acceptor) StartRecording(ctx context.Context) <-chan struct{} {
	a.accepted = make(chan store.Accepted, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.record(ctx)
	}()
	return done
}

// queuedRecord is an accepted delivery's record and when it was queued.
type queuedRecord struct {
	store.Accepted
	at time.Time
}

func (a *Acceptor) record(ctx context.Context) {
	tick := time.NewTicker(RecordEvery / 10)
	defer tick.Stop()
	var queue []queuedRecord // in arrival order
	// flush writes the records queued RecordEvery ago or more (all of them at the end).
	flush := func(all bool) {
		n := 0
		for n < len(queue) && (all || time.Since(queue[n].at) >= RecordEvery) {
			n++
		}
		if n == 0 {
			return
		}
		batch := make([]store.Accepted, n)
		for i := range batch {
			batch[i] = queue[i].Accepted
		}
		queue = append(queue[:0], queue[n:]...)
		// Bounded: with the store down, records wait no longer than this.
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := a.Store.RecordAcceptedMany(wctx, batch); err != nil {
			a.Log.Warn("recording accepted deliveries failed; their workflows will", "deliveries", len(batch), "err", err)
		}
		cancel()
	}
	for {
		select {
		case r := <-a.accepted:
			queue = append(queue, queuedRecord{Accepted: r, at: time.Now()})
		case <-tick.C:
			flush(false)
		case <-ctx.Done():
			for {
				select {
				case r := <-a.accepted:
					queue = append(queue, queuedRecord{Accepted: r, at: time.Now()})
				default:
					flush(true)
					return
				}
			}
		}
	}
}

// ErrInvalidDelivery types deliveries that can never start (not JSON, too big, a tombstone).
const ErrInvalidDelivery = "InvalidDelivery"

// Accepted says how a delivery was settled.
type Accepted struct {
	Started
	// Rejected: the delivery can never start; it is recorded as failed with Reason.
	Rejected bool   `json:"-"`
	Reason   string `json:"-"`
}

// Accept settles a delivery: it lower-cases the header names, checks what can never start (the
// body must be JSON of at most MaxBody bytes), and starts the workflow. A delivery that can never
// start is recorded as failed with its reason, audited and counted, and reported as Rejected so
// the transport moves on. The error is transient (Temporal or the store unreachable): retry.
func (a *Acceptor) Accept(ctx context.Context, d *intake.Delivery) (Accepted, error) {
	d.Headers = lowerHeaders(d.Headers)
	Settle(d)
	if reason := a.check(d); reason != "" {
		return a.reject(ctx, d, reason)
	}
	started, err := a.Starter.Start(ctx, d)
	var invalid *serviceerror.InvalidArgument
	switch {
	case errors.As(err, &invalid):
		// Temporal refuses the start itself (input over its blob limit, a missing search
		// attribute): retrying cannot help.
		return a.reject(ctx, d, "Temporal refused the workflow start: "+invalid.Message)
	case err != nil:
		metrics.StartFailures.WithLabelValues(d.Integration).Inc()
		return Accepted{}, err
	}
	if a.RecordAtOnce && !started.Duplicate && a.accepted != nil {
		// The workflow records the delivery too when it ends; this makes it visible before.
		// Queued first: once sent, the record may be written at any time. One the full queue
		// turns away is not written by the receiver either, so it stays "queued" for the store.
		a.Store.Queued(d.ID)
		select {
		case a.accepted <- store.Accepted{Delivery: *d, WorkflowID: started.WorkflowID, RunID: started.RunID}:
		default:
			a.Log.Warn("accepted-record queue full; the workflow will record the delivery", "delivery_id", d.ID)
		}
	}
	metrics.Accepted.WithLabelValues(d.Integration, d.Origin, strconv.FormatBool(started.Duplicate)).Inc()
	a.Log.Debug("delivery accepted", "integration", d.Integration, "origin", d.Origin, "delivery_id", started.DeliveryID,
		"workflow_id", started.WorkflowID, "run_id", started.RunID, "duplicate", started.Duplicate)
	return Accepted{Started: started}, nil
}

// AcceptBatch settles a batch of records of one integration (for Kafka: of one partition, in
// offset order) as Accept settles one: records that can never start are recorded failed one
// by one, the others start as batch workflows of at most MaxBatchBytes of bodies each, named by
// their first and last records. The error is transient: retry the whole batch (what was
// settled stays settled, a batch started before is a duplicate).
func (a *Acceptor) AcceptBatch(ctx context.Context, integration string, records []intake.Delivery) error {
	good := make([]intake.Delivery, 0, len(records))
	for i := range records {
		d := &records[i]
		d.Headers = lowerHeaders(d.Headers)
		Settle(d)
		if reason := a.check(d); reason != "" {
			if _, err := a.reject(ctx, d, reason); err != nil {
				return err
			}
			continue
		}
		good = append(good, *d)
	}
	for start := 0; start < len(good); {
		end, size := start, 0
		for end < len(good) && (end == start || size+len(good[end].Body)+512 <= MaxBatchBytes) {
			size += len(good[end].Body) + 512
			end++
		}
		if err := a.startBatch(ctx, integration, good[start:end]); err != nil {
			return err
		}
		start = end
	}
	return nil
}

// MaxBatchBytes bounds the bodies of one batch workflow's input, well under Temporal's 2 MB
// payload limit (a record of up to MaxBody goes alone).
const MaxBatchBytes = 1 << 20

func (a *Acceptor) startBatch(ctx context.Context, integration string, records []intake.Delivery) error {
	origin := records[0].Origin
	started, err := a.Starter.StartBatch(ctx, integration, origin, batchKey(records[0], records[len(records)-1]), records)
	var invalid *serviceerror.InvalidArgument
	switch {
	case errors.As(err, &invalid):
		// Temporal refuses the batch itself: each record is recorded failed, none is lost.
		for i := range records {
			if _, err := a.reject(ctx, &records[i], "Temporal refused the batch workflow start: "+invalid.Message); err != nil {
				return err
			}
		}
		return nil
	case err != nil:
		metrics.StartFailures.WithLabelValues(integration).Inc()
		return err
	}
	metrics.Accepted.WithLabelValues(integration, origin, strconv.FormatBool(started.Duplicate)).Add(float64(len(records)))
	a.Log.Debug("batch accepted", "integration", integration, "workflow_id", started.WorkflowID, "run_id", started.RunID,
		"records", len(records), "duplicate", started.Duplicate)
	return nil
}

// batchKey names a batch by its first and last records: {topic}.{partition}.{first}-{last}
// offsets for Kafka, {subscription}.{first}-{last} message IDs for Pub/Sub.
func batchKey(first, last intake.Delivery) string {
	if topic, ok := first.Meta["topic"]; ok {
		return fmt.Sprintf("%v.%v.%v-%v", topic, first.Meta["partition"], first.Meta["offset"], last.Meta["offset"])
	}
	return fmt.Sprintf("%v.%v-%v", first.Meta["subscription"], first.Meta["message_id"], last.Meta["message_id"])
}

// Reject records a delivery that will not be processed (the webhook receiver's 400s): a failed
// delivery with its reason, an audit entry, the failure metric. Its error is transient.
func (a *Acceptor) Reject(ctx context.Context, d *intake.Delivery, reason string) error {
	d.Headers = lowerHeaders(d.Headers)
	Settle(d)
	_, err := a.reject(ctx, d, reason)
	return err
}

func (a *Acceptor) reject(ctx context.Context, d *intake.Delivery, reason string) (Accepted, error) {
	f := intake.Failure{Type: ErrInvalidDelivery, Message: reason}
	if err := a.Store.RecordRejected(ctx, *d, f); err != nil {
		return Accepted{}, fmt.Errorf("record rejected delivery %s: %w", d.ID, err)
	}
	entry := intake.AuditEntry{
		ID: rejectAuditID(d.ID), Action: intake.ActionCreate, ResourceType: "delivery",
		Trigger: intake.AuditTrigger{At: d.ReceivedAt, By: intake.AuditBy{IntegrationID: d.Integration}, Origin: d.Origin},
		Message: reason, Status: intake.StatusFailure, DeliveryID: d.ID,
	}
	if err := a.Store.InsertAudit(ctx, []intake.AuditEntry{entry}); err != nil {
		return Accepted{}, fmt.Errorf("audit rejected delivery %s: %w", d.ID, err)
	}
	metrics.Deliveries.WithLabelValues(d.Integration, d.Origin, intake.DeliveryFailed).Inc()
	a.Log.Warn("delivery rejected", "integration", d.Integration, "origin", d.Origin, "delivery_id", d.ID, "reason", reason)
	return Accepted{Started: Started{DeliveryID: d.ID}, Rejected: true, Reason: reason}, nil
}

// check returns why a delivery can never be processed, or "".
func (a *Acceptor) check(d *intake.Delivery) string {
	if d.Origin == intake.OriginWebhook {
		// The receiver already bounded the body, checked its UTF-8 and parsed it (it needs the
		// payload for request_identifier) and answered 4xx otherwise: not twice on the hot path.
		return ""
	}
	max := a.MaxBody
	if max <= 0 {
		max = DefaultMaxBody
	}
	switch {
	case int64(len(d.Body)) > max:
		return fmt.Sprintf("body of %d bytes is over the %d-byte limit", len(d.Body), max)
	case len(d.Body) == 0:
		return "empty record (a tombstone or an empty message): nothing to map"
	case !utf8.Valid(d.Body):
		return "body is not valid UTF-8 (binary data cannot be mapped)"
	case !json.Valid(d.Body):
		return "body is not JSON"
	}
	return ""
}

// DefaultMaxBody is the body limit, well under Temporal's 2 MB payload limit.
const DefaultMaxBody = 1 << 20

// Settle makes the delivery's key URL-safe and sets its ID.
func Settle(d *intake.Delivery) {
	d.Key = DeliveryKey(d.Key)
	d.ID = d.Integration + "." + d.Key
}

func lowerHeaders(h map[string]string) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[strings.ToLower(k)] = v
	}
	return out
}

func rejectAuditID(deliveryID string) string {
	sum := sha256.Sum256([]byte("rejected\x00" + deliveryID))
	return hex.EncodeToString(sum[:16])
}

// Backoff waits for the next retry of a transient failure: 200 ms doubling to 10 s.
func Backoff(ctx context.Context, attempt int) bool {
	d := 200 * time.Millisecond << min(attempt, 6)
	select {
	case <-ctx.Done():
		return false
	case <-time.After(min(d, 10*time.Second)):
		return true
	}
}
