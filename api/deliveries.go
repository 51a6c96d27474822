package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"go.temporal.io/api/serviceerror"

	"intake"
	"intake/activities"
	"intake/starters"
	"intake/starters/webhook"
	"intake/workflows"
)

func (s *Server) listDeliveries(c *gin.Context) {
	f, ok := deliveryFilter(c)
	if !ok {
		return
	}
	items, next, err := s.Store.ListDeliveries(c.Request.Context(), f)
	if err != nil {
		s.storeError(c, "deliveries", err)
		return
	}
	for i := range items {
		s.link(&items[i])
	}
	listAnswer(c, items, next)
}

func deliveryFilter(c *gin.Context) (intake.DeliveryFilter, bool) {
	limit, cursor, ok := page(c)
	if !ok {
		return intake.DeliveryFilter{}, false
	}
	from, ok := parseTime(c, "from")
	if !ok {
		return intake.DeliveryFilter{}, false
	}
	to, ok := parseTime(c, "to")
	if !ok {
		return intake.DeliveryFilter{}, false
	}
	return intake.DeliveryFilter{Integration: c.Query("integration"), Status: c.Query("status"),
		Origin: c.Query("origin"), From: from, To: to, Limit: limit, Cursor: cursor}, true
}

func (s *Server) getDelivery(c *gin.Context) {
	d, err := s.Store.GetDelivery(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.storeError(c, "delivery "+c.Param("id"), err)
		return
	}
	s.link(d)
	c.PureJSON(http.StatusOK, d)
}

// countDeliveries answers how many deliveries each integration has in each status, received in
// [from, to) (default: the last hour).
func (s *Server) countDeliveries(c *gin.Context) {
	from, ok := parseTime(c, "from")
	if !ok {
		return
	}
	to, ok := parseTime(c, "to")
	if !ok {
		return
	}
	if to.IsZero() {
		to = time.Now().UTC()
	}
	if from.IsZero() {
		from = to.Add(-time.Hour)
	}
	counts, err := s.Store.CountDeliveries(c.Request.Context(), from, to)
	if err != nil {
		s.storeError(c, "deliveries", err)
		return
	}
	c.PureJSON(http.StatusOK, gin.H{"from": from.UTC(), "to": to.UTC(), "counts": counts})
}

// link adds the Temporal UI address of the delivery's latest run.
func (s *Server) link(d *intake.DeliveryRecord) {
	if s.TemporalUI == "" || d.WorkflowID == "" {
		return
	}
	d.WorkflowURL = s.TemporalUI + "/namespaces/" + url.PathEscape(s.Namespace) + "/workflows/" +
		url.PathEscape(d.WorkflowID) + "/" + url.PathEscape(d.RunID) + "/history"
}

func (s *Server) replayDelivery(c *gin.Context) {
	d, err := s.Store.GetDelivery(c.Request.Context(), c.Param("id"))
	if err != nil {
		s.storeError(c, "delivery "+c.Param("id"), err)
		return
	}
	started, err := s.Starter.Replay(c.Request.Context(), activities.ReplayOf(d))
	if err != nil {
		s.unavailable(c, err)
		return
	}
	c.PureJSON(http.StatusAccepted, gin.H{"delivery_id": d.ID, "workflow_id": started.WorkflowID, "run_id": started.RunID, "replay_of": d.ID})
}

// bulkReplayRequest selects deliveries to replay; status defaults to failed.
type bulkReplayRequest struct {
	Integration string    `json:"integration"`
	Status      string    `json:"status"`
	Origin      string    `json:"origin"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
}

func (s *Server) bulkReplay(c *gin.Context) {
	var req bulkReplayRequest
	if c.Request.ContentLength != 0 && !decodeBody(c, &req) {
		return
	}
	if req.Status == "" {
		req.Status = intake.DeliveryFailed
	}
	if req.To.IsZero() {
		req.To = time.Now().UTC() // deliveries that fail while the replay runs are not picked up
	}
	started, err := s.Starter.StartBulkReplay(c.Request.Context(), intake.DeliveryFilter{
		Integration: req.Integration, Status: req.Status, Origin: req.Origin, From: req.From, To: req.To})
	if err != nil {
		s.unavailable(c, err)
		return
	}
	c.PureJSON(http.StatusAccepted, gin.H{"replay_id": started.WorkflowID, "workflow_id": started.WorkflowID, "run_id": started.RunID})
}

// isReplayID keeps the replay endpoints to bulk replays (never an ingest workflow).
func (s *Server) isReplayID(c *gin.Context, id string) bool {
	// Replay IDs are bulk-replay.{ulid}: anything not URL-safe is none of ours and, sent on to
	// Temporal, was refused there as an invalid argument and answered as a 503.
	if !strings.HasPrefix(id, starters.BulkReplayPrefix) || starters.DeliveryKey(id) != id {
		webhook.Abort(c, http.StatusNotFound, "not_found", "replay "+id+" not found (replay IDs start with "+starters.BulkReplayPrefix+")", nil)
		return false
	}
	return true
}

func (s *Server) getReplay(c *gin.Context) {
	id := c.Param("id")
	if !s.isReplayID(c, id) {
		return
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), 5*time.Second)
	defer cancel()
	desc, err := s.Starter.Client.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		s.replayError(c, id, err)
		return
	}
	var progress workflows.ReplayProgress
	status := desc.GetWorkflowExecutionInfo().GetStatus().String()
	if v, err := s.Starter.Client.QueryWorkflow(ctx, id, "", workflows.ProgressQuery); err == nil {
		_ = v.Get(&progress)
	} else if run := s.Starter.Client.GetWorkflow(ctx, id, ""); run != nil {
		_ = run.Get(ctx, &progress) // a closed workflow answers with its result
	}
	c.PureJSON(http.StatusOK, gin.H{"replay_id": id, "status": status, "progress": progress})
}

func (s *Server) cancelReplay(c *gin.Context) {
	id := c.Param("id")
	if !s.isReplayID(c, id) {
		return
	}
	if err := s.Starter.Client.CancelWorkflow(c.Request.Context(), id, ""); err != nil {
		s.replayError(c, id, err)
		return
	}
	c.PureJSON(http.StatusAccepted, gin.H{"replay_id": id, "status": "cancel_requested"})
}

func (s *Server) replayError(c *gin.Context, id string, err error) {
	var nf *serviceerror.NotFound
	if errors.As(err, &nf) {
		webhook.Abort(c, http.StatusNotFound, "not_found", "replay "+id+" not found", nil)
		return
	}
	s.unavailable(c, err)
}

func (s *Server) unavailable(c *gin.Context, err error) {
	s.Log.Error("temporal request failed", "err", err)
	c.Header("Retry-After", "5")
	code := "temporal_unavailable"
	if !errors.Is(err, starters.ErrUnavailable) {
		code = "temporal_error"
	}
	webhook.Abort(c, http.StatusServiceUnavailable, code, "Temporal did not answer; try again later", nil)
}
