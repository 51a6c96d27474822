package intake_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
)

// Workflow input shows a JSON body as JSON, text as text, binary as base64, and always gives back
// the exact bytes the signature was computed over.
func TestDeliveryBodyInWorkflowInput(t *testing.T) {
	for name, tc := range map[string]struct {
		body     string
		encoding string
	}{
		"compact JSON is shown as JSON":              {`{"a":1,"b":[true,null]}`, ""},
		"pretty JSON keeps its bytes, shown as text": {"{\n  \"a\": 1\n}", "text"},
		"JSON with < is shown as text (no escaping)": {`{"html":"<b>"}`, "text"},
		"plain text": {"hello", "text"},
		"binary":     {"\xff\x00\xfe", "base64"},
		"empty":      {"", "text"},
	} {
		t.Run(name, func(t *testing.T) {
			d := intake.Delivery{ID: "i.k", Body: []byte(tc.body), Headers: map[string]string{}}
			raw, err := json.Marshal(d)
			require.NoError(t, err)
			var shown struct {
				Body         json.RawMessage `json:"body"`
				BodyEncoding string          `json:"body_encoding"`
			}
			require.NoError(t, json.Unmarshal(raw, &shown))
			assert.Equal(t, tc.encoding, shown.BodyEncoding)
			if tc.encoding == "" {
				assert.JSONEq(t, tc.body, string(shown.Body), "readable as JSON")
			}
			var back intake.Delivery
			require.NoError(t, json.Unmarshal(raw, &back))
			assert.Equal(t, tc.body, string(back.Body), "exact bytes back")
			assert.Equal(t, "i.k", back.ID)
		})
	}
}
