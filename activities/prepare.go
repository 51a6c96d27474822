package activities

import (
	"context"

	"intake"
)

// PrepareResult is what Prepare made of a delivery: the mapping outcomes and the validated
// entities, or, for an integration that hydrates, only that the Hydrate step comes next.
type PrepareResult struct {
	Hydrate  bool                    `json:"hydrate,omitempty"`
	Mappings []intake.MappingOutcome `json:"mappings"`
	Entities []intake.EntityChange   `json:"entities"`
}

// Prepare is the workflow's pure steps in one local activity: Verify, then Map and Validate.
// For an integration that hydrates it stops after Verify (Hydrate: the workflow fetches the
// document) and is called again with what Hydrate found, to map and validate that.
func (a *Activities) Prepare(ctx context.Context, in MapInput) (*PrepareResult, error) {
	if in.Hydrated == nil {
		verified, err := a.Verify(ctx, in.Delivery)
		if err != nil {
			return nil, err
		}
		if verified.Hydrate {
			return &PrepareResult{Hydrate: true}, nil
		}
	}
	mapped, err := a.Map(ctx, in)
	if err != nil {
		return nil, err
	}
	res := &PrepareResult{Mappings: mapped.Mappings, Entities: mapped.Entities}
	if len(res.Entities) > 0 {
		if res.Entities, err = a.Validate(ctx, res.Entities); err != nil {
			return nil, err
		}
	}
	return res, nil
}
