package activities

import (
	"context"
	"encoding/json"
	"time"

	"go.temporal.io/sdk/temporal"

	"intake"
	"intake/mappings"
)

// MapResult is what the mappings made of a delivery.
type MapResult struct {
	Mappings []intake.MappingOutcome `json:"mappings"`
	Entities []intake.EntityChange   `json:"entities"`
}

// Map runs the integration's filters and JQ mappings over the delivery (compiled once per
// config version). A JQ error fails only the mapping or item it happened in.
func (a *Activities) Map(ctx context.Context, d intake.Delivery) (*MapResult, error) {
	p, err := a.Catalog.Program(d.Integration)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), intake.ErrConfig, err)
	}
	var payload any
	if err := json.Unmarshal(d.Body, &payload); err != nil {
		return nil, temporal.NewNonRetryableApplicationError("body is not JSON: "+err.Error(), intake.ErrMapping, nil)
	}
	outcomes, changes := p.Map(ctx, payload, EnvOf(d), a.Catalog.Templates())
	return &MapResult{Mappings: outcomes, Entities: changes}, nil
}

// EnvOf builds the $headers and $meta every expression sees.
func EnvOf(d intake.Delivery) mappings.Env {
	meta := map[string]any{
		"integration": d.Integration,
		"origin":      d.Origin,
		"delivery_id": d.ID,
		"received_at": d.ReceivedAt.UTC().Format(time.RFC3339Nano),
	}
	for k, v := range d.Meta {
		meta[k] = v
	}
	return mappings.Env{Headers: d.Headers, Meta: meta}
}
