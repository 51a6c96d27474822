package store_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"intake"
	"intake/store"
)

// Secrets at rest: ciphertexts bound to their place, v1 still read, key rotation, and one
// integration no key opens leaving the others readable. Each subtest has its own database.
func TestSecretsAtRest(t *testing.T) {
	_, emb, _ := open(t)
	ctx := context.Background()
	withKeys := func(t *testing.T, db, keys string) *store.Store {
		t.Helper()
		s, err := store.Open(ctx, emb.URI(), db, store.SecretKeys(keys)...)
		require.NoError(t, err)
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return s
	}
	raw := rawIntegrations(t, emb.URI())
	mapping := []intake.Mapping{{Template: "team", Entity: intake.EntityMapping{Identifier: ".id"}}}
	signed := func(id, secret string) *intake.Integration {
		return &intake.Integration{Identifier: id, Mappings: mapping,
			Security:    &intake.Security{SignatureHeaderName: "X-Sig", SignatureValue: secret, Secrets: []string{secret + "-next"}},
			Credentials: map[string]string{"token": secret + "-token"}}
	}

	t.Run("a ciphertext copied to another integration or field does not decrypt", func(t *testing.T) {
		s := withKeys(t, "aad", "key-a")
		_, err := s.PutIntegration(ctx, signed("one", "s3cret-one"))
		require.NoError(t, err)
		_, err = s.PutIntegration(ctx, signed("two", "s3cret-two"))
		require.NoError(t, err)
		one, two := raw.get(t, "aad", "one"), raw.get(t, "aad", "two")
		assert.Contains(t, one, `"signature_value":"enc:v2:`)
		assert.NotContains(t, one, "s3cret")

		// Same key, but one's ciphertext in two's place.
		copied := setJSON(t, two, func(m map[string]any) {
			m["security"].(map[string]any)["signature_value"] = getJSON(t, one)["security"].(map[string]any)["signature_value"]
		})
		raw.set(t, "aad", "two", copied)
		_, err = s.GetIntegration(ctx, "two")
		require.ErrorIs(t, err, store.ErrUndecryptable)
		assert.Contains(t, err.Error(), "security.signature_value")
		assert.NotContains(t, err.Error(), "s3cret")

		// Two's own ciphertexts, swapped between its fields.
		swapped := setJSON(t, two, func(m map[string]any) {
			sec := m["security"].(map[string]any)
			next := sec["secrets"].([]any)
			sec["signature_value"], next[0] = next[0], sec["signature_value"]
		})
		raw.set(t, "aad", "two", swapped)
		_, err = s.GetIntegration(ctx, "two")
		require.ErrorIs(t, err, store.ErrUndecryptable)

		raw.set(t, "aad", "two", two)
		got, err := s.GetIntegration(ctx, "two")
		require.NoError(t, err)
		assert.Equal(t, "s3cret-two", got.Security.SignatureValue)
		assert.Equal(t, []string{"s3cret-two-next"}, got.Security.Secrets)
		assert.Equal(t, "s3cret-two-token", got.Credentials["token"])
	})

	t.Run("v1 secrets (no associated data) are still read, and rotation rewrites them as v2", func(t *testing.T) {
		s := withKeys(t, "v1", "key-a")
		body := `{"identifier":"legacy","security":{"signature_header_name":"X-Sig","signature_value":"` + sealV1(t, "key-a", "old-s3cret") +
			`"},"credentials":{"token":"` + sealV1(t, "key-a", "old-token") + `"},"mappings":[]}`
		raw.set(t, "v1", "legacy", body)
		got, err := s.GetIntegration(ctx, "legacy")
		require.NoError(t, err)
		assert.Equal(t, "old-s3cret", got.Security.SignatureValue)
		assert.Equal(t, "old-token", got.Credentials["token"])

		n, broken, err := s.RotateSecrets(ctx)
		require.NoError(t, err)
		assert.Empty(t, broken)
		assert.Equal(t, 1, n)
		after := raw.get(t, "v1", "legacy")
		assert.NotContains(t, after, "enc:v1:")
		assert.Contains(t, after, "enc:v2:")
		got, err = s.GetIntegration(ctx, "legacy")
		require.NoError(t, err)
		assert.Equal(t, "old-s3cret", got.Security.SignatureValue)
		assert.Equal(t, "old-token", got.Credentials["token"])
		n, _, err = s.RotateSecrets(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "idempotent")
	})

	t.Run("rotation: written with A, read with B,A, re-encrypted with B, read with B alone", func(t *testing.T) {
		a := withKeys(t, "rotation", "key-a")
		_, err := a.PutIntegration(ctx, signed("r1", "s3cret-r1"))
		require.NoError(t, err)
		_, err = a.PutIntegration(ctx, &intake.Integration{Identifier: "r2", Mappings: mapping,
			Security: &intake.Security{Scheme: "none", AllowUnsigned: true}})
		require.NoError(t, err)

		ba := withKeys(t, "rotation", "key-b, key-a")
		got, err := ba.GetIntegration(ctx, "r1")
		require.NoError(t, err)
		assert.Equal(t, "s3cret-r1", got.Security.SignatureValue)
		b := withKeys(t, "rotation", "key-b")
		_, err = b.GetIntegration(ctx, "r1")
		require.ErrorIs(t, err, store.ErrUndecryptable, "B alone before the rotation")

		before := raw.get(t, "rotation", "r1")
		n, broken, err := ba.RotateSecrets(ctx)
		require.NoError(t, err)
		assert.Empty(t, broken)
		assert.Equal(t, 1, n, "r2 has no secret")
		assert.NotEqual(t, before, raw.get(t, "rotation", "r1"))
		n, _, err = ba.RotateSecrets(ctx)
		require.NoError(t, err)
		assert.Zero(t, n, "idempotent")

		got, err = b.GetIntegration(ctx, "r1")
		require.NoError(t, err)
		assert.Equal(t, "s3cret-r1", got.Security.SignatureValue)
		assert.Equal(t, []string{"s3cret-r1-next"}, got.Security.Secrets)
		assert.Equal(t, "s3cret-r1-token", got.Credentials["token"])
		_, err = a.GetIntegration(ctx, "r1")
		assert.ErrorIs(t, err, store.ErrUndecryptable, "A no longer opens it")
	})

	t.Run("an integration no key opens leaves the others listed", func(t *testing.T) {
		a := withKeys(t, "partial", "key-a")
		b := withKeys(t, "partial", "key-b")
		_, err := a.PutIntegration(ctx, signed("p_locked", "s3cret-locked"))
		require.NoError(t, err)
		_, err = b.PutIntegration(ctx, signed("p_signed", "s3cret-signed"))
		require.NoError(t, err)
		_, err = b.PutIntegration(ctx, &intake.Integration{Identifier: "p_open", Mappings: mapping,
			Security: &intake.Security{Scheme: "none", AllowUnsigned: true}})
		require.NoError(t, err)

		ints, broken, err := b.ListIntegrations(ctx)
		require.NoError(t, err)
		var ids []string
		for _, in := range ints {
			ids = append(ids, in.Identifier)
		}
		assert.Equal(t, []string{"p_open", "p_signed"}, ids)
		assert.Equal(t, "s3cret-signed", ints[1].Security.SignatureValue)
		require.Len(t, broken, 1)
		err = broken["p_locked"]
		require.ErrorIs(t, err, store.ErrUndecryptable)
		assert.Equal(t, "cannot decrypt its secrets: the key it was written with is not in INTAKE_SECRET_KEYS (security.signature_value)", err.Error())
		var u *store.UndecryptableError
		require.True(t, errors.As(err, &u))
		assert.Equal(t, intake.Masked, u.Integration.Security.SignatureValue)
		assert.Equal(t, []string{intake.Masked}, u.Integration.Security.Secrets)
		assert.Equal(t, map[string]string{"token": intake.Masked}, u.Integration.Credentials)
		assert.Equal(t, mapping, u.Integration.Mappings, "the rest of it is still readable")

		_, ints, broken, err = b.LoadConfig(ctx)
		require.NoError(t, err)
		assert.Len(t, ints, 2)
		assert.Len(t, broken, 1)

		before := raw.get(t, "partial", "p_locked")
		n, broken, err := b.RotateSecrets(ctx)
		require.NoError(t, err)
		assert.Zero(t, n)
		assert.ErrorIs(t, broken["p_locked"], store.ErrUndecryptable)
		assert.Equal(t, before, raw.get(t, "partial", "p_locked"), "left as it is")

		none := withKeys(t, "partial", "")
		_, err = none.PutIntegration(ctx, signed("p_new", "s3cret"))
		assert.ErrorContains(t, err, "no secret key configured")
		ints, broken, err = none.ListIntegrations(ctx)
		require.NoError(t, err)
		assert.Len(t, ints, 1, "p_open")
		assert.Len(t, broken, 2)
	})
}

// sealV1 seals the way enc:v1: did: AES-256-GCM, no associated data.
func sealV1(t *testing.T, key, plain string) string {
	block, err := aes.NewCipher(store.SecretKey(key))
	require.NoError(t, err)
	g, err := cipher.NewGCM(block)
	require.NoError(t, err)
	nonce := make([]byte, g.NonceSize())
	_, err = rand.Read(nonce)
	require.NoError(t, err)
	return "enc:v1:" + base64.StdEncoding.EncodeToString(g.Seal(nonce, nonce, []byte(plain), nil))
}

// rawStore reads and writes integration documents as stored, bypassing the store.
type rawStore struct{ c *mongo.Client }

func rawIntegrations(t *testing.T, uri string) rawStore {
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Disconnect(context.Background()) })
	return rawStore{c: c}
}

func (r rawStore) get(t *testing.T, db, id string) string {
	var doc struct {
		Body string `bson:"body"`
	}
	err := r.c.Database(db).Collection("integrations").FindOne(context.Background(), bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	require.NoError(t, err)
	return doc.Body
}

func (r rawStore) set(t *testing.T, db, id, body string) {
	_, err := r.c.Database(db).Collection("integrations").ReplaceOne(context.Background(), bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "_id", Value: id}, {Key: "body", Value: body}, {Key: "updated_at", Value: time.Now().UTC()}},
		options.Replace().SetUpsert(true))
	require.NoError(t, err)
}

func getJSON(t *testing.T, body string) map[string]any {
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(body), &m))
	return m
}

func setJSON(t *testing.T, body string, edit func(map[string]any)) string {
	m := getJSON(t, body)
	edit(m)
	out, err := json.Marshal(m)
	require.NoError(t, err)
	return string(out)
}
