// Package examples embeds the example templates, integrations and sample deliveries that
// `intake dev` loads on the first start of an empty data folder, and that the tests replay.
package examples

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"path"
	"sort"

	"intake"
)

//go:embed templates/*.json integrations/*.json samples/*.json
var files embed.FS

// Bundles are the seed systems' example folders (0NN_name): templates and integrations at the
// top, samples/ below; `intake apply -f examples/0NN_name` loads one.
//
//go:embed 0*/*.json 0*/samples/*.json
var bundles embed.FS

// Sample is one example delivery with what it must produce.
type Sample struct {
	Name        string            `json:"-"`
	Integration string            `json:"integration"`
	Description string            `json:"description"`
	Topic       string            `json:"topic,omitempty"` // stream samples: where a producer sends them
	Headers     map[string]string `json:"headers"`
	// Path is what follows /webhooks/{integration}/ (seed 004's issue/{key}/close).
	Path string          `json:"path,omitempty"`
	Body json.RawMessage `json:"body"`
	// Upstream is what the stand-in upstream API answers from this sample on (hydration):
	// path -> document; null removes the document (the upstream then answers 404).
	Upstream map[string]json.RawMessage `json:"upstream,omitempty"`
	Expect   Expectation                `json:"expect"`
}

// Expectation is what a sample must produce.
type Expectation struct {
	Outcome string `json:"outcome"`
	// HTTPStatus is the receiver's answer when it is not 202 (a sync response: 200 or 422),
	// Message the error message it carries.
	HTTPStatus int              `json:"http_status,omitempty"`
	Message    string           `json:"message,omitempty"`
	Entities   []ExpectedEntity `json:"entities"`
	Absent     []ExpectedEntity `json:"absent"`
	Audit      []ExpectedAudit  `json:"audit"`
}

// ExpectedEntity lists the fields a stored entity must have (others are not compared).
type ExpectedEntity struct {
	Template   string         `json:"template"`
	Identifier string         `json:"identifier"`
	Title      string         `json:"title"`
	Properties map[string]any `json:"properties"`
	Relations  map[string]any `json:"relations"`
}

// ExpectedAudit is an audit entry a sample must leave.
type ExpectedAudit struct {
	// ResourceType is "entity" unless the delivery failed before any entity ("delivery").
	ResourceType   string         `json:"resource_type,omitempty"`
	Action         string         `json:"action"`
	Status         string         `json:"status"`
	EntityTemplate string         `json:"entity_template"`
	Entity         string         `json:"entity"`
	Message        string         `json:"message"`
	Details        map[string]any `json:"details"`
}

// Templates returns the example templates.
func Templates() ([]intake.Template, error) { return load[intake.Template]("templates") }

// Integrations returns the example integrations.
func Integrations() ([]intake.Integration, error) { return load[intake.Integration]("integrations") }

// Samples returns the sample deliveries in file-name order (later ones may rely on earlier ones).
func Samples() ([]Sample, error) {
	out, err := load[Sample]("samples")
	if err != nil {
		return nil, err
	}
	names, _ := fs.Glob(files, "samples/*.json")
	sort.Strings(names)
	for i := range out {
		out[i].Name = path.Base(names[i])
	}
	return out, nil
}

// Bundle is one seed system's example folder.
type Bundle struct {
	Name         string
	Templates    []intake.Template
	Integrations []intake.Integration
	Samples      []Sample
}

// Bundles returns every seed bundle in folder order, samples in file-name order.
func Bundles() ([]Bundle, error) {
	dirs, err := fs.Glob(bundles, "0*")
	if err != nil {
		return nil, err
	}
	sort.Strings(dirs)
	var out []Bundle
	for _, dir := range dirs {
		b := Bundle{Name: dir}
		names, _ := fs.Glob(bundles, dir+"/*.json")
		sort.Strings(names)
		for _, n := range names {
			raw, err := bundles.ReadFile(n)
			if err != nil {
				return nil, err
			}
			var head struct {
				Schema   json.RawMessage `json:"schema"`
				Mappings json.RawMessage `json:"mappings"`
			}
			if err := json.Unmarshal(raw, &head); err != nil {
				return nil, fmt.Errorf("examples/%s: %w", n, err)
			}
			switch {
			case head.Schema != nil:
				var t intake.Template
				err = json.Unmarshal(raw, &t)
				b.Templates = append(b.Templates, t)
			case head.Mappings != nil:
				var in intake.Integration
				err = json.Unmarshal(raw, &in)
				b.Integrations = append(b.Integrations, in)
			default:
				err = fmt.Errorf("neither a template nor an integration")
			}
			if err != nil {
				return nil, fmt.Errorf("examples/%s: %w", n, err)
			}
		}
		if b.Samples, err = loadFrom[Sample](bundles, dir+"/samples"); err != nil {
			return nil, err
		}
		names, _ = fs.Glob(bundles, dir+"/samples/*.json")
		sort.Strings(names)
		for i := range b.Samples {
			b.Samples[i].Name = path.Base(names[i])
		}
		out = append(out, b)
	}
	return out, nil
}

// BundleFile returns a bundle file's bytes as written (tests post integrations verbatim).
func BundleFile(name string) ([]byte, error) { return bundles.ReadFile(name) }

func load[T any](dir string) ([]T, error) { return loadFrom[T](files, dir) }

func loadFrom[T any](files embed.FS, dir string) ([]T, error) {
	names, err := fs.Glob(files, dir+"/*.json")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	out := make([]T, 0, len(names))
	for _, n := range names {
		b, err := files.ReadFile(n)
		if err != nil {
			return nil, err
		}
		var v T
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, fmt.Errorf("examples/%s: %w", n, err)
		}
		out = append(out, v)
	}
	return out, nil
}
