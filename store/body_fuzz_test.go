package store

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzBodyEncoding: any body is kept as JSON, text or base64, shown as valid JSON, and given back
// byte for byte.
func FuzzBodyEncoding(f *testing.F) {
	for _, s := range []string{`{"a":1}`, "text", "\xff\x00", "", `"str"`, "[1,2", " {} "} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, enc := encodeBody(b)
		r := (&deliveryDoc{ID: "x", Body: body, Encoding: enc}).record()
		if !json.Valid(r.Body) {
			t.Fatalf("%q (%s) shown as invalid JSON %q", b, enc, r.Body)
		}
		raw, err := r.RawBody()
		if err != nil || !bytes.Equal(raw, b) {
			t.Fatalf("%q (%s) came back as %q, %v", b, enc, raw, err)
		}
	})
}
