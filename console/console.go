// Package console serves the operator's console under /console/: server-rendered page shells
// (layout, navigation, forms, table headers) and the embedded stylesheet and script. The pages
// carry no data and no secret: the script asks the admin API for the data with the token the
// operator entered once per browser session (kept in sessionStorage, sent as a bearer token) and
// fills the pages with text only (textContent, never HTML).
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"sort"
)

//go:embed templates/*.html static/*
var files embed.FS

// Prefix is where the console is served.
const Prefix = "/console/"

// Options are what the pages need to know about the deployment (nothing secret).
type Options struct {
	// TemporalUI is the Temporal Web UI base URL for workflow links; "" leaves links out.
	TemporalUI string
	// Namespace is the Temporal namespace of the workflows.
	Namespace string
	Log       *slog.Logger
}

// page is one server-rendered shell.
type page struct {
	file  string // templates/{file}.html
	title string
	nav   string // the navigation entry it belongs to
}

var pages = map[string]page{
	"overview":     {"overview", "Overview", "overview"},
	"login":        {"login", "Sign in", ""},
	"deliveries":   {"deliveries", "Deliveries", "deliveries"},
	"delivery":     {"delivery", "Delivery", "deliveries"},
	"replay":       {"replay", "Bulk replay", "deliveries"},
	"audit":        {"audit", "Audit log", "audit"},
	"integrations": {"integrations", "Integrations", "integrations"},
	"integration":  {"document", "Integration", "integrations"},
	"templates":    {"templates", "Templates", "templates"},
	"template":     {"document", "Template", "templates"},
	"playground":   {"playground", "Mapping playground", "playground"},
	"not_found":    {"not_found", "Not found", ""},
}

// Console is the console's http.Handler.
type Console struct {
	opts    Options
	tpl     map[string]*template.Template
	version string // a hash of the assets: their URLs change when they do, so they cache forever
	static  http.Handler
	mux     *http.ServeMux
}

// New parses the embedded templates once.
func New(opts Options) (*Console, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	c := &Console{opts: opts, tpl: map[string]*template.Template{}}
	sum, err := assetsHash()
	if err != nil {
		return nil, err
	}
	c.version = sum
	for name, p := range pages {
		t, err := template.New("layout.html").ParseFS(files, "templates/layout.html", "templates/"+p.file+".html")
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", name, err)
		}
		c.tpl[name] = t
	}
	static, err := fs.Sub(files, "static")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	c.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(static))
	c.routes()
	return c, nil
}

func (c *Console) routes() {
	m := http.NewServeMux()
	show := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { c.render(w, r, name, http.StatusOK) }
	}
	m.HandleFunc("GET /console/{$}", show("overview"))
	m.HandleFunc("GET /console/login", show("login"))
	m.HandleFunc("GET /console/deliveries", show("deliveries"))
	m.HandleFunc("GET /console/deliveries/{id}", show("delivery"))
	m.HandleFunc("GET /console/replays/{id}", show("replay"))
	m.HandleFunc("GET /console/audit", show("audit"))
	m.HandleFunc("GET /console/integrations", show("integrations"))
	m.HandleFunc("GET /console/integrations/{id}", show("integration"))
	m.HandleFunc("GET /console/templates", show("templates"))
	m.HandleFunc("GET /console/templates/{id}", show("template"))
	m.HandleFunc("GET /console/playground", show("playground"))
	m.HandleFunc("GET /console/static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		c.static.ServeHTTP(w, r)
	})
	m.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.render(w, r, "not_found", http.StatusNotFound)
	})
	c.mux = m
}

// ServeHTTP serves the pages and assets under Prefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.mux.ServeHTTP(w, r) }

// shell is what a page template sees: where it is and how to link, never data.
type shell struct {
	Page, Title, Nav      string
	ID                    string // the identifier in the URL, as the operator typed it
	TemporalUI, Namespace string
	Version               string
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, name string, code int) {
	p := pages[name]
	var buf bytes.Buffer
	err := c.tpl[name].Execute(&buf, shell{Page: name, Title: p.title, Nav: p.nav, ID: r.PathValue("id"),
		TemporalUI: c.opts.TemporalUI, Namespace: c.opts.Namespace, Version: c.version})
	if err != nil {
		c.opts.Log.Error("console page failed", "page", name, "err", err)
		http.Error(w, "console page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// The shells hold nothing to cache, and the script is the only one that may run.
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// assetsHash names the current assets (the cache-busting version in their URLs).
func assetsHash() (string, error) {
	h := sha256.New()
	var names []string
	err := fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, p)
		}
		return err
	})
	if err != nil {
		return "", fmt.Errorf("console assets: %w", err)
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return "", fmt.Errorf("console asset %s: %w", n, err)
		}
		h.Write([]byte(path.Clean(n)))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], nil
}

// AssetBytes is the size of everything the console embeds (templates, stylesheet, script).
func AssetBytes() int {
	n := 0
	_ = fs.WalkDir(files, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, err := files.ReadFile(p); err == nil {
				n += len(b)
			}
		}
		return nil
	})
	return n
}
