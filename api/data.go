package api

import (
	"net/http"
	"strings"

	"github.com/gin-gonic/gin"

	"intake"
)

func (s *Server) listEntities(c *gin.Context) {
	limit, cursor, ok := page(c)
	if !ok {
		return
	}
	items, next, err := s.Store.ListEntities(c.Request.Context(), c.Query("template"), limit, cursor)
	if err != nil {
		s.storeError(c, "entities", err)
		return
	}
	listAnswer(c, items, next)
}

func (s *Server) getEntity(c *gin.Context) {
	tpl, id := c.Param("template"), strings.TrimPrefix(c.Param("identifier"), "/")
	e, err := s.Store.GetEntity(c.Request.Context(), tpl, id)
	if err != nil {
		s.storeError(c, "entity "+tpl+"/"+id, err)
		return
	}
	c.PureJSON(http.StatusOK, e)
}

func (s *Server) listAudit(c *gin.Context) {
	limit, cursor, ok := page(c)
	if !ok {
		return
	}
	from, ok := parseTime(c, "from")
	if !ok {
		return
	}
	to, ok := parseTime(c, "to")
	if !ok {
		return
	}
	f := intake.AuditFilter{
		EntityTemplate: c.Query("entity_template"), Integration: c.Query("integration"),
		Origin: c.Query("origin"), Action: c.Query("action"), Status: c.Query("status"),
		DeliveryID: c.Query("delivery_id"), From: from, To: to, Limit: limit, Cursor: cursor,
	}
	items, next, err := s.Store.ListAudit(c.Request.Context(), f)
	if err != nil {
		s.storeError(c, "audit logs", err)
		return
	}
	listAnswer(c, items, next)
}
