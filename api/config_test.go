package api

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake"
	"intake/mappings"
)

func TestMaskedSecretsKeepTheStoredValueOrAreRefused(t *testing.T) {
	prev := &intake.Integration{
		Security:    &intake.Security{SignatureValue: "stored", Secrets: []string{"next"}},
		Credentials: map[string]string{"token": "stored-token"},
	}
	in := &intake.Integration{
		Security:    &intake.Security{SignatureValue: intake.Masked, Secrets: []string{intake.Masked, intake.Masked}},
		Credentials: map[string]string{"token": intake.Masked, "new": intake.Masked, "plain": "p"},
	}
	err := keepMaskedSecrets(in, prev)
	var ce *mappings.ConfigError
	require.True(t, errors.As(err, &ce), "%v", err)
	mask := `"********" is the API's mask, not a secret; send the secret`
	assert.Equal(t, []mappings.FieldError{
		{Field: "security.secrets[1]", Message: mask},
		{Field: "credentials.new", Message: mask},
	}, ce.Problems)
	assert.Equal(t, "stored", in.Security.SignatureValue)
	assert.Equal(t, "next", in.Security.Secrets[0])
	assert.Equal(t, "stored-token", in.Credentials["token"])

	fresh := &intake.Integration{Security: &intake.Security{SignatureValue: intake.Masked}}
	err = keepMaskedSecrets(fresh, nil)
	assert.EqualError(t, err, `security.signature_value: "********" is the API's mask, not a secret; send the secret`)
	assert.NoError(t, keepMaskedSecrets(&intake.Integration{Security: &intake.Security{SignatureValue: "s"}}, nil))
}
