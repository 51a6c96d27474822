package store_test

import (
	"context"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/store"
)

// Deliveries keep any body and give back its exact bytes; lists never fail on one odd record and
// stop at a byte budget.
func TestDeliveryBodies(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	at := time.Now().UTC()
	bodies := map[string][]byte{
		"json":   []byte(`{"a": 1}`),
		"text":   []byte("plain text, not JSON"),
		"binary": {0xff, 0x00, 0xfe, 'x'},
		// encoding/json calls this valid JSON; stored as a (UTF-8) string it came back with U+FFFD.
		"bad-utf8-json": []byte("{\"a\":\"\xff\"}"),
		"empty":         {},
	}
	wantEnc := map[string]string{"json": intake.BodyJSON, "text": intake.BodyText, "binary": intake.BodyBase64, "empty": intake.BodyText,
		"bad-utf8-json": intake.BodyBase64}
	for name, b := range bodies {
		d := intake.Delivery{ID: "bodies." + name, Integration: "bodies", Key: name, Origin: intake.OriginKafka, Body: b,
			Headers: map[string]string{"content-type": "application/x-" + name}, ReceivedAt: at}
		require.NoError(t, s.RecordAccepted(ctx, d, "wf-"+name, "run"))
	}
	for name, b := range bodies {
		t.Run(name, func(t *testing.T) {
			r, err := s.GetDelivery(ctx, "bodies."+name)
			require.NoError(t, err)
			assert.Equal(t, wantEnc[name], r.BodyEncoding)
			assert.Equal(t, "application/x-"+name, r.ContentType)
			assert.True(t, json.Valid(r.Body), "the API shape is JSON whatever the body")
			raw, err := r.RawBody()
			require.NoError(t, err)
			assert.Equal(t, string(b), string(raw), "exact bytes back")
		})
	}
	list, _, err := s.ListDeliveries(ctx, intake.DeliveryFilter{Integration: "bodies", Limit: 50})
	require.NoError(t, err)
	assert.Len(t, list, len(bodies))
	out, err := json.Marshal(list)
	require.NoError(t, err, "a list with every kind of body encodes")
	assert.NotEmpty(t, out)

	t.Run("a page stops at its byte budget and the cursor goes on", func(t *testing.T) {
		big := []byte(`{"pad":"` + strings.Repeat("x", 1<<20) + `"}`)
		n := store.PageBytes/len(big) + 3
		for i := 0; i < n; i++ {
			d := intake.Delivery{ID: "big." + string(rune('a'+i)), Integration: "big", Key: string(rune('a' + i)),
				Origin: intake.OriginWebhook, Body: big, ReceivedAt: at.Add(time.Duration(i) * time.Millisecond)}
			require.NoError(t, s.RecordAccepted(ctx, d, "wf", "run"))
		}
		page, next, err := s.ListDeliveries(ctx, intake.DeliveryFilter{Integration: "big", Limit: 1000})
		require.NoError(t, err)
		assert.Less(t, len(page), n)
		require.NotEmpty(t, next)
		rest, _, err := s.ListDeliveries(ctx, intake.DeliveryFilter{Integration: "big", Limit: 1000, Cursor: next})
		require.NoError(t, err)
		assert.Equal(t, n, len(page)+len(rest), "nothing skipped between pages")
	})
}

// Keys the server refuses ("." inside, "$" first, a NUL) and arrays in arrays in headers, meta
// and mapped properties are stored and read back as they were, so such a delivery never fails
// its writes forever.
func TestKeysTheServerRefuses(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	d := intake.Delivery{ID: "keys.1", Integration: "keys", Key: "1", Origin: intake.OriginWebhook, Body: []byte(`{}`),
		Headers: map[string]string{"x.dotted": "v", "$dollar": "w"}, Meta: map[string]any{"a.b": map[string]any{"$c": 1.0}},
		ReceivedAt: time.Now().UTC()}
	require.NoError(t, s.RecordAccepted(ctx, d, "wf", "run"))
	props := map[string]any{"document": map[string]any{"sonar.analysis.repository": "r", "$set": []any{map[string]any{"a.b": "c"}},
		// FerretDB refuses nested arrays and BSON names cannot hold a NUL (hostile-input tests).
		"nul\x00key": 1.0, "coordinates": []any{[]any{1.0, 2.0}, []any{[]any{}, []any{"x", []any{3.0}}}}}}
	require.NoError(t, s.RecordOutcome(ctx, d, store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "wf", RunID: "run",
		Entities: []intake.EntityChange{{Template: "t", Identifier: "x", Properties: props}}}))
	r, err := s.GetDelivery(ctx, "keys.1")
	require.NoError(t, err)
	assert.Equal(t, d.Headers, r.Headers)
	assert.Equal(t, d.Meta, r.Meta)
	assert.Equal(t, props, r.Entities[0].Properties)

	now := time.Now().UTC()
	doc := &store.EntityDoc{ID: "t/x", Template: "t", Identifier: "x", Properties: props, Relations: map[string]any{}, CreatedAt: now, UpdatedAt: now}
	require.NoError(t, s.WriteEntities(ctx, []store.EntityWrite{{Doc: doc}}))
	e, err := s.GetEntity(ctx, "t", "x")
	require.NoError(t, err)
	assert.Equal(t, props, e.Properties)
	docs, err := s.EntitiesByID(ctx, []string{"t/x"})
	require.NoError(t, err)
	assert.Equal(t, props, docs["t/x"].Properties)
}

func TestRetention(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	old, recent := time.Now().UTC().Add(-48*time.Hour), time.Now().UTC()
	for i, at := range []time.Time{old, recent} {
		id := []string{"ret.old", "ret.new"}[i]
		require.NoError(t, s.RecordAccepted(ctx, intake.Delivery{ID: id, Integration: "ret", Key: id, Origin: intake.OriginWebhook,
			Body: []byte(`{}`), ReceivedAt: at}, "wf", "run"))
		require.NoError(t, s.InsertAudit(ctx, []intake.AuditEntry{{ID: id, Action: "CREATE", ResourceType: "entity", Status: "SUCCESS",
			Trigger: intake.AuditTrigger{At: at, By: intake.AuditBy{IntegrationID: "ret"}, Origin: intake.OriginWebhook}}}))
	}
	d, a, err := s.Expire(ctx, time.Now().Add(-24*time.Hour), time.Time{})
	require.NoError(t, err)
	assert.Equal(t, int64(1), d)
	assert.Equal(t, int64(0), a, "audit retention off by default")
	_, err = s.GetDelivery(ctx, "ret.old")
	assert.ErrorIs(t, err, store.ErrNotFound)
	_, err = s.GetDelivery(ctx, "ret.new")
	assert.NoError(t, err)
	_, a, err = s.Expire(ctx, time.Time{}, time.Now().Add(-24*time.Hour))
	require.NoError(t, err)
	assert.Equal(t, int64(1), a)
}

// A batch claims its records once: a second run finds them taken, a retry of the same run finds
// them its own, and outcomes are written in bulk.
func TestClaimDeliveries(t *testing.T) {
	s, _, _ := open(t)
	ctx := context.Background()
	var ds []intake.Delivery
	for i := 0; i < 70; i++ { // more than one bulk chunk
		ds = append(ds, intake.Delivery{ID: "claims.k" + strconv.Itoa(i), Integration: "claims", Key: "k" + strconv.Itoa(i),
			Origin: intake.OriginKafka, Body: []byte(`{"i":` + strconv.Itoa(i) + `}`), ReceivedAt: time.Now().UTC()})
	}
	first, err := s.ClaimDeliveries(ctx, ds[:40], "batch-a", "run-1")
	require.NoError(t, err)
	assert.Equal(t, slices.Repeat([]bool{true}, 40), first)

	again, err := s.ClaimDeliveries(ctx, ds[:40], "batch-a", "run-1")
	require.NoError(t, err)
	assert.Equal(t, first, again, "a retried attempt of the same run keeps its claims")

	other, err := s.ClaimDeliveries(ctx, ds[30:], "batch-b", "run-2")
	require.NoError(t, err)
	assert.Equal(t, append(slices.Repeat([]bool{false}, 10), slices.Repeat([]bool{true}, 30)...), other,
		"records 30..39 belong to the first batch; 40..69 are new")

	_, err = s.GetDelivery(ctx, "claims.k35")
	assert.ErrorIs(t, err, store.ErrNotFound, "a record is written once, with its outcome")

	outs := make([]store.DeliveryOutcome, 30)
	for i := range outs {
		outs[i] = store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "batch-b", RunID: "run-2"}
	}
	outs[5] = store.DeliveryOutcome{Status: intake.DeliveryFailed, WorkflowID: "batch-b", RunID: "run-2",
		Error: &intake.Failure{Type: intake.ErrRelationMissing, Message: "Relation 'x' does not exist"}}
	require.NoError(t, s.RecordBatchOutcomes(ctx, ds[40:], outs))
	r, err := s.GetDelivery(ctx, "claims.k45")
	require.NoError(t, err)
	assert.Equal(t, intake.DeliveryFailed, r.Status)
	require.NotNil(t, r.Error)
	assert.Equal(t, intake.ErrRelationMissing, r.Error.Type)
	assert.Equal(t, "batch-b", r.WorkflowID)
	assert.JSONEq(t, `{"i":45}`, string(r.Body), "the record keeps the body for replay")
	r, err = s.GetDelivery(ctx, "claims.k69")
	require.NoError(t, err)
	assert.Equal(t, intake.DeliverySucceeded, r.Status)

	// A retried attempt writes its records again: the existing ones take the outcome it sets.
	outs[5] = store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "batch-b", RunID: "run-2"}
	require.NoError(t, s.RecordBatchOutcomes(ctx, ds[40:], outs))
	r, err = s.GetDelivery(ctx, "claims.k45")
	require.NoError(t, err)
	assert.Equal(t, intake.DeliverySucceeded, r.Status)
	assert.Nil(t, r.Error)
	assert.JSONEq(t, `{"i":45}`, string(r.Body))

	// Claims expire with the records.
	_, _, err = s.Expire(ctx, time.Now().Add(time.Minute), time.Time{})
	require.NoError(t, err)
	again, err = s.ClaimDeliveries(ctx, ds[:1], "batch-c", "run-3")
	require.NoError(t, err)
	assert.Equal(t, []bool{true}, again)
}

// A workflow that finishes before the receiver's queued record is written: the outcome stays,
// and a bulk of accepted records with it in writes the others.
func TestOutcomeBeforeAcceptedRecord(t *testing.T) {
	s, emb, _ := open(t)
	ctx := context.Background()
	delivery := func(id string) intake.Delivery {
		return intake.Delivery{ID: "order." + id, Integration: "order", Key: id, Origin: intake.OriginWebhook,
			Body: []byte(`{"n":"` + id + `"}`), Headers: map[string]string{}, ReceivedAt: time.Now().UTC()}
	}
	done, running := delivery("done"), delivery("running")
	require.NoError(t, s.RecordOutcome(ctx, done, store.DeliveryOutcome{Status: intake.DeliverySucceeded, WorkflowID: "wf-done", RunID: "run"}))
	require.NoError(t, s.RecordAcceptedMany(ctx, []store.Accepted{
		{Delivery: done, WorkflowID: "wf-done", RunID: "run"}, {Delivery: running, WorkflowID: "wf-running", RunID: "run"}}))
	r, err := s.GetDelivery(ctx, done.ID)
	require.NoError(t, err)
	assert.Equal(t, intake.DeliverySucceeded, r.Status, "the outcome is not overwritten")
	assert.JSONEq(t, `{"n":"done"}`, string(r.Body), "and the record has the delivery")
	r, err = s.GetDelivery(ctx, running.ID)
	require.NoError(t, err)
	assert.Equal(t, intake.StatusAccepted, r.Status)

	// another process recorded the outcome: the insert is sent, and its duplicate ignored
	other, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
	require.NoError(t, err)
	defer other.Close(ctx)
	elsewhere := delivery("elsewhere")
	require.NoError(t, other.RecordOutcome(ctx, elsewhere, store.DeliveryOutcome{Status: intake.DeliveryFailed, WorkflowID: "wf", RunID: "run"}))
	require.NoError(t, s.RecordAcceptedMany(ctx, []store.Accepted{{Delivery: elsewhere, WorkflowID: "wf", RunID: "run"}}))
	r, err = s.GetDelivery(ctx, elsewhere.ID)
	require.NoError(t, err)
	assert.Equal(t, intake.DeliveryFailed, r.Status)
}

// A delivery whose record the receiver still holds (Queued) is recorded whole by its outcome,
// in one insert; one whose record exists after all is updated.
func TestOutcomeRecordedWhole(t *testing.T) {
	_, emb, _ := open(t)
	ctx := context.Background()
	s, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
	require.NoError(t, err)
	defer s.Close(ctx)
	s.OneWriteAtATime() // as intake dev: outcomes and records combined in the write turn
	delivery := func(id string) intake.Delivery {
		return intake.Delivery{ID: "whole." + id, Integration: "whole", Key: id, Origin: intake.OriginWebhook,
			Body: []byte(`{"n":"` + id + `"}`), Headers: map[string]string{"x-h": "v"}, ReceivedAt: time.Now().UTC()}
	}
	outcome := func(d intake.Delivery, status string) {
		require.NoError(t, s.RecordOutcome(ctx, d, store.DeliveryOutcome{Status: status, WorkflowID: "wf-" + d.Key, RunID: "run",
			Entities: []intake.EntityChange{{Template: "t", Identifier: d.Key, Outcome: intake.OutcomeCreated}}}))
	}
	get := func(d intake.Delivery) *intake.DeliveryRecord {
		r, err := s.GetDelivery(ctx, d.ID)
		require.NoError(t, err)
		return r
	}

	whole := delivery("whole")
	s.Queued(whole.ID)
	outcome(whole, intake.DeliverySucceeded)
	r := get(whole)
	assert.Equal(t, intake.DeliverySucceeded, r.Status)
	assert.JSONEq(t, `{"n":"whole"}`, string(r.Body), "the whole record: the delivery")
	assert.Equal(t, "v", r.Headers["x-h"])
	require.Len(t, r.Entities, 1, "and its outcome")
	require.NoError(t, s.RecordAcceptedMany(ctx, []store.Accepted{{Delivery: whole, WorkflowID: "wf-whole", RunID: "run"}}))
	assert.Equal(t, intake.DeliverySucceeded, get(whole).Status, "the receiver's record, late, changes nothing")

	written := delivery("written")
	s.Queued(written.ID)
	require.NoError(t, s.RecordAcceptedMany(ctx, []store.Accepted{{Delivery: written, WorkflowID: "wf-written", RunID: "run"}}))
	assert.Equal(t, intake.StatusAccepted, get(written).Status)
	outcome(written, intake.DeliveryFailed)
	assert.Equal(t, intake.DeliveryFailed, get(written).Status, "a written record is updated")

	// still queued here, but written meanwhile by another process (or an earlier run of the key)
	raced := delivery("raced")
	s.Queued(raced.ID)
	other, err := store.Open(ctx, emb.URI(), "intake", store.SecretKey("test-key"))
	require.NoError(t, err)
	defer other.Close(ctx)
	require.NoError(t, other.RecordAccepted(ctx, raced, "wf-raced", "run"))
	outcome(raced, intake.DeliverySucceeded)
	r = get(raced)
	assert.Equal(t, intake.DeliverySucceeded, r.Status, "the insert's duplicate falls back to the update")
	require.Len(t, r.Entities, 1)
}
