package activities

import (
	"context"
	"strings"

	"go.temporal.io/sdk/temporal"

	"intake"
	"intake/signature"
)

// Verify is the workflow's first step: it re-checks HMAC-family signatures over the exact bytes
// about to be mapped; for credential schemes and replays it records the receiver's verdict.
func (a *Activities) Verify(ctx context.Context, d intake.Delivery) (*VerifyResult, error) {
	p, err := a.Catalog.Program(d.Integration)
	if err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), intake.ErrConfig, err)
	}
	res := &VerifyResult{Hydrate: p.Hydration != nil}
	if d.Origin != intake.OriginWebhook {
		return res, nil // streams carry no signatures; replays trust the original receipt
	}
	sec := p.Integration.Security
	if d.ReplayOf != "" || (d.Verified && credentialRedacted(sec, d.Headers)) {
		return res, nil
	}
	if _, err := signature.Verify(sec, d.Headers, d.Body, d.ReceivedAt); err != nil {
		return nil, temporal.NewNonRetryableApplicationError(err.Error(), intake.ErrSignatureInvalid, nil)
	}
	return res, nil
}

// VerifyResult tells the workflow what comes next: whether the integration hydrates (read from
// the configuration here, because workflow code must not read it).
type VerifyResult struct {
	Hydrate bool `json:"hydrate,omitempty"`
}

// credentialRedacted reports that the delivery's credential was masked by the receiver, so its
// verdict is what the workflow records.
func credentialRedacted(sec *intake.Security, headers map[string]string) bool {
	if sec == nil {
		return false
	}
	if signature.Scheme(sec) == signature.SchemeBasic {
		return true
	}
	return headers[strings.ToLower(sec.SignatureHeaderName)] == intake.Masked
}
