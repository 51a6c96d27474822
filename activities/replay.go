package activities

import (
	"context"
	"errors"

	"go.temporal.io/sdk/temporal"

	"intake"
	"intake/store"
)

// ReplayPage is one page of stored deliveries to replay, as references: a child workflow loads
// its own delivery (claim check), so no activity result carries ten bodies.
type ReplayPage struct {
	Deliveries []intake.Delivery `json:"deliveries"`
	Next       string            `json:"next,omitempty"`
}

// ListReplayable loads a page of stored deliveries matching the filter (newest first) as replay
// inputs without their bodies: origin REPLAY, linked to the original, Ref set for LoadDelivery.
func (a *Activities) ListReplayable(ctx context.Context, f intake.DeliveryFilter) (*ReplayPage, error) {
	recs, next, err := a.Store.ListDeliveries(ctx, f)
	if err != nil {
		return nil, err
	}
	page := &ReplayPage{Next: next}
	for i := range recs {
		r := &recs[i]
		page.Deliveries = append(page.Deliveries, intake.Delivery{
			ID: r.ID, Integration: r.Integration, Key: r.Key, Origin: intake.OriginReplay,
			ReceivedAt: r.ReceivedAt, Verified: true, ReplayOf: r.ID, Ref: r.ID,
		})
	}
	return page, nil
}

// LoadDelivery is the claim check of a replay: the stored delivery, body included, as the
// replay's input.
func (a *Activities) LoadDelivery(ctx context.Context, id string) (*intake.Delivery, error) {
	r, err := a.Store.GetDelivery(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, temporal.NewNonRetryableApplicationError("delivery "+id+" is no longer stored (retention)", intake.ErrConfig, nil)
	}
	if err != nil {
		return nil, err
	}
	d := ReplayOf(r)
	return &d, nil
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
