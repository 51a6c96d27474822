package activities

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"go.temporal.io/sdk/temporal"

	"intake"
	"intake/mappings"
)

// HydrateResult is what the Hydrate step decided and fetched; it is the step's result in the
// workflow history, so operators see the fetched document there.
type HydrateResult struct {
	mappings.HydrationPlan
	FetchedURL string          `json:"fetched_url,omitempty"`
	Document   json.RawMessage `json:"document,omitempty"`
}

// Hydrate turns a thin notification into the full record: it picks the route, reads the id, and
// GETs only the configured URL with the id escaped into its path or query, with the
// integration's credentials as headers. A delete event is decided here too, without a fetch.
// 5xx, 429 and timeouts are retried by Temporal with backoff; 4xx, refused targets and bad
// answers fail the delivery.
func (a *Activities) Hydrate(ctx context.Context, d intake.Delivery) (*HydrateResult, error) {
	countRetry(ctx)
	return a.hydrate(ctx, d)
}

func (a *Activities) hydrate(ctx context.Context, d intake.Delivery) (*HydrateResult, error) {
	p, err := a.Catalog.Program(d.Integration)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), intake.ErrConfig, err)
	}
	return a.HydrateWith(ctx, p, d)
}

// HydrateWith hydrates with a given program (dry runs of unsaved integrations use it too).
func (a *Activities) HydrateWith(ctx context.Context, p *mappings.Program, d intake.Delivery) (*HydrateResult, error) {
	if p.Hydration == nil {
		return &HydrateResult{}, nil // the configuration changed since Verify: map the body as it is
	}
	notification, err := payloadOf(d)
	if err != nil {
		return nil, err
	}
	plan, err := p.Hydration.Plan(ctx, notification, mappings.EnvOf(d))
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError("hydration: "+err.Error(), intake.ErrHydration, nil)
	}
	res := &HydrateResult{HydrationPlan: plan}
	if plan.Operation != mappings.HydrateFetch {
		return res, nil
	}
	if res.FetchedURL, err = ExpandURL(plan.URL, plan.ID); err != nil {
		return nil, temporal.NewNonRetryableApplicationError("hydration: "+err.Error(), intake.ErrHydration, nil)
	}
	headers := make(map[string]string, len(p.Hydration.Spec.Headers))
	for name, v := range p.Hydration.Spec.Headers {
		if ref, ok := strings.CutPrefix(v, intake.SecretRef); ok {
			v = p.Integration.Credentials[ref]
		}
		headers[name] = v
	}
	body, err := a.fetcher(p.Hydration.Timeout, p.Hydration.MaxBytes).Fetch(ctx, res.FetchedURL, headers)
	var fe *FetchError
	switch {
	case errors.As(err, &fe) && !fe.Retryable:
		return nil, temporal.NewNonRetryableApplicationError("hydration: "+fe.Message, intake.ErrHydration, nil)
	case err != nil:
		// Retryable: Temporal tries again with backoff.
		return nil, temporal.NewApplicationError("hydration: "+err.Error(), intake.ErrHydration)
	}
	res.Document = body
	return res, nil
}

// payloadOf parses a delivery's body; an empty body (allowed by allow_empty_body) is {}.
func payloadOf(d intake.Delivery) (any, error) {
	if len(d.Body) == 0 {
		return map[string]any{}, nil
	}
	var payload any
	if err := json.Unmarshal(d.Body, &payload); err != nil {
		return nil, temporal.NewNonRetryableApplicationError("body is not JSON: "+err.Error(), intake.ErrMapping, nil)
	}
	return payload, nil
}

// fetchers keeps one Fetcher (and its connection pool) per timeout and size cap.
type fetchers struct {
	mu sync.Mutex
	m  map[[2]int64]*Fetcher
}

func (a *Activities) fetcher(timeout time.Duration, maxBytes int64) *Fetcher {
	a.fetchers.mu.Lock()
	defer a.fetchers.mu.Unlock()
	key := [2]int64{int64(timeout), maxBytes}
	if f := a.fetchers.m[key]; f != nil {
		return f
	}
	if a.fetchers.m == nil {
		a.fetchers.m = map[[2]int64]*Fetcher{}
	}
	f := NewFetcher(FetchPolicy{Allow: a.HydrationAllow, Timeout: timeout, MaxBytes: maxBytes})
	a.fetchers.m[key] = f
	return f
}
