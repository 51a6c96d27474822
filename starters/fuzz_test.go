package starters_test

import (
	"testing"

	"intake/starters"
)

// FuzzDeliveryKey: every key becomes URL-safe, bounded and stable; a safe key is kept as it is.
func FuzzDeliveryKey(f *testing.F) {
	for _, s := range []string{"", "abc", "a/b", "ä", "x.y_z~-1", "%2F..%2F", string(make([]byte, 200))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		k := starters.DeliveryKey(raw)
		if k == "" || len(k) > 160 {
			t.Fatalf("key %q of %q: empty or too long", k, raw)
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
				t.Fatalf("key %q of %q has %q", k, raw, c)
			}
		}
		if starters.DeliveryKey(raw) != k || starters.DeliveryKey(k) != k {
			t.Fatalf("key of %q is not stable", raw)
		}
	})
}
