package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"

	"github.com/gin-gonic/gin"

	"intake"
	"intake/activities"
	"intake/mappings"
	"intake/starters/webhook"
	"intake/store"
)

func (s *Server) listTemplates(c *gin.Context) {
	tpls, err := s.Store.ListTemplates(c.Request.Context())
	if err != nil {
		s.storeError(c, "templates", err)
		return
	}
	listAnswer(c, tpls, "")
}

func (s *Server) getTemplate(c *gin.Context) {
	t, err := s.Store.GetTemplate(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.storeError(c, "template "+c.Param("id"), err)
		return
	}
	c.PureJSON(http.StatusOK, t)
}

func (s *Server) putTemplate(c *gin.Context) {
	var t intake.Template
	if !decodeBody(c, &t) || !sameID(c, &t.Identifier) {
		return
	}
	dry, ok := dryRunQuery(c)
	if !ok {
		return
	}
	result, err := s.applyTemplate(c.Request.Context(), &t, dry)
	if err != nil {
		s.writeError(c, "template", err)
		return
	}
	answerWrite(c, result, dry, t)
}

// answerWrite answers a PUT: the document as it is (or would be) stored, what was done in
// X-Intake-Result, and X-Intake-Dry-Run when nothing was written. A dry run answers the status
// the write would have (201 for a create), like Kubernetes' server-side dry run.
func answerWrite(c *gin.Context, result string, dry bool, doc any) {
	c.Header(ResultHeader, result)
	if dry {
		c.Header(DryRunHeader, "true")
	}
	c.PureJSON(resultStatus(result), doc)
}

// dryRunQuery reads ?dry_run=true|false.
func dryRunQuery(c *gin.Context) (bool, bool) {
	switch v := c.Query("dry_run"); v {
	case "", "false":
		return false, true
	case "true":
		return true, true
	}
	webhook.Abort(c, http.StatusBadRequest, "invalid_dry_run", "dry_run must be true or false", nil)
	return false, false
}

// ResultHeader says what a PUT did (or, in a dry run, would do): created, updated or unchanged.
const ResultHeader = "X-Intake-Result"

// DryRunHeader is "true" on the answer of a dry run: nothing was written.
const DryRunHeader = "X-Intake-Dry-Run"

// Results of an apply.
const (
	Created   = "created"
	Updated   = "updated"
	Unchanged = "unchanged"
)

// ApplyTemplate validates a template against the store and writes it unless it is unchanged.
func (s *Server) ApplyTemplate(ctx context.Context, t *intake.Template) (string, error) {
	return s.applyTemplate(ctx, t, false)
}

func (s *Server) applyTemplate(ctx context.Context, t *intake.Template, dry bool) (string, error) {
	existing, err := s.Store.ListTemplates(ctx)
	if err != nil {
		return "", err
	}
	stored, known := indexTemplates(existing)
	result, err := checkTemplate(t, stored, known)
	if err != nil || result == Unchanged || dry {
		return result, err
	}
	return s.put(ctx, func() (bool, error) { return s.Store.PutTemplate(ctx, t) })
}

// indexTemplates maps the stored templates by identifier.
func indexTemplates(tpls []intake.Template) (map[string]*intake.Template, map[string]bool) {
	byID := make(map[string]*intake.Template, len(tpls))
	known := make(map[string]bool, len(tpls))
	for i := range tpls {
		byID[tpls[i].Identifier] = &tpls[i]
		known[tpls[i].Identifier] = true
	}
	return byID, known
}

// checkTemplate validates t against the templates that exist (known) and says what writing it
// would do; it writes nothing.
func checkTemplate(t *intake.Template, stored map[string]*intake.Template, known map[string]bool) (string, error) {
	if t.Schema.Properties == nil {
		t.Schema.Properties = map[string]json.RawMessage{}
	}
	prev := stored[t.Identifier]
	if prev != nil && sameJSON(prev, t) {
		return Unchanged, nil
	}
	if _, err := mappings.CompileTemplate(t, known); err != nil {
		return "", err
	}
	if prev == nil {
		return Created, nil
	}
	return Updated, nil
}

func (s *Server) put(ctx context.Context, write func() (bool, error)) (string, error) {
	created, err := write()
	if err != nil {
		return "", err
	}
	s.refresh(ctx)
	if created {
		return Created, nil
	}
	return Updated, nil
}

// sameJSON compares two documents as the API shows them (map keys sorted).
func sameJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	if errA != nil || errB != nil {
		return false
	}
	var va, vb any
	_ = json.Unmarshal(ja, &va)
	_ = json.Unmarshal(jb, &vb)
	ca, _ := json.Marshal(va)
	cb, _ := json.Marshal(vb)
	return string(ca) == string(cb)
}

// writeError answers a failed write: 400 for invalid configuration, else a store error.
func (s *Server) writeError(c *gin.Context, what string, err error) {
	var ce *mappings.ConfigError
	if errors.As(err, &ce) {
		webhook.Abort(c, http.StatusBadRequest, "invalid_config", ce.Error(), ce.Problems)
		return
	}
	s.storeError(c, what, err)
}

func (s *Server) deleteTemplate(c *gin.Context) {
	id := c.Param("id")
	ctx := c.Request.Context()
	tpls, ints, broken, err := s.Store.LoadConfig(ctx)
	if err != nil {
		s.storeError(c, "config", err)
		return
	}
	// An integration whose secrets do not decrypt still uses templates through its mappings.
	for _, err := range broken {
		var u *store.UndecryptableError
		if errors.As(err, &u) {
			ints = append(ints, *u.Integration)
		}
	}
	sort.Slice(ints, func(i, j int) bool { return ints[i].Identifier < ints[j].Identifier })
	var users []string
	for _, in := range ints {
		for _, m := range in.Mappings {
			if m.Template == id {
				users = append(users, "integrations/"+in.Identifier)
				break
			}
		}
	}
	for _, t := range tpls {
		for name, r := range t.Relations {
			if r.Target == id && t.Identifier != id {
				users = append(users, "templates/"+t.Identifier+".relations."+name)
			}
		}
	}
	if len(users) > 0 {
		webhook.Abort(c, http.StatusConflict, "template_in_use", "template "+id+" is still used", users)
		return
	}
	if err := s.Store.DeleteTemplate(ctx, id); err != nil {
		s.storeError(c, "template "+id, err)
		return
	}
	s.refresh(c.Request.Context())
	c.Status(http.StatusNoContent)
}

// listedIntegration is a list item: an integration whose secrets do not decrypt is listed
// (secrets masked) with status "undecryptable" and the reason.
type listedIntegration struct {
	intake.Integration
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

func (s *Server) listIntegrations(c *gin.Context) {
	ints, broken, err := s.Store.ListIntegrations(c.Request.Context())
	if err != nil {
		s.storeError(c, "integrations", err)
		return
	}
	out := make([]listedIntegration, 0, len(ints)+len(broken))
	for i := range ints {
		maskSecrets(&ints[i])
		out = append(out, listedIntegration{Integration: ints[i]})
	}
	for id, err := range broken {
		item := listedIntegration{Integration: intake.Integration{Identifier: id}, Status: "undecryptable", Error: err.Error()}
		var u *store.UndecryptableError
		if errors.As(err, &u) {
			item.Integration = *u.Integration
		}
		out = append(out, item)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Identifier < out[j].Identifier })
	listAnswer(c, out, "")
}

func (s *Server) getIntegration(c *gin.Context) {
	in, err := s.Store.GetIntegration(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.storeError(c, "integration "+c.Param("id"), err)
		return
	}
	maskSecrets(in)
	c.PureJSON(http.StatusOK, in)
}

func (s *Server) putIntegration(c *gin.Context) {
	var in intake.Integration
	if !decodeBody(c, &in) || !sameID(c, &in.Identifier) {
		return
	}
	dry, ok := dryRunQuery(c)
	if !ok {
		return
	}
	result, err := s.applyIntegration(c.Request.Context(), &in, dry)
	if err != nil {
		s.writeError(c, "integration", err)
		return
	}
	maskSecrets(&in)
	answerWrite(c, result, dry, in)
}

// ApplyIntegration validates an integration against the stored templates and writes it
// unless it is unchanged.
func (s *Server) ApplyIntegration(ctx context.Context, in *intake.Integration) (string, error) {
	return s.applyIntegration(ctx, in, false)
}

func (s *Server) applyIntegration(ctx context.Context, in *intake.Integration, dry bool) (string, error) {
	tpls, err := s.Store.ListTemplates(ctx)
	if err != nil {
		return "", err
	}
	byID, _ := indexTemplates(tpls)
	result, err := s.checkIntegration(ctx, in, byID)
	if err != nil || result == Unchanged || dry {
		return result, err
	}
	return s.put(ctx, func() (bool, error) { return s.Store.PutIntegration(ctx, in) })
}

// checkIntegration validates an integration against the templates given (the stored ones, and
// in a batch those applied with it) and says what writing it would do; it writes nothing.
func (s *Server) checkIntegration(ctx context.Context, in *intake.Integration, byID map[string]*intake.Template) (string, error) {
	// A masked secret sent back unchanged (GET, edit, PUT) keeps the stored one. An integration
	// whose secrets do not decrypt is repaired by sending them again.
	prev, err := s.Store.GetIntegration(ctx, in.Identifier)
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrUndecryptable) {
		return "", err
	}
	exists := err == nil || errors.Is(err, store.ErrUndecryptable)
	if err := keepMaskedSecrets(in, prev); err != nil {
		return "", err
	}
	if prev != nil && sameJSON(prev, in) {
		return Unchanged, nil
	}
	p, err := mappings.Compile(*in, byID)
	if err != nil {
		return "", err
	}
	if in.SourceKind() == intake.SourceWebhook && in.Security == nil && !in.Unsigned() {
		// Unsigned by default would accept anything from anyone: it must be asked for.
		return "", &mappings.ConfigError{Problems: []mappings.FieldError{{Field: "security",
			Message: `a webhook integration needs security, or "allow_unsigned": true to accept unsigned deliveries`}}}
	}
	if err := s.checkHydrationTargets(p); err != nil {
		return "", err
	}
	if exists {
		return Updated, nil
	}
	return Created, nil
}

func (s *Server) deleteIntegration(c *gin.Context) {
	if err := s.Store.DeleteIntegration(c.Request.Context(), c.Param("id")); err != nil {
		s.storeError(c, "integration "+c.Param("id"), err)
		return
	}
	s.refresh(c.Request.Context())
	c.Status(http.StatusNoContent)
}

func sameID(c *gin.Context, id *string) bool {
	if *id == "" {
		*id = c.Param("id")
	}
	if *id != c.Param("id") {
		webhook.Abort(c, http.StatusBadRequest, "identifier_mismatch", "identifier in the body differs from the URL",
			[]mappings.FieldError{{Field: "identifier", Message: "must be " + c.Param("id")}})
		return false
	}
	return true
}

func resultStatus(result string) int {
	if result == Created {
		return http.StatusCreated
	}
	return http.StatusOK
}

func maskSecrets(in *intake.Integration) {
	if in.Credentials != nil {
		masked := make(map[string]string, len(in.Credentials))
		for name := range in.Credentials {
			masked[name] = intake.Masked
		}
		in.Credentials = masked
	}
	if in.Security == nil {
		return
	}
	sec := *in.Security
	if sec.SignatureValue != "" {
		sec.SignatureValue = intake.Masked
	}
	masked := make([]string, len(sec.Secrets))
	for i := range masked {
		masked[i] = intake.Masked
	}
	sec.Secrets = masked
	in.Security = &sec
}

// keepMaskedSecrets puts the stored secret where the API's mask was sent back at the same place
// (prev may be nil); a mask that stands for no stored value is refused rather than stored as
// the secret.
func keepMaskedSecrets(in, prev *intake.Integration) error {
	errs := &mappings.ConfigError{}
	refuse := func(field string) {
		errs.Problems = append(errs.Problems, mappings.FieldError{Field: field,
			Message: fmt.Sprintf("%q is the API's mask, not a secret; send the secret", intake.Masked)})
	}
	var prevCreds map[string]string
	var prevSec *intake.Security
	if prev != nil {
		prevCreds, prevSec = prev.Credentials, prev.Security
	}
	if in.Security != nil {
		if in.Security.SignatureValue == intake.Masked {
			if prevSec != nil && prevSec.SignatureValue != "" {
				in.Security.SignatureValue = prevSec.SignatureValue
			} else {
				refuse("security.signature_value")
			}
		}
		for i, v := range in.Security.Secrets {
			if v != intake.Masked {
				continue
			}
			if prevSec != nil && i < len(prevSec.Secrets) && prevSec.Secrets[i] != "" {
				in.Security.Secrets[i] = prevSec.Secrets[i]
			} else {
				refuse(fmt.Sprintf("security.secrets[%d]", i))
			}
		}
	}
	names := make([]string, 0, len(in.Credentials))
	for name := range in.Credentials {
		names = append(names, name)
	}
	sort.Strings(names) // problems in a stable order
	for _, name := range names {
		if in.Credentials[name] != intake.Masked {
			continue
		}
		if old := prevCreds[name]; old != "" {
			in.Credentials[name] = old
		} else {
			refuse("credentials." + name)
		}
	}
	if len(errs.Problems) > 0 {
		return errs
	}
	return nil
}

// checkHydrationTargets refuses, at write time, hydration URLs whose host is a literal private,
// loopback or link-local address not in INTAKE_HYDRATION_ALLOW (host names are judged at fetch
// time, after DNS resolution).
func (s *Server) checkHydrationTargets(p *mappings.Program) error {
	if p.Hydration == nil {
		return nil
	}
	errs := &mappings.ConfigError{}
	policy := activities.FetchPolicy{Allow: s.HydrationAllow}
	for _, r := range p.Hydration.Routes {
		field := "hydration.url"
		if r.Index >= 0 {
			field = fmt.Sprintf("hydration.routes[%d].url", r.Index)
		}
		if err := policy.CheckURL(r.URL); err != nil {
			errs.Problems = append(errs.Problems, mappings.FieldError{Field: field, Message: err.Error()})
		}
	}
	if len(errs.Problems) > 0 {
		return errs
	}
	return nil
}
