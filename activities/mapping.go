package activities

import (
	"context"
	"encoding/json"
	"fmt"

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
	if h := in.Hydrated; h != nil && h.Operation != "" && p.Hydration != nil {
		var doc any
		if len(h.Document) > 0 {
			if err := json.Unmarshal(h.Document, &doc); err != nil {
				return nil, temporal.NewNonRetryableApplicationError("hydrated document is not JSON: "+err.Error(), intake.ErrHydration, nil)
			}
		}
		outcomes, changes := p.MapHydrated(ctx, h.HydrationPlan, doc, payload, env, a.Catalog.Templates())
		return bounded(&MapResult{Mappings: outcomes, Entities: changes})
	}
	outcomes, changes := p.Map(ctx, payload, env, a.Catalog.Templates())
	return bounded(&MapResult{Mappings: outcomes, Entities: changes})
}

// MaxMappedBytes bounds what a delivery's mappings produce: the changes travel through the
// workflow history, whose payloads Temporal limits to 2 MB.
const MaxMappedBytes = 1 << 20

func bounded(r *MapResult) (*MapResult, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError("mapped entities cannot be encoded: "+err.Error(), intake.ErrMapping, nil)
	}
	if len(b) > MaxMappedBytes {
		return nil, temporal.NewNonRetryableApplicationError(
			fmt.Sprintf("the mapped entities take %d bytes, over the %d-byte limit of one delivery; nothing was written", len(b), MaxMappedBytes),
			intake.ErrMapping, nil)
	}
	return r, nil
}
