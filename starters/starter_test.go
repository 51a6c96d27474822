package starters_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"intake/starters"
)

func TestDeliveryKey(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"url-safe key is kept", "72d3162e-cc78-11e3-81ab-4c9367dc0958", "72d3162e-cc78-11e3-81ab-4c9367dc0958"},
		{"dots, tildes and underscores are url-safe", "topic.0.42_a~b", "topic.0.42_a~b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { assert.Equal(t, tt.want, starters.DeliveryKey(tt.in)) })
	}
	for _, raw := range []string{"a/b", "with space", "ünïcode", "a?b#c", strings.Repeat("x", 500)} {
		k := starters.DeliveryKey(raw)
		assert.Regexp(t, `^[0-9a-f]{32}$`, k, "%q becomes a hex digest", raw)
		assert.Equal(t, k, starters.DeliveryKey(raw), "the digest is stable")
	}
	assert.Equal(t, "ingest.github_repos.abc", starters.WorkflowID("github_repos", "abc"))
}
