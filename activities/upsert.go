package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"intake"
	"intake/mappings"
	"intake/store"
)

// UpsertInput is the validated changes of one delivery.
type UpsertInput struct {
	Ref     Ref                   `json:"ref"`
	Changes []intake.EntityChange `json:"changes"`
}

// upsert writes the delivery's entities in bulk, addressed by _id (the first half of Commit).
// It checks relations (creating placeholders when the mapping asks), skips stale updates, and
// judges "required" on the entity as it will be stored. Store errors are returned for Temporal
// to retry; everything else is a per-entity outcome. A retried attempt reports what its first
// attempt did (LastRun).
func (a *Activities) upsert(ctx context.Context, in UpsertInput) ([]intake.EntityChange, error) {
	const attempts = 10
	for attempt := 1; ; attempt++ {
		// Each attempt starts from the mapped changes and reads the entities again.
		changes := slices.Clone(in.Changes)
		err := a.upsertOnce(ctx, in.Ref, changes)
		switch {
		case err == nil:
			return changes, nil
		case !errors.Is(err, store.ErrConflict) || attempt == attempts:
			return nil, fmt.Errorf("upsert entities of %s: %w", in.Ref.DeliveryID, err)
		}
		// Another delivery wrote one of these entities between our read and write.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt*attempt) * 10 * time.Millisecond):
		}
	}
}

// upsertOnce plans and writes once; store.ErrConflict means "read again".
// It locks the entities the plan reads: its own for writing, the relations' targets for reading
// (many deliveries point to one team or project, and a placeholder is an insert, safe on its
// own). A template changed in between can make the plan write outside them, which the store
// turns away as a conflict.
func (a *Activities) upsertOnce(ctx context.Context, ref Ref, changes []intake.EntityChange) error {
	own, targets := touchedIDs(changes, a.Catalog.Templates())
	return a.Store.PlanAndWrite(ctx, store.Locks{Write: own, Read: targets},
		func(ctx context.Context) ([]store.EntityWrite, error) { return a.Plan(ctx, ref, changes) })
}

// Plan reads the entities the changes touch, sets each change's outcome (or failure) and returns
// the writes that carry them out, writing nothing: Upsert writes them, a dry run only shows them.
func (a *Activities) Plan(ctx context.Context, ref Ref, changes []intake.EntityChange) ([]store.EntityWrite, error) {
	runKey := ref.WorkflowID + "/" + ref.RunID
	templates := a.Catalog.Templates()

	docs, err := a.Store.EntitiesByID(ctx, referencedIDs(changes, templates))
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	var writes []store.EntityWrite
	touched := map[string]bool{}
	for i := range changes {
		c := &changes[i]
		if c.Failed() {
			continue
		}
		key := store.EntityKey(c.Template, c.Identifier)
		existing := docs[key]
		if existing != nil && existing.LastRun == runKey && !touched[key] {
			c.Outcome = existing.LastOutcome // written by an earlier attempt of this run
			continue
		}
		if c.Operation == intake.OperationDelete {
			c.Outcome = intake.OutcomeDeleted
			if existing == nil {
				c.Message = "entity did not exist"
				continue
			}
			writes = append(writes, store.EntityWrite{Delete: key, Rev: existing.Rev})
			docs[key], touched[key] = nil, true
			continue
		}
		if existing != nil && c.EventTime != nil && existing.EventTime != nil && c.EventTime.Before(*existing.EventTime) {
			c.Outcome = intake.OutcomeSkipped
			c.Message = fmt.Sprintf("stale update: event time %s is older than the stored %s",
				c.EventTime.Format(time.RFC3339), existing.EventTime.Format(time.RFC3339))
			continue
		}
		ct := a.Catalog.Template(c.Template)
		if ct == nil {
			c.Fail(intake.ErrValidation, fmt.Sprintf("template %q does not exist", c.Template))
			continue
		}
		tpl := ct.Template
		placeholders, err := checkRelations(c, tpl, docs, ref.Integration, now)
		if err != nil {
			c.Fail(intake.ErrRelationMissing, err.Error())
			var missing *relationMissingError
			if errors.As(err, &missing) {
				c.Details = map[string]any{"relation": missing.relation, "target_template": missing.template}
			}
			continue
		}
		doc := merged(c, existing, ct, ref.Integration, now)
		if err := ct.Validate(doc.Properties, true); err != nil {
			c.Fail(intake.ErrValidation, err.Error())
			continue
		}
		if err := requiredRelations(tpl, doc); err != nil {
			c.Fail(intake.ErrValidation, err.Error())
			continue
		}
		for _, p := range placeholders {
			p.Rev = 1
			writes = append(writes, store.EntityWrite{Doc: p})
			docs[p.ID], touched[p.ID] = p, true
		}
		switch {
		case existing == nil:
			c.Outcome = intake.OutcomeCreated
		case sameContent(existing, doc):
			c.Outcome = intake.OutcomeUnchanged
			if !newerEvent(c.EventTime, existing.EventTime) {
				continue
			}
			// Same content, newer event time: store the time so older events stay stale.
			doc.UpdatedAt = existing.UpdatedAt
		default:
			c.Outcome = intake.OutcomeUpdated
		}
		doc.LastRun, doc.LastOutcome = runKey, c.Outcome
		read := revOf(existing)
		doc.Rev = read + 1
		writes = append(writes, store.EntityWrite{Doc: doc, Rev: read})
		docs[key], touched[key] = doc, true
	}
	return writes, nil
}

func revOf(d *store.EntityDoc) int64 {
	if d == nil {
		return 0
	}
	return d.Rev
}

// referencedIDs lists every entity the changes touch or point to, for one $in lookup.
func referencedIDs(changes []intake.EntityChange, templates map[string]*intake.Template) []string {
	own, targets := touchedIDs(changes, templates)
	return append(own, targets...)
}

// touchedIDs splits the entities the changes reference into their own (which they write) and
// the relations' targets that are not also their own (which they read, or create as
// placeholders).
func touchedIDs(changes []intake.EntityChange, templates map[string]*intake.Template) (own, targets []string) {
	seen := map[string]bool{}
	for _, c := range changes {
		if id := store.EntityKey(c.Template, c.Identifier); !c.Failed() && !seen[id] {
			seen[id] = true
			own = append(own, id)
		}
	}
	for _, c := range changes {
		tpl := templates[c.Template]
		if c.Failed() || tpl == nil {
			continue
		}
		for name, v := range c.Relations {
			for _, target := range relationIDs(v) {
				if id := store.EntityKey(tpl.Relations[name].Target, target); !seen[id] {
					seen[id] = true
					targets = append(targets, id)
				}
			}
		}
	}
	return own, targets
}

// relationIDs lists the identifiers a relation value names.
func relationIDs(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []string:
		return x
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// checkRelations fails on a relation target that does not exist, in the seed's words, unless
// the mapping creates placeholders.
func checkRelations(c *intake.EntityChange, tpl *intake.Template, docs map[string]*store.EntityDoc, by string, now time.Time) ([]*store.EntityDoc, error) {
	var placeholders []*store.EntityDoc
	for _, name := range sortedNames(c.Relations) {
		rel := tpl.Relations[name]
		for _, target := range relationIDs(c.Relations[name]) {
			key := store.EntityKey(rel.Target, target)
			if docs[key] != nil {
				continue
			}
			if !c.CreateMissingRelated {
				return nil, &relationMissingError{target: target, relation: name, template: rel.Target}
			}
			placeholders = append(placeholders, &store.EntityDoc{
				ID: key, Template: rel.Target, Identifier: target,
				Properties: map[string]any{}, Relations: map[string]any{},
				CreatedAt: now, UpdatedAt: now, CreatedBy: by, UpdatedBy: by,
			})
		}
	}
	return placeholders, nil
}

// relationMissingError is a relation whose target does not exist. Its message is exactly the
// seed's; the relation and its target template go into the audit entry's details.
type relationMissingError struct{ target, relation, template string }

func (e *relationMissingError) Error() string {
	return fmt.Sprintf("Relation '%s' does not exist", e.target)
}

func requiredRelations(tpl *intake.Template, doc *store.EntityDoc) error {
	for _, name := range sortedNames(tpl.Relations) {
		if tpl.Relations[name].Required && len(relationIDs(doc.Relations[name])) == 0 {
			return fmt.Errorf("relation '%s' is required", name)
		}
	}
	return nil
}

// merged computes the document to store: merge keeps what the mapping does not set, replace
// makes the entity exactly the mapping's result. Defaults fill properties still absent.
func merged(c *intake.EntityChange, existing *store.EntityDoc, ct *mappings.CompiledTemplate, by string, now time.Time) *store.EntityDoc {
	doc := &store.EntityDoc{
		ID: store.EntityKey(c.Template, c.Identifier), Template: c.Template, Identifier: c.Identifier,
		Properties: map[string]any{}, Relations: map[string]any{},
		CreatedAt: now, UpdatedAt: now, CreatedBy: by, UpdatedBy: by, EventTime: c.EventTime,
	}
	if existing != nil {
		doc.CreatedAt, doc.CreatedBy = existing.CreatedAt, existing.CreatedBy
		if doc.EventTime == nil {
			doc.EventTime = existing.EventTime
		}
		if c.UpdateMode != intake.UpdateReplace {
			doc.Title = existing.Title
			maps.Copy(doc.Properties, existing.Properties)
			maps.Copy(doc.Relations, existing.Relations)
		}
	}
	for _, f := range c.Clear {
		// A hydrated merge owns these fields and the upstream cleared them.
		if name, ok := strings.CutPrefix(f, "properties."); ok {
			delete(doc.Properties, name)
		} else if name, ok := strings.CutPrefix(f, "relations."); ok {
			delete(doc.Relations, name)
		}
	}
	if c.Title != nil {
		doc.Title = *c.Title
	}
	maps.Copy(doc.Properties, c.Properties)
	maps.Copy(doc.Relations, c.Relations)
	for k, v := range ct.Defaults {
		if _, ok := doc.Properties[k]; !ok {
			doc.Properties[k] = v
		}
	}
	return doc
}

func newerEvent(t, stored *time.Time) bool {
	return t != nil && (stored == nil || t.After(*stored))
}

// sameContent compares what an operator sees; JSON evens out numeric types read back from BSON.
func sameContent(a, b *store.EntityDoc) bool {
	ja, _ := json.Marshal([]any{a.Title, a.Properties, a.Relations})
	jb, _ := json.Marshal([]any{b.Title, b.Properties, b.Relations})
	return string(ja) == string(jb)
}

func sortedNames[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
