package mappings_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/examples"
	"intake/mappings"
)

type brokenSource struct {
	ints   []intake.Integration
	broken map[string]error
}

func (brokenSource) ConfigVersion(context.Context) (int64, error) { return 1, nil }
func (s brokenSource) LoadConfig(context.Context) ([]intake.Template, []intake.Integration, map[string]error, error) {
	tpls, err := examples.Templates()
	return tpls, s.ints, s.broken, err
}

// An integration the store cannot read is kept as broken with its reason; the others load.
func TestCatalogKeepsUnreadableIntegrationsAsBroken(t *testing.T) {
	mapping := []intake.Mapping{{Template: "team", Entity: intake.EntityMapping{Identifier: ".id"}}}
	src := brokenSource{
		ints: []intake.Integration{
			{Identifier: "fine", Security: &intake.Security{Scheme: "none", AllowUnsigned: true}, Mappings: mapping},
			{Identifier: "invalid", Security: &intake.Security{Scheme: "none", AllowUnsigned: true},
				Mappings: []intake.Mapping{{Template: "nowhere", Entity: intake.EntityMapping{Identifier: ".id"}}}},
		},
		broken: map[string]error{"locked": errors.New("cannot decrypt its secrets: the key it was written with is not in INTAKE_SECRET_KEYS (security.signature_value)")},
	}
	cat := mappings.NewCatalog(src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, cat.Refresh(context.Background()))
	require.True(t, cat.Ready())

	_, err := cat.Program("fine")
	require.NoError(t, err)
	_, err = cat.Program("locked")
	require.Error(t, err)
	assert.NotErrorIs(t, err, mappings.ErrUnknownIntegration)
	assert.Equal(t, "integration locked cannot decrypt its secrets: the key it was written with is not in INTAKE_SECRET_KEYS (security.signature_value)", err.Error())
	_, err = cat.Program("invalid")
	assert.ErrorContains(t, err, "integration invalid is invalid: ")
	_, err = cat.Program("nope")
	assert.ErrorIs(t, err, mappings.ErrUnknownIntegration)

	broken := cat.Broken()
	assert.Len(t, broken, 2)
	assert.Equal(t, "cannot decrypt its secrets: the key it was written with is not in INTAKE_SECRET_KEYS (security.signature_value)", broken["locked"])
	assert.Contains(t, broken["invalid"], "is invalid: ")
	assert.Len(t, cat.Programs(), 1)
}
