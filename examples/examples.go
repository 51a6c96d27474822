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

// Sample is one example delivery with what it must produce.
type Sample struct {
	Name        string            `json:"-"`
	Integration string            `json:"integration"`
	Description string            `json:"description"`
	Topic       string            `json:"topic,omitempty"` // stream samples: where a producer sends them
	Headers     map[string]string `json:"headers"`
	Body        json.RawMessage   `json:"body"`
	Expect      Expectation       `json:"expect"`
}

// Expectation is what a sample must produce.
type Expectation struct {
	Outcome  string           `json:"outcome"`
	Entities []ExpectedEntity `json:"entities"`
	Absent   []ExpectedEntity `json:"absent"`
	Audit    []ExpectedAudit  `json:"audit"`
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

func load[T any](dir string) ([]T, error) {
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
