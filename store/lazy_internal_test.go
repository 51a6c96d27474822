package store

import (
	"bytes"
	"context"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
)

// countingHandler counts WithAttrs calls on the handler FerretDB's logger wraps.
type countingHandler struct {
	slog.Handler
	withs *int
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*h.withs++
	return countingHandler{h.Handler.WithAttrs(as), h.withs}
}

func TestLazyAttrs(t *testing.T) {
	var out bytes.Buffer
	withs := 0
	log := slog.New(lazyAttrs{Handler: countingHandler{slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelInfo}), &withs}})

	// what FerretDB does around every SQL statement: attributes for a debug line
	log.With("args", []any{map[string]any{"big": "document"}}).DebugContext(context.Background(), ">>> SELECT")
	assert.Zero(t, withs, "attributes of a line nobody handles are never formatted")
	assert.Empty(t, out.String())

	log.With("id", 7).WithGroup("conn").Warn("slow", "ms", 30)
	assert.Equal(t, 1, withs, "formatted once a line is handled")
	assert.JSONEq(t, `{"level":"WARN","msg":"slow","id":7,"conn":{"ms":30}}`, dropTime(t, out.Bytes()))
}

func dropTime(t *testing.T, line []byte) string {
	t.Helper()
	i, j := bytes.Index(line, []byte(`"time":`)), bytes.Index(line, []byte(`"level"`))
	if i < 0 || j < i {
		return string(line)
	}
	return string(append(append([]byte{}, line[:i]...), line[j:]...))
}
