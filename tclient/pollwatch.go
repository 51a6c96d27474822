package tclient

import (
	"strings"
	"sync/atomic"

	"go.temporal.io/sdk/client"
)

// PollWatch tells whether this process's workers poll: it is the client's metrics handler and
// notes when a task-queue poll starts and when one fails (the SDK counts both).
type PollWatch struct {
	seq             atomic.Int64
	started, failed atomic.Int64 // sequence numbers of the last poll start and failure
}

// Polling reports whether a poll started after the last failed one.
func (w *PollWatch) Polling() bool {
	s := w.started.Load()
	return s > 0 && s > w.failed.Load()
}

// Handler is the SDK metrics handler that feeds the watch.
func (w *PollWatch) Handler() client.MetricsHandler { return pollHandler{w: w} }

type pollHandler struct {
	w    *PollWatch
	poll bool // the metrics of a Poll* call
}

func (h pollHandler) WithTags(tags map[string]string) client.MetricsHandler {
	if op, ok := tags["operation"]; ok {
		h.poll = strings.HasPrefix(op, "Poll")
	}
	return h
}

func (h pollHandler) Counter(name string) client.MetricsCounter {
	if !h.poll {
		return client.MetricsNopHandler.Counter(name)
	}
	switch name {
	case "temporal_long_request":
		return counterFunc(func() { h.w.started.Store(h.w.seq.Add(1)) })
	case "temporal_long_request_failure":
		return counterFunc(func() { h.w.failed.Store(h.w.seq.Add(1)) })
	}
	return client.MetricsNopHandler.Counter(name)
}

func (h pollHandler) Gauge(name string) client.MetricsGauge {
	return client.MetricsNopHandler.Gauge(name)
}
func (h pollHandler) Timer(name string) client.MetricsTimer {
	return client.MetricsNopHandler.Timer(name)
}

type counterFunc func()

func (f counterFunc) Inc(int64) { f() }
