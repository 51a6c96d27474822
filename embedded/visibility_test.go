package embedded

import (
	"database/sql"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.temporal.io/server/schema/sqlite"
)

// Trimming drops exactly the unused indexes, and again is a no-op.
func TestTrimVisibility(t *testing.T) {
	file := filepath.Join(t.TempDir(), VisibilityFile)
	require.NoError(t, sqlite.SetupSchema(sqliteConfig(file)))
	indexes := func() []string {
		db, err := sql.Open("sqlite", "file:"+file)
		require.NoError(t, err)
		defer db.Close()
		rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'executions_visibility' AND sql IS NOT NULL`)
		require.NoError(t, err)
		defer rows.Close()
		var out []string
		for rows.Next() {
			var n string
			require.NoError(t, rows.Scan(&n))
			out = append(out, n)
		}
		return out
	}
	before := indexes()
	for _, name := range unusedVisibilityIndexes {
		require.Contains(t, before, name, "the schema has every index the list names")
	}
	require.NoError(t, trimVisibility(file))
	require.NoError(t, trimVisibility(file), "a trimmed file is trimmed again without error")
	after := indexes()
	for _, name := range unusedVisibilityIndexes {
		assert.NotContains(t, after, name)
	}
	for _, keep := range []string{"default_idx", "by_workflow_id", "by_workflow_type", "by_status",
		"by_temporal_namespace_division", "by_keyword_01", "by_keyword_10"} {
		assert.True(t, slices.Contains(after, keep), "keeps %s", keep)
	}
	assert.Len(t, after, len(before)-len(unusedVisibilityIndexes))
}
