package workflows

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"intake"
	"intake/activities"
)

func TestAuditInputStaysUnderThePayloadLimit(t *testing.T) {
	big := []byte(`{"pad":"` + strings.Repeat("x", 1<<20) + `"}`)
	props := map[string]any{"document": strings.Repeat("y", 900<<10)}
	in := activities.AuditInput{
		Delivery: intake.Delivery{ID: "i.k", Origin: intake.OriginWebhook, Body: big},
		Result:   intake.IngestResult{Entities: []intake.EntityChange{{Identifier: "a", Outcome: intake.OutcomeCreated, Properties: props}}},
	}
	out := compact(in)
	b, _ := json.Marshal(out)
	assert.LessOrEqual(t, len(b), maxAuditInput)
	assert.Nil(t, out.Delivery.Body, "a webhook's body was recorded at receipt")
	assert.Equal(t, props, out.Result.Entities[0].Properties, "entities keep their fields when the body was enough")

	in.Delivery.Origin = intake.OriginKafka // a stream's record is written by Audit: the body stays
	out = compact(in)
	b, _ = json.Marshal(out)
	assert.LessOrEqual(t, len(b), maxAuditInput)
	assert.Equal(t, big, out.Delivery.Body)
	assert.Nil(t, out.Result.Entities[0].Properties)
	assert.Equal(t, intake.OutcomeCreated, out.Result.Entities[0].Outcome)

	small := activities.AuditInput{Delivery: intake.Delivery{Body: []byte(`{}`), Origin: intake.OriginWebhook}}
	assert.Equal(t, small, compact(small), "small inputs are untouched")
}
