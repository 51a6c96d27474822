package activities_test

import (
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"

	"intake/activities"
)

func TestAuditIDsAreDeterministicPerRun(t *testing.T) {
	a := activities.AuditID("wf", "run1", 0, 1)
	assert.Equal(t, a, activities.AuditID("wf", "run1", 0, 1))
	assert.NotEqual(t, a, activities.AuditID("wf", "run2", 0, 1))
	assert.NotEqual(t, a, activities.AuditID("wf", "run1", 1, 0))
	assert.Len(t, a, 32)
	_, err := hex.DecodeString(a)
	assert.NoError(t, err)
}
