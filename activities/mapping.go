package activities

import (
	"context"
	"encoding/base64"
	"encoding/json"

	"go.temporal.io/sdk/temporal"

	"intake"
	"intake/mappings"
)

// MapResult is what the mappings made of a delivery.
type MapResult struct {
	Mappings []intake.MappingOutcome `json:"mappings"`
	Entities []intake.EntityChange   `json:"entities"`
}

// MapInput is a delivery and, when its integration hydrates, what the Hydrate step found.
type MapInput struct {
	Delivery intake.Delivery `json:"delivery"`
	Hydrated *HydrateResult  `json:"hydrated,omitempty"`
}

// Map runs the integration's filters and JQ mappings over the delivery (compiled once per
// config version), or over the fetched document of a hydrated one. A JQ error fails only the
// mapping or item it happened in.
func (a *Activities) Map(ctx context.Context, in MapInput) (*MapResult, error) {
	p, err := a.Catalog.Program(in.Delivery.Integration)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), intake.ErrConfig, err)
	}
	return a.MapWith(ctx, p, in)
}

// MapWith maps with a given program (dry runs of unsaved integrations use it too).
func (a *Activities) MapWith(ctx context.Context, p *mappings.Program, in MapInput) (*MapResult, error) {
	payload, err := payloadOf(in.Delivery)
	if err != nil {
		return nil, err
	}
	env := mappings.EnvOf(in.Delivery)
	env.MaxEntities = a.MaxEntities
	env.MaxBytes = MappedBudget(in.Delivery)
	if h := in.Hydrated; h != nil && h.Operation != "" && p.Hydration != nil {
		var doc any
		if len(h.Document) > 0 {
			if err := json.Unmarshal(h.Document, &doc); err != nil {
				return nil, temporal.NewNonRetryableApplicationError("hydrated document is not JSON: "+err.Error(), intake.ErrHydration, nil)
			}
		}
		outcomes, changes := p.MapHydrated(ctx, h.HydrationPlan, doc, payload, env, a.Catalog.Templates())
		return &MapResult{Mappings: outcomes, Entities: changes}, nil
	}
	outcomes, changes := p.Map(ctx, payload, env, a.Catalog.Templates())
	return &MapResult{Mappings: outcomes, Entities: changes}, nil
}

// MappedBudget is how many bytes of JSON a delivery's entities may take: the Commit and Audit steps' input
// carries them beside the delivery itself (its body base64-encoded), and Temporal refuses a
// payload over mappings.MaxPayloadBytes (the workflow would retry its task forever).
func MappedBudget(d intake.Delivery) int {
	const limit = mappings.MaxPayloadBytes
	n := base64.StdEncoding.EncodedLen(len(d.Body)) + mappings.JSONSize(d.Headers, limit) + mappings.JSONSize(d.Meta, limit) + 1024
	return max(limit-n-64<<10, 64<<10)
}
