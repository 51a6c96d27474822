// Package upstream is a stand-in for the APIs that hydration fetches from (a data catalog, an
// identity service, a shop): an in-memory JSON document store over HTTP. PUT a path to set what
// GET answers there; GET of an unknown path answers 404. It records every request, so a test
// can prove what was (and was never) fetched. The bundle tests start it; `go run
// ./examples/upstream/cmd` runs it for trying the bundles against `make run`.
package upstream

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"time"
)

// Server is the stand-in upstream API.
type Server struct {
	mu       sync.Mutex
	docs     map[string][]byte
	status   map[string]int
	delay    map[string]time.Duration
	requests []Request
}

// Request is one request the server saw.
type Request struct {
	Method        string
	Path          string
	Authorization string
}

// New returns an empty stand-in.
func New() *Server {
	return &Server{docs: map[string][]byte{}, status: map[string]int{}, delay: map[string]time.Duration{}}
}

// Set makes GET path answer doc (nil removes it: 404).
func (s *Server) Set(path string, doc []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if doc == nil || string(doc) == "null" {
		delete(s.docs, path)
		return
	}
	s.docs[path] = doc
}

// Fail makes GET path answer status until it is cleared with 0.
func (s *Server) Fail(path string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status[path] = status
}

// Delay makes GET path wait d before answering.
func (s *Server) Delay(path string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay[path] = d
}

// Requests returns what the server saw, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// ServeHTTP answers GET from the store and takes PUT/DELETE as writes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	s.mu.Lock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: path, Authorization: r.Header.Get("Authorization")})
	doc, found := s.docs[path]
	status, delay := s.status[path], s.delay[path]
	s.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		body, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
		if err != nil || !json.Valid(body) {
			http.Error(w, `{"error":"body must be JSON"}`, http.StatusBadRequest)
			return
		}
		s.Set(path, body)
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodDelete:
		s.Set(path, nil)
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodGet:
	default:
		http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	switch {
	case status != 0:
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":"failing on purpose"}`))
	case !found:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":"not found"}`))
	default:
		_, _ = w.Write(doc)
	}
}
