package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/gin-gonic/gin"

	"intake"
	"intake/mappings"
)

// applyRequest is a set of templates and integrations applied together (`intake apply`).
type applyRequest struct {
	Templates    []intake.Template    `json:"templates"`
	Integrations []intake.Integration `json:"integrations"`
}

// ApplyResult says what applying one document did (or, in a dry run, would do).
type ApplyResult struct {
	Kind       string `json:"kind"`
	Identifier string `json:"identifier"`
	Result     string `json:"result"`
}

type applyAnswer struct {
	DryRun  bool          `json:"dry_run"`
	Results []ApplyResult `json:"results"`
}

// applySet validates a whole set against the store, each document seeing the others (a new
// integration may use a template of the same set, a template may point to one), and writes it
// only when every document is valid: templates first, a relation's target before the template
// that points to it, then integrations. With ?dry_run=true it writes nothing and answers what
// would be done.
func (s *Server) applySet(c *gin.Context) {
	var req applyRequest
	if !decodeBody(c, &req) {
		return
	}
	dry, ok := dryRunQuery(c)
	if !ok {
		return
	}
	ctx := c.Request.Context()
	plan, err := s.planApply(ctx, &req)
	if err != nil {
		s.writeError(c, "config", err)
		return
	}
	if dry {
		c.Header(DryRunHeader, "true")
		c.PureJSON(http.StatusOK, applyAnswer{DryRun: true, Results: plan})
		return
	}
	byID := make(map[string]*intake.Template, len(req.Templates))
	for i := range req.Templates {
		byID[req.Templates[i].Identifier] = &req.Templates[i]
	}
	results := make([]ApplyResult, 0, len(plan))
	for _, p := range plan {
		var result string
		if p.Kind == "template" {
			result, err = s.applyTemplate(ctx, byID[p.Identifier], false)
		} else {
			result, err = s.applyIntegration(ctx, integrationOf(req.Integrations, p.Identifier), false)
		}
		if err != nil {
			// The set was valid a moment ago: a concurrent write or the store failing.
			s.writeError(c, p.Kind+" "+p.Identifier, err)
			return
		}
		results = append(results, ApplyResult{Kind: p.Kind, Identifier: p.Identifier, Result: result})
	}
	c.PureJSON(http.StatusOK, applyAnswer{Results: results})
}

func integrationOf(ints []intake.Integration, id string) *intake.Integration {
	for i := range ints {
		if ints[i].Identifier == id {
			return &ints[i]
		}
	}
	return nil
}

// planApply checks every document of the set and orders the writes; every problem of every
// document is reported, its field prefixed with the document ("templates/service.relations.team").
func (s *Server) planApply(ctx context.Context, req *applyRequest) ([]ApplyResult, error) {
	existing, err := s.Store.ListTemplates(ctx)
	if err != nil {
		return nil, err
	}
	stored, known := indexTemplates(existing)
	// What the set's documents see: the stored templates with the set's own on top.
	seen := make(map[string]*intake.Template, len(stored)+len(req.Templates))
	for id, t := range stored {
		seen[id] = t
	}
	problems := &mappings.ConfigError{}
	add := func(doc string, err error) error {
		var ce *mappings.ConfigError
		if !errors.As(err, &ce) {
			return err
		}
		for _, p := range ce.Problems {
			problems.Problems = append(problems.Problems, mappings.FieldError{Field: doc + "." + p.Field, Message: p.Message})
		}
		return nil
	}
	dup := func(kind, id string, n int) {
		if n > 1 {
			problems.Problems = append(problems.Problems, mappings.FieldError{Field: kind + "/" + id,
				Message: fmt.Sprintf("appears %d times in the set", n)})
		}
	}
	counts := map[string]int{}
	for i := range req.Templates {
		t := &req.Templates[i]
		counts[t.Identifier]++
		known[t.Identifier] = true
		seen[t.Identifier] = t
	}
	for id, n := range counts {
		dup("templates", id, n)
	}
	results := map[string]string{}
	for i := range req.Templates {
		t := &req.Templates[i]
		r, err := checkTemplate(t, stored, known)
		if err := add("templates/"+t.Identifier, err); err != nil {
			return nil, err
		}
		results[t.Identifier] = r
	}
	clear(counts)
	var ints []ApplyResult
	for i := range req.Integrations {
		in := &req.Integrations[i]
		counts[in.Identifier]++
		r, err := s.checkIntegration(ctx, in, seen)
		if err := add("integrations/"+in.Identifier, err); err != nil {
			return nil, err
		}
		ints = append(ints, ApplyResult{Kind: "integration", Identifier: in.Identifier, Result: r})
	}
	for id, n := range counts {
		dup("integrations", id, n)
	}
	order, stuck := templateOrder(req.Templates, stored)
	for _, id := range stuck {
		problems.Problems = append(problems.Problems, mappings.FieldError{Field: "templates/" + id + ".relations",
			Message: "its relations go round in a cycle of new templates: apply one of them without the relation first"})
	}
	if len(problems.Problems) > 0 {
		return nil, problems
	}
	plan := make([]ApplyResult, 0, len(order)+len(ints))
	for _, id := range order {
		plan = append(plan, ApplyResult{Kind: "template", Identifier: id, Result: results[id]})
	}
	return append(plan, ints...), nil
}

// templateOrder orders the writes the way `intake apply` always did: rounds over the set in its
// order, each template written once every relation target it names is stored or written. stuck
// are the templates no round could write (a cycle among new templates).
func templateOrder(tpls []intake.Template, stored map[string]*intake.Template) (order, stuck []string) {
	done, inSet := map[string]bool{}, map[string]bool{}
	for i := range tpls {
		inSet[tpls[i].Identifier] = true
	}
	pending := make([]*intake.Template, len(tpls))
	for i := range tpls {
		pending[i] = &tpls[i]
	}
	for len(pending) > 0 {
		var left []*intake.Template
		for _, t := range pending {
			ready := true
			for _, r := range t.Relations {
				// A target neither stored nor in the set is a validation problem already.
				if r.Target != t.Identifier && stored[r.Target] == nil && inSet[r.Target] && !done[r.Target] {
					ready = false
				}
			}
			if ready {
				done[t.Identifier] = true
				order = append(order, t.Identifier)
			} else {
				left = append(left, t)
			}
		}
		if len(left) == len(pending) {
			for _, t := range left {
				stuck = append(stuck, t.Identifier)
			}
			return order, stuck
		}
		pending = left
	}
	return order, nil
}

func (s *Server) getAudit(c *gin.Context) {
	e, err := s.Store.GetAudit(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.storeError(c, "audit entry "+c.Param("id"), err)
		return
	}
	c.PureJSON(http.StatusOK, e)
}
