package activities

import (
	"context"

	"intake"
)

// ReplayPage is one page of stored deliveries to replay, ready to run.
type ReplayPage struct {
	Deliveries []intake.Delivery `json:"deliveries"`
	Next       string            `json:"next,omitempty"`
}

// ListReplayable loads a page of stored deliveries matching the filter (newest first) as replay
// inputs: origin REPLAY, linked to the original, trusting the original receipt's verdict.
func (a *Activities) ListReplayable(ctx context.Context, f intake.DeliveryFilter) (*ReplayPage, error) {
	recs, next, err := a.Store.ListDeliveries(ctx, f)
	if err != nil {
		return nil, err
	}
	page := &ReplayPage{Next: next}
	for i := range recs {
		page.Deliveries = append(page.Deliveries, ReplayOf(&recs[i]))
	}
	return page, nil
}

// ReplayOf builds the input of a replay of a stored delivery.
func ReplayOf(r *intake.DeliveryRecord) intake.Delivery {
	body, err := r.RawBody()
	if err != nil {
		body = r.Body // the record is damaged; its JSON form is the best there is
	}
	return intake.Delivery{
		ID: r.ID, Integration: r.Integration, Key: r.Key, Origin: intake.OriginReplay,
		Body: body, Headers: r.Headers, Meta: r.Meta, ReceivedAt: r.ReceivedAt,
		Verified: true, ReplayOf: r.ID,
	}
}
