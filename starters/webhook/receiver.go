// Package webhook is the HTTP starter: POST /webhooks/{integration} checks the request
// synchronously (integration, rate limit, size, signature, JSON), starts the delivery's
// workflow and answers 202 only once Temporal owns it.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/oklog/ulid/v2"
	"go.temporal.io/sdk/temporal"
	"golang.org/x/time/rate"

	"intake"
	"intake/mappings"
	"intake/signature"
	"intake/starters"
)

// DefaultMaxBody is the body limit, well under Temporal's 2 MB payload limit.
const DefaultMaxBody = starters.DefaultMaxBody

// Recorder keeps refused signatures and reads entities for sync answers (the store).
type Recorder interface {
	InsertAudit(ctx context.Context, entries []intake.AuditEntry) error
	GetEntity(ctx context.Context, template, identifier string) (*intake.Entity, error)
}

// Observer is told about outcomes for metrics; nil is allowed.
type Observer interface {
	Accepted(integration string, d time.Duration)
	SignatureFailed(integration string)
}

// Receiver serves webhook deliveries.
type Receiver struct {
	Catalog *mappings.Catalog
	Accept  *starters.Acceptor
	Store   Recorder
	Log     *slog.Logger
	MaxBody int64
	Observe Observer

	mu       sync.Mutex
	limiters map[string]*limiter
}

type limiter struct {
	cfg intake.RateLimit
	l   *rate.Limiter
}

// Register mounts the receiver.
func (r *Receiver) Register(g gin.IRoutes) {
	g.POST("/webhooks/:integration", r.receive)
	// Path segments after the integration reach JQ as $meta.path (seed 004's issue/{key}/close).
	g.POST("/webhooks/:integration/*path", r.receive)
}

func (r *Receiver) receive(c *gin.Context) {
	start := time.Now()
	id := c.Param("integration")
	p, err := r.Catalog.Program(id)
	if errors.Is(err, mappings.ErrUnknownIntegration) {
		Abort(c, http.StatusNotFound, "integration_not_found", "no integration "+id, nil)
		return
	}
	if err != nil {
		// A stored integration that does not compile (or decrypt): the operator must fix it; the
		// sender retries meanwhile, so nothing is lost. The reason is logged, not shown.
		r.Log.Error("integration cannot take deliveries", "integration", id, "err", err)
		c.Header("Retry-After", "30")
		Abort(c, http.StatusServiceUnavailable, "integration_unavailable", "integration "+id+" cannot take deliveries now; retry later", nil)
		return
	}
	in := &p.Integration
	if !in.IsEnabled() {
		Abort(c, http.StatusForbidden, "integration_disabled", "integration "+id+" is disabled", nil)
		return
	}
	if in.SourceKind() != intake.SourceWebhook {
		Abort(c, http.StatusNotFound, "integration_not_found", "integration "+id+" does not receive webhooks", nil)
		return
	}
	if !r.allow(in) {
		c.Header("Retry-After", "1")
		Abort(c, http.StatusTooManyRequests, "rate_limited", "integration "+id+" is over its rate limit", nil)
		return
	}
	max := r.MaxBody
	if max <= 0 {
		max = DefaultMaxBody
	}
	body, err := ReadBody(c, max)
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		Abort(c, http.StatusRequestEntityTooLarge, "body_too_large", "body is over the limit", gin.H{"limit_bytes": max})
		return
	}
	if err != nil {
		Abort(c, http.StatusBadRequest, "bad_request", "reading body: "+err.Error(), nil)
		return
	}
	received := time.Now().UTC()
	headers := Headers(c.Request.Header)
	if in.Security == nil && !in.Unsigned() {
		// Stored before security was required: refuse rather than accept anything.
		r.refuse(c, in.Identifier, received, &signature.Error{Reason: "signature required: the integration has no security and does not allow unsigned deliveries"})
		return
	}
	credential, err := signature.Verify(in.Security, headers, body, received)
	if err != nil {
		r.refuse(c, in.Identifier, received, err)
		return
	}
	d := intake.Delivery{
		Integration: in.Identifier,
		Origin:      intake.OriginWebhook,
		Body:        body,
		Headers:     signature.Redact(in.Security, in.RedactHeaders, headers, credential),
		Meta:        map[string]any{},
		ReceivedAt:  received,
		Verified:    true,
	}
	if rest := strings.Trim(c.Param("path"), "/"); rest != "" {
		d.Meta["path"] = rest
	}
	var payload any = map[string]any{}
	if len(body) > 0 || !in.AllowEmptyBody {
		reason := ""
		if !utf8.Valid(body) {
			// RFC 8259: JSON exchanged between systems must be UTF-8; decoding would silently
			// replace the bad bytes.
			reason = "body is not valid UTF-8"
		} else if err := json.Unmarshal(body, &payload); err != nil {
			reason = "body is not JSON: " + err.Error()
		}
		if reason != "" {
			// Authenticated but unusable: the sender learns why, the operator sees it too.
			d.Key = strings.ToLower(ulid.Make().String())
			rctx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
			defer cancel()
			if err := r.Accept.Reject(rctx, &d, reason); err != nil {
				r.Log.Warn("recording a rejected delivery failed", "integration", in.Identifier, "err", err)
			}
			Abort(c, http.StatusBadRequest, "invalid_json", reason, gin.H{"delivery_id": d.ID})
			return
		}
	}
	d.Key = r.requestKey(c.Request.Context(), p, payload, d)
	acc, err := r.Accept.Accept(c.Request.Context(), &d)
	if err != nil {
		r.Log.Error("workflow start failed", "integration", in.Identifier, "err", err)
		c.Header("Retry-After", "5")
		Abort(c, http.StatusServiceUnavailable, "temporal_unavailable", "the delivery could not be accepted now; retry later", nil)
		return
	}
	if acc.Rejected {
		Abort(c, http.StatusBadRequest, "invalid_delivery", acc.Reason, gin.H{"delivery_id": acc.DeliveryID})
		return
	}
	started := acc.Started
	if r.Observe != nil {
		r.Observe.Accepted(in.Identifier, time.Since(start))
	}
	r.Log.Info("delivery accepted", "integration", in.Identifier, "delivery_id", started.DeliveryID,
		"workflow_id", started.WorkflowID, "run_id", started.RunID, "duplicate", started.Duplicate)
	if p.SyncTimeout > 0 {
		r.answerSync(c, started, p.SyncTimeout)
		return
	}
	c.PureJSON(http.StatusAccepted, started)
}

// SyncAnswer is the 200 of an integration with "response": {"mode": "sync"}: the delivery's
// outcome, what happened to each entity, and the entities as stored now.
type SyncAnswer struct {
	starters.Started
	Outcome  string                `json:"outcome"`
	Results  []intake.EntityChange `json:"results"`
	Entities []intake.Entity       `json:"entities"`
}

// answerSync waits for the delivery's workflow: 200 with the entities, 422 with the error when
// processing failed, or the usual 202 when the wait runs out (the work still finishes).
func (r *Receiver) answerSync(c *gin.Context, started starters.Started, timeout time.Duration) {
	res, done, err := r.Accept.Starter.Wait(c.Request.Context(), started.WorkflowID, started.RunID, timeout)
	if !done {
		c.PureJSON(http.StatusAccepted, started)
		return
	}
	if err != nil {
		details := gin.H{"delivery_id": started.DeliveryID, "workflow_id": started.WorkflowID, "run_id": started.RunID}
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			details["type"] = appErr.Type()
			if res != nil {
				details["results"] = res.Entities
			}
			Abort(c, http.StatusUnprocessableEntity, "delivery_failed", appErr.Message(), details)
			return
		}
		r.Log.Warn("waiting for a sync delivery failed", "workflow_id", started.WorkflowID, "err", err)
		c.PureJSON(http.StatusAccepted, started)
		return
	}
	ans := SyncAnswer{Started: started, Outcome: res.Outcome, Results: res.Entities, Entities: []intake.Entity{}}
	if ans.Results == nil {
		ans.Results = []intake.EntityChange{}
	}
	for _, ch := range res.Entities {
		if ch.Failed() || ch.Operation == intake.OperationDelete {
			continue
		}
		e, err := r.Store.GetEntity(c.Request.Context(), ch.Template, ch.Identifier)
		if err == nil {
			ans.Entities = append(ans.Entities, *e)
		}
	}
	c.PureJSON(http.StatusOK, ans)
}

// requestKey is the request_identifier's value when it yields one, else a fresh ULID.
func (r *Receiver) requestKey(ctx context.Context, p *mappings.Program, payload any, d intake.Delivery) string {
	if p.RequestIdentifier != nil {
		vals, err := p.RequestIdentifier.Run(ctx, payload, mappings.EnvOf(d))
		if err != nil {
			r.Log.Warn("request_identifier failed; using a fresh key", "integration", d.Integration, "err", err)
		}
		for _, v := range vals {
			if s, ok := v.(string); ok && s != "" {
				return s
			}
		}
	}
	return strings.ToLower(ulid.Make().String())
}

// refuse answers 401 and records the refusal where operators look, never with the secret.
func (r *Receiver) refuse(c *gin.Context, integration string, at time.Time, err error) {
	if r.Observe != nil {
		r.Observe.SignatureFailed(integration)
	}
	r.Log.Warn("webhook signature refused", "integration", integration, "reason", err.Error(),
		"remote", c.ClientIP())
	entry := intake.AuditEntry{
		ID:           strings.ToLower(ulid.Make().String()),
		Action:       intake.ActionAuthenticate,
		ResourceType: "delivery",
		Trigger:      intake.AuditTrigger{At: at, By: intake.AuditBy{IntegrationID: integration}, Origin: intake.OriginWebhook},
		Message:      err.Error(),
		Status:       intake.StatusFailure,
	}
	actx, cancel := context.WithTimeout(c.Request.Context(), 2*time.Second)
	defer cancel()
	if aerr := r.Store.InsertAudit(actx, []intake.AuditEntry{entry}); aerr != nil {
		r.Log.Error("audit of refused signature failed", "integration", integration, "err", aerr)
	}
	Abort(c, http.StatusUnauthorized, "signature_invalid", err.Error(), nil)
}

func (r *Receiver) allow(in *intake.Integration) bool {
	if in.RateLimit == nil {
		return true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.limiters == nil {
		r.limiters = map[string]*limiter{}
	}
	l := r.limiters[in.Identifier]
	if l == nil || l.cfg != *in.RateLimit {
		l = &limiter{cfg: *in.RateLimit, l: rate.NewLimiter(rate.Limit(in.RateLimit.PerSecond), in.RateLimit.Burst)}
		r.limiters[in.Identifier] = l
	}
	return l.l.Allow()
}

// Headers lower-cases names and joins repeated values with ", ".
func Headers(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[strings.ToLower(k)] = strings.Join(v, ", ")
	}
	return out
}
