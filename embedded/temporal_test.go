package embedded

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestVisibilityDatabase(t *testing.T) {
	t.Run("a new data folder splits visibility into its own file", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "temporal.db")
		require.Equal(t, filepath.Join(filepath.Dir(db), VisibilityFile), VisibilityDatabase(db))
	})
	t.Run("a folder made before the split keeps visibility in the execution file", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "temporal.db")
		require.NoError(t, os.WriteFile(db, nil, 0o600))
		require.Equal(t, db, VisibilityDatabase(db))
	})
	t.Run("a split folder stays split", func(t *testing.T) {
		dir := t.TempDir()
		db := filepath.Join(dir, "temporal.db")
		require.NoError(t, os.WriteFile(db, nil, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, VisibilityFile), nil, 0o600))
		require.Equal(t, filepath.Join(dir, VisibilityFile), VisibilityDatabase(db))
	})
}
