// Package intake holds the domain types shared by every part of the ingestion worker: templates,
// integrations, entities, audit entries and deliveries. It depends on no database or web framework.
package intake

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// TaskQueue is the Temporal task queue every intake worker polls.
const TaskQueue = "intake"

// IDPattern is what template and integration identifiers must match.
var IDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Template is a typed entity schema with relations (like a Port blueprint).
type Template struct {
	Identifier string              `json:"identifier"`
	Title      string              `json:"title,omitempty"`
	Schema     TemplateSchema      `json:"schema"`
	Relations  map[string]Relation `json:"relations,omitempty"`
}

// TemplateSchema is the JSON-Schema subset a template's properties are written in.
type TemplateSchema struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Required   []string                   `json:"required,omitempty"`
}

// Relation points from a template to a target template.
type Relation struct {
	Title    string `json:"title,omitempty"`
	Target   string `json:"target"`
	Required bool   `json:"required"`
	Many     bool   `json:"many"`
}

// Integration is one source's operator-configured rules.
type Integration struct {
	Identifier  string    `json:"identifier"`
	Title       string    `json:"title,omitempty"`
	Description string    `json:"description,omitempty"`
	Enabled     *bool     `json:"enabled,omitempty"`
	Source      *Source   `json:"source,omitempty"`
	Security    *Security `json:"security,omitempty"`
	// AllowUnsigned lets a webhook integration without security accept unsigned deliveries.
	AllowUnsigned     bool   `json:"allow_unsigned,omitempty"`
	RequestIdentifier string `json:"request_identifier,omitempty"`
	// Hydration is kept as written so that unknown fields are reported by name (mappings.Compile).
	Hydration json.RawMessage `json:"hydration,omitempty"`
	// Credentials are named secrets for hydration headers ("secret:NAME"); encrypted at rest,
	// masked in the API, never in workflow input.
	Credentials map[string]string `json:"credentials,omitempty"`
	Response    *Response         `json:"response,omitempty"`
	// RedactHeaders names headers masked in deliveries besides the default credential list.
	RedactHeaders  []string   `json:"redact_headers,omitempty"`
	AllowEmptyBody bool       `json:"allow_empty_body,omitempty"`
	RateLimit      *RateLimit `json:"rate_limit,omitempty"`
	Mappings       []Mapping  `json:"mappings"`
}

// Response says how the receiver answers a webhook: "async" (202 at once, the default) or
// "sync" (wait up to Timeout for the workflow: 200 with the entities or 422 with the error).
type Response struct {
	Mode    string `json:"mode,omitempty"`
	Timeout string `json:"timeout,omitempty"`
}

// Response modes.
const (
	ResponseAsync = "async"
	ResponseSync  = "sync"
)

// Hydration makes the worker fetch the full record a thin notification points to.
type Hydration struct {
	URL          string            `json:"url,omitempty"`
	IDPath       string            `json:"id_path,omitempty"`
	EventPath    string            `json:"event_path,omitempty"`
	DeleteEvents []string          `json:"delete_events,omitempty"`
	EventMap     map[string]string `json:"event_map,omitempty"`
	Headers      map[string]string `json:"headers,omitempty"`
	Merge        bool              `json:"merge,omitempty"`
	Routes       []HydrationRoute  `json:"routes,omitempty"`
	Timeout      string            `json:"timeout,omitempty"`
	MaxBytes     int64             `json:"max_bytes,omitempty"`
}

// HydrationRoute is one endpoint of an integration that fetches from several: the first route
// whose When (JQ over the notification) is true is fetched.
type HydrationRoute struct {
	When   string `json:"when,omitempty"`
	URL    string `json:"url"`
	IDPath string `json:"id_path,omitempty"`
}

// SecretRef prefixes a hydration header value that names an entry of credentials.
const SecretRef = "secret:"

// Unsigned reports whether the integration takes unsigned webhooks (it says so explicitly).
func (i *Integration) Unsigned() bool {
	return i.AllowUnsigned || (i.Security != nil && i.Security.AllowUnsigned)
}

// IsEnabled reports whether deliveries are accepted; absent means enabled.
func (i *Integration) IsEnabled() bool { return i.Enabled == nil || *i.Enabled }

// SourceKind derives the transport: explicit source.kind, else kafka when a mapping names a topic.
func (i *Integration) SourceKind() string {
	if i.Source != nil && i.Source.Kind != "" {
		return i.Source.Kind
	}
	for _, m := range i.Mappings {
		if m.Topic != "" {
			return SourceKafka
		}
	}
	return SourceWebhook
}

// Source kinds.
const (
	SourceWebhook = "webhook"
	SourceKafka   = "kafka"
	SourcePubSub  = "pubsub"
)

// Source says where an integration's deliveries come from.
type Source struct {
	Kind         string   `json:"kind"`
	Topics       []string `json:"topics,omitempty"`
	Group        string   `json:"group,omitempty"`
	Subscription string   `json:"subscription,omitempty"`
	// Batch (streams only, opt-in) runs up to MaxRecords records of one partition as one
	// workflow; each record keeps its own delivery, audit entries and outcome.
	Batch *Batch `json:"batch,omitempty"`
}

// Batch bounds a batch: at most MaxRecords records, waiting at most MaxWait for them.
type Batch struct {
	MaxRecords int    `json:"max_records,omitempty"`
	MaxWait    string `json:"max_wait,omitempty"`
}

// Security configures how webhook deliveries are authenticated.
type Security struct {
	SignatureHeaderName string   `json:"signature_header_name,omitempty"`
	SignatureValue      string   `json:"signature_value,omitempty"`
	Scheme              string   `json:"scheme,omitempty"`
	Secrets             []string `json:"secrets,omitempty"`
	AllowUnsigned       bool     `json:"allow_unsigned,omitempty"`
}

// Masked is what the API shows in place of a secret.
const Masked = "********"

// RateLimit bounds accepted webhook deliveries per integration.
type RateLimit struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// Mapping turns a payload into entities of one template.
type Mapping struct {
	Template                     string        `json:"template"`
	Filter                       string        `json:"filter,omitempty"`
	HeaderFilter                 string        `json:"header_filter,omitempty"`
	Topic                        string        `json:"topic,omitempty"`
	ItemsToParse                 string        `json:"items_to_parse,omitempty"`
	Operation                    string        `json:"operation,omitempty"`
	UpdateMode                   string        `json:"update_mode,omitempty"`
	EventTime                    string        `json:"event_time,omitempty"`
	CreateMissingRelatedEntities bool          `json:"create_missing_related_entities,omitempty"`
	Entity                       EntityMapping `json:"entity"`
}

// Operations and update modes.
const (
	OperationUpsert = "upsert"
	OperationDelete = "delete"
	UpdateMerge     = "merge"
	UpdateReplace   = "replace"
)

// EntityMapping holds the JQ expressions for one entity's fields.
type EntityMapping struct {
	Identifier string            `json:"identifier"`
	Title      string            `json:"title,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
	Relations  map[string]string `json:"relations,omitempty"`
}

// Entity is one stored catalog object.
type Entity struct {
	Identifier string         `json:"identifier"`
	Template   string         `json:"template"`
	Title      string         `json:"title,omitempty"`
	Properties map[string]any `json:"properties"`
	Relations  map[string]any `json:"relations"`
	CreatedAt  time.Time      `json:"created_at"`
	UpdatedAt  time.Time      `json:"updated_at"`
	EventTime  *time.Time     `json:"event_time,omitempty"`
	CreatedBy  string         `json:"created_by,omitempty"`
	UpdatedBy  string         `json:"updated_by,omitempty"`
}

// Audit vocabulary.
const (
	ActionCreate       = "CREATE"
	ActionUpdate       = "UPDATE"
	ActionDelete       = "DELETE"
	ActionSkip         = "SKIP"
	ActionAuthenticate = "AUTHENTICATE"

	StatusSuccess = "SUCCESS"
	StatusFailure = "FAILURE"

	OriginWebhook = "WEBHOOK"
	OriginKafka   = "KAFKA"
	OriginPubSub  = "PUBSUB"
	OriginReplay  = "REPLAY"
)

// AuditEntry is one line of the audit log, in the seed's shape.
type AuditEntry struct {
	ID           string       `json:"id" bson:"_id"`
	Action       string       `json:"action" bson:"action"`
	ResourceType string       `json:"resource_type" bson:"resource_type"`
	Trigger      AuditTrigger `json:"trigger" bson:"trigger"`
	Context      AuditContext `json:"context" bson:"context"`
	Message      string       `json:"message,omitempty" bson:"message,omitempty"`
	Status       string       `json:"status" bson:"status"`
	// Details says more than the message, e.g. {"relation": "owner", "target_template": "github_user"}
	// for a relation whose target does not exist.
	Details    map[string]any `json:"details,omitempty" bson:"details,omitempty"`
	DeliveryID string         `json:"delivery_id,omitempty" bson:"delivery_id,omitempty"`
	WorkflowID string         `json:"workflow_id,omitempty" bson:"workflow_id,omitempty"`
}

// AuditTrigger says when and by what an audited change happened.
type AuditTrigger struct {
	At     time.Time `json:"at" bson:"at"`
	By     AuditBy   `json:"by" bson:"by"`
	Origin string    `json:"origin" bson:"origin"`
}

// AuditTimeLayout is how trigger.at is written in JSON: UTC with exactly three fraction digits,
// like the seed's "2025-11-02T06:03:25.333Z" (RFC3339Nano would drop trailing zeros).
const AuditTimeLayout = "2006-01-02T15:04:05.000Z"

// MarshalJSON writes at in AuditTimeLayout; the text is RFC 3339, so time.Time reads it back.
func (t AuditTrigger) MarshalJSON() ([]byte, error) {
	type plain AuditTrigger // without this method
	return json.Marshal(struct {
		At string `json:"at"`
		plain
	}{At: t.At.UTC().Format(AuditTimeLayout), plain: plain(t)})
}

// AuditBy names the integration behind a change.
type AuditBy struct {
	IntegrationID string `json:"integration_id" bson:"integration_id"`
}

// AuditContext names the entity an entry is about.
type AuditContext struct {
	EntityTemplate string `json:"entity_template,omitempty" bson:"entity_template,omitempty"`
	Entity         string `json:"entity,omitempty" bson:"entity,omitempty"`
}

// AuditFilter selects audit entries for the API.
type AuditFilter struct {
	EntityTemplate, Integration, Origin, Action, Status string
	// DeliveryID selects one delivery's entries, its replays' included (they carry the original's).
	DeliveryID string
	From, To   time.Time
	Limit      int
	Cursor     string
}

// Delivery is one received message, as the IngestWorkflow gets it: raw bytes and redacted
// headers, never a secret.
type Delivery struct {
	ID          string            `json:"delivery_id"`
	Integration string            `json:"integration"`
	Key         string            `json:"delivery_key"`
	Origin      string            `json:"origin"`
	Body        []byte            `json:"body"`
	Headers     map[string]string `json:"headers"`
	Meta        map[string]any    `json:"meta"`
	ReceivedAt  time.Time         `json:"received_at"`
	// Verified carries the receiver's verdict for schemes whose credential was redacted
	// (static, basic) and for replays, which trust the original receipt.
	Verified bool `json:"verified"`
	// ReplayOf links a replay to the delivery it re-runs.
	ReplayOf string `json:"replay_of,omitempty"`
	// Ref names a stored delivery the workflow loads first (claim check): bulk replays pass
	// references, not bodies.
	Ref string `json:"ref,omitempty"`
	// Steps is the version of IngestWorkflow's steps its starter asked for (StepsPrepared, or 0
	// from a starter of an earlier version). Being input, it tells a worker replaying a history
	// which steps wrote it without a version marker, which would cost every delivery a marker
	// and a search-attribute upsert.
	Steps int `json:"steps,omitempty"`
}

// StepsPrepared is the current version of IngestWorkflow's steps: Verify, Map and Validate in
// one local activity (Prepare), the store step first as a local activity.
const StepsPrepared = 2

// deliveryJSON is a Delivery as it appears in workflow input and history.
type deliveryJSON struct {
	deliveryFields
	Body         json.RawMessage `json:"body"`
	BodyEncoding string          `json:"body_encoding,omitempty"`
}

type deliveryFields Delivery

// MarshalJSON shows the body the way an operator can read it in the Temporal UI: JSON as JSON
// (when encoding/json gives back the very same bytes, so signatures still verify), UTF-8 text as
// a string ("text"), anything else as base64 ("base64").
func (d Delivery) MarshalJSON() ([]byte, error) {
	out := deliveryJSON{deliveryFields: deliveryFields(d)}
	out.deliveryFields.Body = nil
	if m, err := json.Marshal(json.RawMessage(d.Body)); len(d.Body) > 0 && err == nil && bytes.Equal(m, d.Body) {
		out.Body = d.Body
	} else if utf8.Valid(d.Body) {
		out.Body, _ = json.Marshal(string(d.Body))
		out.BodyEncoding = BodyText
	} else {
		out.Body, _ = json.Marshal(base64.StdEncoding.EncodeToString(d.Body))
		out.BodyEncoding = BodyBase64
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON wrote, giving back the exact bytes.
func (d *Delivery) UnmarshalJSON(b []byte) error {
	var in deliveryJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*d = Delivery(in.deliveryFields)
	// "" is a JSON body ("null" included; an empty body is "text").
	body, err := decodeBody(in.Body, in.BodyEncoding)
	if err != nil {
		return fmt.Errorf("delivery body: %w", err)
	}
	d.Body = body
	return nil
}

// decodeBody gives back the bytes of a body shown as JSON ("" or "json"), as a string ("text")
// or as a base64 string ("base64"): the one reverse of both encodings of a body.
func decodeBody(body json.RawMessage, encoding string) ([]byte, error) {
	switch encoding {
	case "", BodyJSON:
		return []byte(body), nil
	case BodyText, BodyBase64:
		var s string
		if err := json.Unmarshal(body, &s); err != nil {
			return nil, fmt.Errorf("%s body: %w", encoding, err)
		}
		if encoding == BodyText {
			return []byte(s), nil
		}
		return base64.StdEncoding.DecodeString(s)
	}
	return nil, fmt.Errorf("unknown body encoding %q", encoding)
}

// Entity outcomes, as the workflow result and the delivery record report them.
const (
	OutcomeCreated   = "created"
	OutcomeUpdated   = "updated"
	OutcomeUnchanged = "unchanged"
	OutcomeDeleted   = "deleted"
	OutcomeSkipped   = "skipped"
	OutcomeFailed    = "failed"
)

// Delivery outcomes (the IntakeOutcome search attribute).
const (
	DeliverySucceeded = "succeeded"
	DeliveryFiltered  = "filtered"
	DeliveryFailed    = "failed"
)

// Error types of failures that retrying cannot fix.
const (
	ErrSignatureInvalid = "SignatureInvalid"
	ErrMapping          = "MappingError"
	ErrValidation       = "ValidationError"
	ErrRelationMissing  = "RelationMissing"
	ErrConfig           = "ConfigError"
	ErrHydration        = "HydrationError"
)

// EntityChange is one entity a mapping produced, and later what became of it.
type EntityChange struct {
	Mapping    int            `json:"mapping"`
	Item       int            `json:"item"`
	Template   string         `json:"template"`
	Identifier string         `json:"identifier,omitempty"`
	Title      *string        `json:"title,omitempty"`
	Properties map[string]any `json:"properties,omitempty"`
	Relations  map[string]any `json:"relations,omitempty"`
	Operation  string         `json:"operation"`
	UpdateMode string         `json:"update_mode"`
	EventTime  *time.Time     `json:"event_time,omitempty"`
	// CreateMissingRelated makes placeholder entities for relation targets that do not exist.
	CreateMissingRelated bool `json:"create_missing_related,omitempty"`
	// Clear lists fields the mapping owns that yielded nothing ("properties.x", "relations.y"):
	// a hydrated merge removes them, because the upstream cleared them.
	Clear []string `json:"clear,omitempty"`

	Outcome   string `json:"outcome,omitempty"`
	ErrorType string `json:"error_type,omitempty"`
	Message   string `json:"message,omitempty"`
	// Details goes into the audit entry, e.g. {"relation", "target_template"} of a missing target.
	Details map[string]any `json:"details,omitempty"`
}

// Fail marks the change failed with a typed reason.
func (c *EntityChange) Fail(errType, message string) {
	c.Outcome, c.ErrorType, c.Message = OutcomeFailed, errType, message
}

// Failed reports whether the change failed.
func (c *EntityChange) Failed() bool { return c.Outcome == OutcomeFailed }

// MappingOutcome says whether a mapping's filters let the delivery through.
type MappingOutcome struct {
	Index    int    `json:"index"`
	Template string `json:"template"`
	Filtered bool   `json:"filtered"`
}

// IngestResult is what one delivery's workflow produced, entity by entity.
type IngestResult struct {
	DeliveryID string           `json:"delivery_id"`
	Outcome    string           `json:"outcome"`
	Mappings   []MappingOutcome `json:"mappings"`
	Entities   []EntityChange   `json:"entities"`
}

// Delivery statuses (the deliveries API).
const (
	StatusAccepted = "accepted"
)

// DeliveryRecord is a delivery as the store keeps it: enough to replay it after Temporal's
// retention has passed, and what became of it.
type DeliveryRecord struct {
	ID          string `json:"id"`
	Integration string `json:"integration"`
	Key         string `json:"delivery_key"`
	Origin      string `json:"origin"`
	Status      string `json:"status"`
	// Body is the body as received: JSON as JSON, UTF-8 text as a JSON string ("text"),
	// anything else as a base64 JSON string ("base64"); RawBody gives back the exact bytes.
	Body         json.RawMessage   `json:"body"`
	BodyEncoding string            `json:"body_encoding"`
	ContentType  string            `json:"content_type,omitempty"`
	Headers      map[string]string `json:"headers"`
	Meta         map[string]any    `json:"meta,omitempty"`
	ReceivedAt   time.Time         `json:"received_at"`
	UpdatedAt    time.Time         `json:"updated_at"`
	WorkflowID   string            `json:"workflow_id"`
	RunID        string            `json:"run_id"`
	WorkflowURL  string            `json:"workflow_url,omitempty"`
	Error        *Failure          `json:"error,omitempty"`
	Mappings     []MappingOutcome  `json:"mappings,omitempty"`
	Entities     []EntityChange    `json:"entities,omitempty"`
	Replays      []ReplayRun       `json:"replays,omitempty"`
}

// Body encodings of a delivery record.
const (
	BodyJSON   = "json"
	BodyText   = "text"
	BodyBase64 = "base64"
)

// RawBody returns the exact bytes that were received.
func (r *DeliveryRecord) RawBody() ([]byte, error) {
	b, err := decodeBody(r.Body, r.BodyEncoding)
	if err != nil {
		return nil, fmt.Errorf("delivery %s: %w", r.ID, err)
	}
	return b, nil
}

// Failure is a typed error as operators see it.
type Failure struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// ReplayRun is one replay of a delivery.
type ReplayRun struct {
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id"`
	Status     string `json:"status"`
}

// DeliveryFilter selects deliveries for the API and for bulk replay.
type DeliveryFilter struct {
	Integration string    `json:"integration,omitempty"`
	Status      string    `json:"status,omitempty"`
	Origin      string    `json:"origin,omitempty"`
	From        time.Time `json:"from,omitzero"`
	To          time.Time `json:"to,omitzero"`
	Limit       int       `json:"limit,omitempty"`
	Cursor      string    `json:"cursor,omitempty"`
}
