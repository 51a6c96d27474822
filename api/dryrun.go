package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

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
}

// dryRunAnswer is what the mappings would produce; nothing is written.
type dryRunAnswer struct {
	Valid    bool                    `json:"valid"`
	Mappings []intake.MappingOutcome `json:"mappings"`
	Entities []intake.EntityChange   `json:"entities"`
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
		Origin: intake.OriginWebhook, Headers: headers, ReceivedAt: time.Now().UTC()}
	ctx := c.Request.Context()
	outcomes, changes := p.Map(ctx, payload, activities.EnvOf(d), s.Catalog.Templates())
	// The workflow's own steps decide what would happen: Validate, then Upsert's plan (relations,
	// merge with the stored entity, required, stale), without the write.
	steps := &activities.Activities{Store: s.Store, Catalog: s.Catalog}
	changes, _ = steps.Validate(ctx, changes)
	if _, err := steps.Plan(ctx, activities.Ref{DeliveryID: d.ID, Integration: d.Integration, Origin: d.Origin}, changes); err != nil {
		s.storeError(c, "entities", err)
		return
	}
	ans := dryRunAnswer{Valid: true, Mappings: outcomes, Entities: changes}
	for i := range changes {
		ans.Valid = ans.Valid && !changes[i].Failed()
	}
	if ans.Entities == nil {
		ans.Entities = []intake.EntityChange{}
	}
	c.PureJSON(http.StatusOK, ans)
}
