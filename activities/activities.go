// Package activities holds the steps of the IngestWorkflow, one file per step. Pure steps
// (Verify, Map, Validate) run as local activities; steps that touch the network (Hydrate,
// Commit, which upserts and audits, Audit alone, ProcessBatch) are regular activities with retry
// policies.
package activities

import (
	"log/slog"

	"intake/mappings"
	"intake/store"
)

// Activities are the workflow's steps; they load configuration and secrets themselves, so
// workflow input and history never carry a secret.
type Activities struct {
	Store   *store.Store
	Catalog *mappings.Catalog
	Log     *slog.Logger
	// HydrationAllow lists the private targets hydration may fetch (INTAKE_HYDRATION_ALLOW).
	HydrationAllow []string
	// MaxEntities caps the entities of one delivery (INTAKE_MAX_ENTITIES; 0: the default 1,000).
	MaxEntities int

	fetchers fetchers
}

// Ref identifies a delivery's run for the steps that do not need its body.
type Ref struct {
	DeliveryID  string `json:"delivery_id"`
	Integration string `json:"integration"`
	Origin      string `json:"origin"`
	WorkflowID  string `json:"workflow_id"`
	RunID       string `json:"run_id"`
	// Batched is set for a record of a batch: the run is the batch's, shared by its records,
	// so audit entry IDs also derive from the delivery.
	Batched bool `json:"batched,omitempty"`
}
