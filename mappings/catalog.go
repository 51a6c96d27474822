package mappings

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"intake"
)

// Source is where the catalog reads configuration from (the store). LoadConfig's broken names
// the integrations it could not read (secrets that do not decrypt) and why; they are kept out
// of ints and the rest of the configuration still loads.
type Source interface {
	ConfigVersion(ctx context.Context) (int64, error)
	LoadConfig(ctx context.Context) (tpls []intake.Template, ints []intake.Integration, broken map[string]error, err error)
}

// Catalog caches the compiled configuration of one config version. Every process keeps one and
// polls the version counter, so an admin write is live everywhere within the poll interval, and
// at once in the process that served it (Refresh).
type Catalog struct {
	src Source
	log *slog.Logger

	mu        sync.RWMutex
	version   int64
	loaded    bool
	templates map[string]*CompiledTemplate
	raw       map[string]*intake.Template
	programs  map[string]*Program
	broken    map[string]error
}

// NewCatalog returns an empty catalog; call Refresh before use.
func NewCatalog(src Source, log *slog.Logger) *Catalog {
	return &Catalog{src: src, log: log}
}

// Refresh reloads the configuration if its version changed.
func (c *Catalog) Refresh(ctx context.Context) error {
	v, err := c.src.ConfigVersion(ctx)
	if err != nil {
		return fmt.Errorf("read config version: %w", err)
	}
	c.mu.RLock()
	fresh := c.loaded && v == c.version
	c.mu.RUnlock()
	if fresh {
		return nil
	}
	tpls, ints, unreadable, err := c.src.LoadConfig(ctx)
	if err != nil {
		return fmt.Errorf("load config: %w", err)
	}
	raw := make(map[string]*intake.Template, len(tpls))
	known := make(map[string]bool, len(tpls))
	for i := range tpls {
		raw[tpls[i].Identifier] = &tpls[i]
		known[tpls[i].Identifier] = true
	}
	templates := map[string]*CompiledTemplate{}
	broken := map[string]error{}
	for id, t := range raw {
		ct, err := CompileTemplate(t, known)
		if err != nil {
			c.log.Error("stored template is invalid", "template", id, "err", err)
			continue
		}
		templates[id] = ct
	}
	programs := map[string]*Program{}
	// Broken integrations are kept with a reason so deliveries get a clear error instead of
	// "unknown integration"; reasons never carry a secret.
	for id, err := range unreadable {
		broken[id] = err
		c.log.Error("stored integration cannot be read", "integration", id, "err", err)
	}
	for _, in := range ints {
		p, err := Compile(in, raw)
		if err != nil {
			broken[in.Identifier] = fmt.Errorf("is invalid: %w", err)
			c.log.Error("stored integration is invalid", "integration", in.Identifier, "err", err)
			continue
		}
		programs[in.Identifier] = p
	}
	c.mu.Lock()
	if !c.loaded || v >= c.version {
		c.version, c.loaded = v, true
		c.templates, c.raw, c.programs, c.broken = templates, raw, programs, broken
	}
	c.mu.Unlock()
	c.log.Debug("config loaded", "version", v, "templates", len(templates), "integrations", len(programs))
	return nil
}

// Watch polls for changes until ctx ends.
func (c *Catalog) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := c.Refresh(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("config refresh failed", "err", err)
			}
		}
	}
}

// Ready reports whether a configuration has been loaded.
func (c *Catalog) Ready() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.loaded
}

// Version is the loaded config version.
func (c *Catalog) Version() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version
}

// ErrUnknownIntegration is returned for an integration that is not configured.
var ErrUnknownIntegration = fmt.Errorf("unknown integration")

// Program returns an integration's compiled program.
func (c *Catalog) Program(id string) (*Program, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if p := c.programs[id]; p != nil {
		return p, nil
	}
	if err := c.broken[id]; err != nil {
		// Reads "integration x is invalid: …" or "integration x cannot decrypt its secrets: …".
		return nil, fmt.Errorf("integration %s %w", id, err)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownIntegration, id)
}

// Broken returns why each stored integration that cannot be used is broken, by identifier.
func (c *Catalog) Broken() map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]string, len(c.broken))
	for id, err := range c.broken {
		out[id] = err.Error()
	}
	return out
}

// Template returns a compiled template, or nil.
func (c *Catalog) Template(id string) *CompiledTemplate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.templates[id]
}

// Templates returns the raw templates by identifier (for mapping relations).
func (c *Catalog) Templates() map[string]*intake.Template {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.raw
}

// Programs returns every valid program (listeners use it to find their integrations).
func (c *Catalog) Programs() []*Program {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]*Program, 0, len(c.programs))
	for _, p := range c.programs {
		out = append(out, p)
	}
	return out
}
