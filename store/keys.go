package store

import (
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"

	"intake"
)

// MongoDB-protocol servers refuse field names that contain "." or start with "$", but payloads,
// headers and mapped properties may hold such keys (HTTP header names, "sonar.analysis.repository").
// The store writes them with look-alike full-width characters and reads them back, so such a
// document is stored instead of failing the write forever. Likewise a NUL in a key (BSON names
// cannot hold one; written as U+2400 SYMBOL FOR NULL) and, since FerretDB refuses nested arrays,
// an array inside an array (written as {"［］": [...]}). A key that already holds one of these
// look-alikes reads back as the character it stands for.
var (
	escapeKey   = strings.NewReplacer(".", "\uff0e", "$", "\uff04", "\x00", "\u2400")
	unescapeKey = strings.NewReplacer("\uff0e", ".", "\uff04", "$", "\u2400", "\x00")
)

// nestedArrayKey wraps an array that is an element of an array.
const nestedArrayKey = "\uff3b\uff3d"

func needsEscape(k string) bool { return strings.ContainsAny(k, ".$\x00") }
func isEscaped(k string) bool   { return strings.ContainsAny(k, "\uff0e\uff04\u2400") }

// escapeValue returns v with every map key escaped and every array in an array wrapped.
func escapeValue(v any) any { return mapKeys(v, needsEscape, escapeKey, true) }

// unescapeValue reverses escapeValue.
func unescapeValue(v any) any { return mapKeys(v, isEscaped, unescapeKey, false) }

func mapKeys(v any, hit func(string) bool, r *strings.Replacer, escape bool) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if hit(k) {
				k = r.Replace(k)
			}
			out[k] = mapKeys(e, hit, r, escape)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			e = mapKeys(e, hit, r, escape)
			if inner, ok := e.([]any); ok && escape {
				e = map[string]any{nestedArrayKey: inner}
			} else if m, ok := e.(map[string]any); ok && !escape && len(m) == 1 {
				if inner, ok := m[nestedArrayKey].([]any); ok {
					e = inner
				}
			}
			out[i] = e
		}
		return out
	case bson.A: // arrays as the driver decodes them
		return mapKeys([]any(x), hit, r, escape)
	}
	return v
}

func escapeStrings(m map[string]string) map[string]string {
	return stringKeys(m, needsEscape, escapeKey)
}
func unescapeStrings(m map[string]string) map[string]string {
	return stringKeys(m, isEscaped, unescapeKey)
}

func stringKeys(m map[string]string, hit func(string) bool, r *strings.Replacer) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		if hit(k) {
			k = r.Replace(k)
		}
		out[k] = v
	}
	return out
}

func escapeMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return escapeValue(m).(map[string]any)
}

func unescapeMap(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return unescapeValue(m).(map[string]any)
}

// escapeChanges copies entity changes with their properties escaped.
func escapeChanges(cs []intake.EntityChange, f func(map[string]any) map[string]any) []intake.EntityChange {
	if cs == nil {
		return nil
	}
	out := make([]intake.EntityChange, len(cs))
	for i, c := range cs {
		c.Properties = f(c.Properties)
		c.Details = f(c.Details)
		out[i] = c
	}
	return out
}

// stored returns the entity document as written: keys escaped.
func (d *EntityDoc) stored() *EntityDoc {
	c := *d
	c.Properties, c.Relations = escapeMap(d.Properties), escapeMap(d.Relations)
	return &c
}

// loaded restores a document read from the store.
func (d *EntityDoc) loaded() {
	d.Properties, d.Relations = unescapeMap(d.Properties), unescapeMap(d.Relations)
}
