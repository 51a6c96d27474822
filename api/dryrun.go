package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.temporal.io/sdk/temporal"

	"intake"
	"intake/activities"
	"intake/mappings"
	"intake/starters/webhook"
)

// dryRunRequest is a payload to try; Integration is only read by the unsaved-integration form.
type dryRunRequest struct {
	Integration *intake.Integration `json:"integration,omitempty"`
	Body        json.RawMessage     `json:"body"`
	Headers     map[string]string   `json:"headers"`
	// Path is what follows /webhooks/{integration}/ ($meta.path).
	Path string `json:"path,omitempty"`
}

// dryRunAnswer is what the mappings would produce; nothing is written.
type dryRunAnswer struct {
	Valid    bool                      `json:"valid"`
	Hydrated *activities.HydrateResult `json:"hydrated,omitempty"`
	Error    *intake.Failure           `json:"error,omitempty"`
	Mappings []intake.MappingOutcome   `json:"mappings"`
	Entities []intake.EntityChange     `json:"entities"`
}

// testIntegration runs a stored integration's mappings over a payload (dry run).
func (s *Server) testIntegration(c *gin.Context) {
	var req dryRunRequest
	if !decodeBody(c, &req) {
		return
	}
	p, err := s.Catalog.Program(c.Param("id"))
	if err != nil {
		webhook.Abort(c, http.StatusNotFound, "integration_not_found", err.Error(), nil)
		return
	}
	s.dryRun(c, p, req)
}

// testUnsavedIntegration compiles an integration that is not saved and runs it (dry run).
func (s *Server) testUnsavedIntegration(c *gin.Context) {
	var req dryRunRequest
	if !decodeBody(c, &req) {
		return
	}
	if req.Integration == nil {
		webhook.Abort(c, http.StatusBadRequest, "invalid_request", `"integration" is required`, nil)
		return
	}
	if req.Integration.Identifier == "" {
		req.Integration.Identifier = "dry_run"
	}
	p, err := mappings.Compile(*req.Integration, s.Catalog.Templates())
	if err != nil {
		s.writeError(c, "integration", err)
		return
	}
	s.dryRun(c, p, req)
}

func (s *Server) dryRun(c *gin.Context, p *mappings.Program, req dryRunRequest) {
	var payload any
	if err := json.Unmarshal(req.Body, &payload); err != nil {
		webhook.Abort(c, http.StatusBadRequest, "invalid_json", `"body" must be JSON: `+err.Error(), nil)
		return
	}
	headers := map[string]string{}
	for k, v := range req.Headers {
		headers[strings.ToLower(k)] = v
	}
	d := intake.Delivery{ID: p.Integration.Identifier + ".dry-run", Integration: p.Integration.Identifier,
		Origin: intake.OriginWebhook, Body: req.Body, Headers: headers, Meta: map[string]any{}, ReceivedAt: time.Now().UTC()}
	if req.Path != "" {
		d.Meta["path"] = strings.Trim(req.Path, "/")
	}
	ctx := c.Request.Context()
	// The workflow's own steps decide what would happen: Hydrate (the fetch is real, it writes
	// nothing), Map, Validate, then Upsert's plan (relations, merge with the stored entity,
	// required, stale), without the write.
	steps := &activities.Activities{Store: s.Store, Catalog: s.Catalog, HydrationAllow: s.HydrationAllow}
	ans := dryRunAnswer{Mappings: []intake.MappingOutcome{}, Entities: []intake.EntityChange{}}
	in := activities.MapInput{Delivery: d}
	if p.Hydration != nil {
		h, err := steps.HydrateWith(ctx, p, d)
		if err != nil {
			ans.Error = failureOf(err)
			c.PureJSON(http.StatusOK, ans)
			return
		}
		ans.Hydrated, in.Hydrated = h, h
	}
	mapped, err := steps.MapWith(ctx, p, in)
	if err != nil {
		ans.Error = failureOf(err)
		c.PureJSON(http.StatusOK, ans)
		return
	}
	changes, _ := steps.Validate(ctx, mapped.Entities)
	if _, err := steps.Plan(ctx, activities.Ref{DeliveryID: d.ID, Integration: d.Integration, Origin: d.Origin}, changes); err != nil {
		s.storeError(c, "entities", err)
		return
	}
	ans.Valid = true
	if mapped.Mappings != nil {
		ans.Mappings = mapped.Mappings
	}
	for i := range changes {
		ans.Valid = ans.Valid && !changes[i].Failed()
	}
	if changes != nil {
		ans.Entities = changes
	}
	c.PureJSON(http.StatusOK, ans)
}

// failureOf shows a step's error the way a delivery record does.
func failureOf(err error) *intake.Failure {
	var appErr *temporal.ApplicationError
	if errors.As(err, &appErr) {
		return &intake.Failure{Type: appErr.Type(), Message: appErr.Message()}
	}
	return &intake.Failure{Type: "Error", Message: err.Error()}
}
