package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"intake"
)

// sealedPrefix marks a secret encrypted at rest (AES-256-GCM, nonce prepended, base64).
const sealedPrefix = "enc:v1:"

// SecretKey turns INTAKE_SECRET_KEY into an AES-256 key: 64 hex characters are used as they
// are, any other text is hashed with SHA-256.
func SecretKey(s string) []byte {
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b
	}
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}

func (s *Store) aead() (cipher.AEAD, error) {
	if len(s.secretKey) == 0 {
		return nil, errors.New("no secret key configured (INTAKE_SECRET_KEY)")
	}
	block, err := aes.NewCipher(s.secretKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

func (s *Store) seal(plain string) (string, error) {
	if plain == "" || strings.HasPrefix(plain, sealedPrefix) {
		return plain, nil
	}
	g, err := s.aead()
	if err != nil {
		return "", err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return sealedPrefix + base64.StdEncoding.EncodeToString(g.Seal(nonce, nonce, []byte(plain), nil)), nil
}

func (s *Store) open(sealed string) (string, error) {
	rest, ok := strings.CutPrefix(sealed, sealedPrefix)
	if !ok {
		return sealed, nil // written before encryption was configured
	}
	g, err := s.aead()
	if err != nil {
		return "", err
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil || len(raw) < g.NonceSize() {
		return "", errors.New("sealed secret is corrupt")
	}
	plain, err := g.Open(nil, raw[:g.NonceSize()], raw[g.NonceSize():], nil)
	if err != nil {
		return "", errors.New("cannot decrypt a secret: is INTAKE_SECRET_KEY the key it was written with?")
	}
	return string(plain), nil
}

// sealSecrets returns a copy of the integration with its secrets encrypted.
func (s *Store) sealSecrets(in *intake.Integration) (*intake.Integration, error) {
	return s.mapSecrets(in, s.seal)
}

func (s *Store) openSecrets(in *intake.Integration) (*intake.Integration, error) {
	return s.mapSecrets(in, s.open)
}

func (s *Store) mapSecrets(in *intake.Integration, f func(string) (string, error)) (*intake.Integration, error) {
	out := *in
	var err error
	if in.Security != nil {
		sec := *in.Security
		if sec.SignatureValue, err = f(sec.SignatureValue); err != nil {
			return nil, fmt.Errorf("integration %s: %w", in.Identifier, err)
		}
		sec.Secrets = make([]string, len(in.Security.Secrets))
		for i, v := range in.Security.Secrets {
			if sec.Secrets[i], err = f(v); err != nil {
				return nil, fmt.Errorf("integration %s: %w", in.Identifier, err)
			}
		}
		out.Security = &sec
	}
	if in.Credentials != nil {
		out.Credentials = make(map[string]string, len(in.Credentials))
		for name, v := range in.Credentials {
			if out.Credentials[name], err = f(v); err != nil {
				return nil, fmt.Errorf("integration %s: credential %s: %w", in.Identifier, name, err)
			}
		}
	}
	return &out, nil
}
