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
	"intake/store"
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
	outcomes, changes := p.Map(c.Request.Context(), payload, activities.EnvOf(d), s.Catalog.Templates())
	ans := dryRunAnswer{Valid: true, Mappings: outcomes, Entities: changes}
	s.checkRelations(c, changes)
	for i := range changes {
		ch := &changes[i]
		if !ch.Failed() && ch.Operation != intake.OperationDelete {
			if ct := s.Catalog.Template(ch.Template); ct != nil {
				if err := ct.Validate(ch.Properties, ch.UpdateMode == intake.UpdateReplace); err != nil {
					ch.Fail(intake.ErrValidation, err.Error())
				}
			}
		}
		ans.Valid = ans.Valid && !ch.Failed()
	}
	if ans.Entities == nil {
		ans.Entities = []intake.EntityChange{}
	}
	c.PureJSON(http.StatusOK, ans)
}

// checkRelations reads (never writes) whether relation targets exist.
func (s *Server) checkRelations(c *gin.Context, changes []intake.EntityChange) {
	templates := s.Catalog.Templates()
	var ids []string
	for _, ch := range changes {
		for name, v := range ch.Relations {
			if tpl := templates[ch.Template]; tpl != nil {
				for _, id := range activities.RelationIDs(v) {
					ids = append(ids, store.EntityKey(tpl.Relations[name].Target, id))
				}
			}
		}
	}
	if len(ids) == 0 {
		return
	}
	found, err := s.Store.EntitiesByID(c.Request.Context(), ids)
	if err != nil {
		return // the answer still shows the mapping; relation checks need the store
	}
	for i := range changes {
		ch := &changes[i]
		tpl := templates[ch.Template]
		if ch.Failed() || ch.CreateMissingRelated || tpl == nil {
			continue
		}
		for name, v := range ch.Relations {
			for _, id := range activities.RelationIDs(v) {
				if found[store.EntityKey(tpl.Relations[name].Target, id)] == nil {
					ch.Fail(intake.ErrRelationMissing, activities.RelationMissing(id, name, tpl.Relations[name].Target))
				}
			}
		}
	}
}
