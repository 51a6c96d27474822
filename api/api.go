// Package api is intake's HTTP surface besides the webhook receiver: health, readiness and the
// admin API (templates, integrations, entities, audit logs) behind a bearer token.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"intake/console"
	"intake/mappings"
	"intake/metrics"
	"intake/starters"
	"intake/starters/webhook"
	"intake/store"
)

// Server is the admin API.
type Server struct {
	Store      *store.Store
	Catalog    *mappings.Catalog
	AdminToken string
	Log        *slog.Logger
	// Ready reports whether every part of the process is up (for /readyz).
	Ready func(ctx context.Context) error
	// Starter starts replays; TemporalUI and Namespace build workflow links.
	Starter    *starters.Starter
	TemporalUI string
	Namespace  string
	// HydrationAllow is INTAKE_HYDRATION_ALLOW: private hydration targets that are permitted.
	HydrationAllow []string
}

// Router builds the gin engine with the receiver, the admin API and the console.
func Router(s *Server, r *webhook.Receiver) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	g := gin.New()
	g.Use(gin.Recovery())
	g.NoRoute(func(c *gin.Context) {
		webhook.Abort(c, http.StatusNotFound, "not_found", "no route "+c.Request.URL.Path, nil)
	})
	g.GET("/healthz", func(c *gin.Context) { c.PureJSON(http.StatusOK, gin.H{"status": "ok"}) })
	g.GET("/readyz", s.readyz)
	g.GET("/metrics", gin.WrapH(promhttp.HandlerFor(metrics.Registry, promhttp.HandlerOpts{})))
	g.GET("/api/v1/openapi.json", serveOpenAPI)
	if r != nil {
		r.Register(g)
	}
	// The console's pages are open; they hold no data and call the admin API below with the
	// token the operator enters.
	con, err := console.New(console.Options{TemporalUI: s.TemporalUI, Namespace: s.Namespace, Log: s.Log})
	if err != nil {
		panic(err) // the templates are embedded: a parse error is a build defect
	}
	g.GET("/console/*path", gin.WrapH(con))
	admin := g.Group("/api/v1", s.auth)
	admin.GET("/templates", s.listTemplates)
	admin.GET("/templates/:id", s.getTemplate)
	admin.PUT("/templates/:id", s.putTemplate)
	admin.DELETE("/templates/:id", s.deleteTemplate)
	admin.GET("/integrations", s.listIntegrations)
	admin.GET("/integrations/:id", s.getIntegration)
	admin.PUT("/integrations/:id", s.putIntegration)
	admin.DELETE("/integrations/:id", s.deleteIntegration)
	admin.POST("/integrations/:id/test", s.testIntegration)
	admin.POST("/integrations/test", s.testUnsavedIntegration)
	admin.GET("/entities", s.listEntities)
	admin.GET("/entities/:template/*identifier", s.getEntity)
	admin.GET("/audit_logs", s.listAudit)
	admin.GET("/audit_logs/:id", s.getAudit)
	admin.POST("/apply", s.applySet)
	admin.GET("/deliveries", s.listDeliveries)
	admin.GET("/deliveries/counts", s.countDeliveries)
	admin.GET("/deliveries/:id", s.getDelivery)
	admin.POST("/deliveries/:id/replay", s.replayDelivery)
	admin.POST("/deliveries/replay", s.bulkReplay)
	admin.GET("/replays/:id", s.getReplay)
	admin.POST("/replays/:id/cancel", s.cancelReplay)
	return g
}

func (s *Server) readyz(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), 3*time.Second)
	defer cancel()
	if err := s.Ready(ctx); err != nil {
		// The reason names the part that is not ready; the underlying error (addresses, driver
		// text) goes to the log only.
		s.Log.Debug("not ready", "err", err)
		webhook.Abort(c, http.StatusServiceUnavailable, "not_ready", publicReason(err), nil)
		return
	}
	ans := gin.H{"status": "ready", "config_version": s.Catalog.Version()}
	// Ready still: every other integration works; these answer deliveries with the reason.
	if broken := s.Catalog.Broken(); len(broken) > 0 {
		ans["broken_integrations"] = broken
	}
	c.PureJSON(http.StatusOK, ans)
}

func (s *Server) auth(c *gin.Context) {
	token, ok := strings.CutPrefix(c.GetHeader("Authorization"), "Bearer ")
	if !ok || s.AdminToken == "" || subtle.ConstantTimeCompare([]byte(token), []byte(s.AdminToken)) != 1 {
		webhook.Abort(c, http.StatusUnauthorized, "unauthorized", "a valid admin bearer token is required", nil)
		return
	}
	c.Next()
}

// storeError answers a store failure: 404 for absent documents, 503 otherwise.
func (s *Server) storeError(c *gin.Context, what string, err error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		webhook.Abort(c, http.StatusNotFound, "not_found", what+" not found", nil)
	case errors.Is(err, store.ErrUndecryptable):
		webhook.Abort(c, http.StatusConflict, "integration_undecryptable", err.Error()+
			"; add the key it was written with to INTAKE_SECRET_KEYS, or PUT it again with its secrets", nil)
	case errors.Is(err, store.ErrBadCursor):
		webhook.Abort(c, http.StatusBadRequest, "invalid_cursor", "cursor is not one this API gave", nil)
	default:
		s.Log.Error("store request failed", "what", what, "err", err)
		webhook.Abort(c, http.StatusServiceUnavailable, "store_unavailable", "the store did not answer; try again later", nil)
	}
}

// decodeBody reads a JSON object (a PUT of null or of an array creates nothing).
func decodeBody(c *gin.Context, v any) bool {
	raw, err := webhook.ReadBody(c, 4<<20)
	if err != nil {
		webhook.Abort(c, http.StatusBadRequest, "invalid_json", "body could not be read (at most 4 MiB)", nil)
		return false
	}
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '{' {
		webhook.Abort(c, http.StatusBadRequest, "invalid_json", "body must be a JSON object", nil)
		return false
	}
	if !utf8.Valid(raw) {
		webhook.Abort(c, http.StatusBadRequest, "invalid_json", "body is not valid UTF-8", nil)
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		webhook.Abort(c, http.StatusBadRequest, "invalid_json", "body is not valid JSON for this resource: "+err.Error(), nil)
		return false
	}
	return true
}

// PublicError is an error whose message may be shown to anyone (readiness reasons).
type PublicError struct {
	Reason string
	Err    error
}

func (e *PublicError) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Reason + ": " + e.Err.Error()
}
func (e *PublicError) Unwrap() error { return e.Err }

func publicReason(err error) string {
	var pe *PublicError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return "not ready"
}

// refresh makes this process use a write at once (read-your-writes); others poll.
func (s *Server) refresh(ctx context.Context) {
	if err := s.Catalog.Refresh(ctx); err != nil {
		s.Log.Warn("config refresh after write failed", "err", err)
	}
}

// page reads limit (default 50, at most 1000) and cursor.
func page(c *gin.Context) (int, string, bool) {
	limit := 50
	if v := c.Query("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			webhook.Abort(c, http.StatusBadRequest, "invalid_limit", "limit must be between 1 and 1000", nil)
			return 0, "", false
		}
		limit = n
	}
	return limit, c.Query("cursor"), true
}

func listAnswer[T any](c *gin.Context, items []T, next string) {
	if next != "" {
		c.Header("X-Next-Cursor", next)
	}
	if items == nil {
		items = []T{}
	}
	c.PureJSON(http.StatusOK, items)
}

func parseTime(c *gin.Context, name string) (time.Time, bool) {
	v := c.Query(name)
	if v == "" {
		return time.Time{}, true
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		webhook.Abort(c, http.StatusBadRequest, "invalid_"+name, name+" must be an RFC 3339 time", nil)
		return time.Time{}, false
	}
	return t, true
}
