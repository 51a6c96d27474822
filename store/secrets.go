package store

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"

	"intake"
)

// Sealed secrets are AES-256-GCM, nonce prepended, base64. v2 binds each ciphertext to its
// integration and field (associated data), so a ciphertext copied elsewhere does not open; v1
// (no associated data) is still read, and RotateSecrets rewrites it as v2.
const (
	sealedPrefix   = "enc:v2:"
	sealedPrefixV1 = "enc:v1:"
	sealedMarker   = "enc:v" // any version: one this build does not know is not a clear secret
)

// ErrUndecryptable marks an integration whose secrets no configured key opens.
var ErrUndecryptable = errors.New("cannot decrypt its secrets")

// UndecryptableError is an integration whose secrets no configured key opens; it wraps
// ErrUndecryptable and keeps the integration's other fields (its mappings can still be read).
type UndecryptableError struct {
	Integration *intake.Integration // every secret replaced by intake.Masked
	Err         error
}

func (e *UndecryptableError) Error() string { return e.Err.Error() }
func (e *UndecryptableError) Unwrap() error { return e.Err }

// SecretKey turns one key of INTAKE_SECRET_KEYS into an AES-256 key: 64 hex characters are used
// as they are, any other text is hashed with SHA-256.
func SecretKey(s string) []byte {
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b
	}
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

// SecretKeys parses INTAKE_SECRET_KEYS: comma-separated keys, newest first.
func SecretKeys(list string) [][]byte {
	var keys [][]byte
	for _, k := range strings.Split(list, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, SecretKey(k))
		}
	}
	return keys
}

func aeadFor(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts with the newest key; aad names the integration and field.
func (s *Store) seal(plain, aad string) (string, error) {
	if plain == "" {
		return "", nil
	}
	if len(s.keys) == 0 {
		return "", errors.New("no secret key configured (INTAKE_SECRET_KEYS)")
	}
	g, err := aeadFor(s.keys[0])
	if err != nil {
		return "", err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return sealedPrefix + base64.StdEncoding.EncodeToString(g.Seal(nonce, nonce, []byte(plain), []byte(aad))), nil
}

// open decrypts with whichever configured key sealed the value; current is false when the value
// should be rewritten (v1, another key than the newest, or stored in the clear).
func (s *Store) open(sealed, aad string) (plain string, current bool, err error) {
	var ad []byte
	rest, ok := strings.CutPrefix(sealed, sealedPrefix)
	if ok {
		ad = []byte(aad)
	} else if rest, ok = strings.CutPrefix(sealed, sealedPrefixV1); !ok {
		if strings.HasPrefix(sealed, sealedMarker) {
			return "", false, fmt.Errorf("%w: %s is sealed in a format this version does not know", ErrUndecryptable, fieldOf(aad))
		}
		return sealed, sealed == "", nil // written before encryption was configured
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return "", false, fmt.Errorf("%w: %s is corrupt", ErrUndecryptable, fieldOf(aad))
	}
	if len(s.keys) == 0 {
		return "", false, fmt.Errorf("%w: no key is configured (INTAKE_SECRET_KEYS)", ErrUndecryptable)
	}
	for i, key := range s.keys {
		g, err := aeadFor(key)
		if err != nil {
			return "", false, err
		}
		if len(raw) < g.NonceSize() {
			return "", false, fmt.Errorf("%w: %s is corrupt", ErrUndecryptable, fieldOf(aad))
		}
		if p, err := g.Open(nil, raw[:g.NonceSize()], raw[g.NonceSize():], ad); err == nil {
			return string(p), i == 0 && ad != nil, nil
		}
	}
	// A v2 value also fails here when it was copied from another integration or field.
	return "", false, fmt.Errorf("%w: the key it was written with is not in INTAKE_SECRET_KEYS (%s)", ErrUndecryptable, fieldOf(aad))
}

func fieldOf(aad string) string {
	_, field, _ := strings.Cut(aad, "/")
	return field
}

// sealSecrets returns a copy of the integration with its secrets encrypted.
func (s *Store) sealSecrets(in *intake.Integration) (*intake.Integration, error) {
	return mapSecrets(in, func(field, v string) (string, error) {
		return s.seal(v, in.Identifier+"/"+field)
	})
}

// openSecrets returns a copy with its secrets decrypted; stale is true when some secret is not
// sealed as v2 under the newest key.
func (s *Store) openSecrets(in *intake.Integration) (out *intake.Integration, stale bool, err error) {
	out, err = mapSecrets(in, func(field, v string) (string, error) {
		p, current, err := s.open(v, in.Identifier+"/"+field)
		stale = stale || !current
		return p, err
	})
	if err != nil {
		masked, _ := mapSecrets(in, func(_, v string) (string, error) {
			if v == "" {
				return "", nil
			}
			return intake.Masked, nil
		})
		return nil, false, &UndecryptableError{Integration: masked, Err: err}
	}
	return out, stale, nil
}

// mapSecrets applies f to every secret field, named as the API names it.
func mapSecrets(in *intake.Integration, f func(field, v string) (string, error)) (*intake.Integration, error) {
	out := *in
	var err error
	if in.Security != nil {
		sec := *in.Security
		if sec.SignatureValue, err = f("security.signature_value", sec.SignatureValue); err != nil {
			return nil, err
		}
		sec.Secrets = make([]string, len(in.Security.Secrets))
		for i, v := range in.Security.Secrets {
			if sec.Secrets[i], err = f("security.secrets["+strconv.Itoa(i)+"]", v); err != nil {
				return nil, err
			}
		}
		if in.Security.Secrets == nil {
			sec.Secrets = nil
		}
		out.Security = &sec
	}
	if in.Credentials != nil {
		out.Credentials = make(map[string]string, len(in.Credentials))
		for name, v := range in.Credentials {
			if out.Credentials[name], err = f("credentials."+name, v); err != nil {
				return nil, err
			}
		}
	}
	return &out, nil
}

// RotateSecrets re-encrypts every integration whose secrets are not all sealed as v2 under the
// newest key, and returns how many it rewrote; integrations no key opens are left as they are
// and reported in broken. Running it again rewrites nothing. The config version is not bumped:
// the secrets themselves do not change, so caches stay valid.
func (s *Store) RotateSecrets(ctx context.Context) (rotated int, broken map[string]error, err error) {
	if len(s.keys) == 0 {
		return 0, nil, errors.New("no secret key configured (INTAKE_SECRET_KEYS)")
	}
	docs, err := listDocs(ctx, s, colIntegrations)
	if err != nil {
		return 0, nil, err
	}
	broken = map[string]error{}
	for _, d := range docs {
		done, err := s.rotateOne(ctx, d)
		if errors.Is(err, ErrUndecryptable) {
			broken[d.ID] = err
			continue
		}
		if err != nil {
			return rotated, broken, err
		}
		if done {
			rotated++
		}
	}
	return rotated, broken, nil
}

// rotateOne rewrites one integration only if its stored body is still the one read, so an
// admin write racing the rotation is never overwritten (it is retried from the new body).
func (s *Store) rotateOne(ctx context.Context, d configDoc) (bool, error) {
	for attempt := 0; ; attempt++ {
		var in intake.Integration
		if err := json.Unmarshal([]byte(d.Body), &in); err != nil {
			return false, fmt.Errorf("decode %s/%s: %w", colIntegrations, d.ID, err)
		}
		open, stale, err := s.openSecrets(&in)
		if err != nil {
			return false, fmt.Errorf("integration %s: %w", d.ID, err)
		}
		if !stale {
			return false, nil
		}
		sealed, err := s.sealSecrets(open)
		if err != nil {
			return false, fmt.Errorf("integration %s: %w", d.ID, err)
		}
		body, err := json.Marshal(sealed)
		if err != nil {
			return false, fmt.Errorf("encode %s/%s: %w", colIntegrations, d.ID, err)
		}
		res, err := s.db.Collection(colIntegrations).UpdateOne(ctx,
			bson.D{{Key: "_id", Value: d.ID}, {Key: "body", Value: d.Body}},
			bson.D{{Key: "$set", Value: bson.D{{Key: "body", Value: string(body)}}}})
		if err != nil {
			return false, fmt.Errorf("rewrite %s/%s: %w", colIntegrations, d.ID, err)
		}
		if res.MatchedCount == 1 {
			return true, nil
		}
		if attempt == 2 {
			return false, fmt.Errorf("integration %s changed during the rotation three times; run it again", d.ID)
		}
		cur, err := getDoc(ctx, s, colIntegrations, d.ID)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		d = *cur
	}
}
