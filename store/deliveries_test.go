package store_test

import (
	"context"
	"encoding/json"
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
		"empty":  {},
	}
	wantEnc := map[string]string{"json": intake.BodyJSON, "text": intake.BodyText, "binary": intake.BodyBase64, "empty": intake.BodyText}
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
