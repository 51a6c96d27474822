package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"intake/store"
)

// runRotateSecrets re-encrypts every integration's secrets with the newest key of
// INTAKE_SECRET_KEYS. Without --mongodb-uri it reaches the running `intake dev`'s embedded
// server, and without keys it uses that folder's kept key (which upgrades old formats).
func runRotateSecrets(ctx context.Context, cfg *settings) error {
	keys, err := cfg.secretKeys()
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, "secret-key"))
		if err != nil {
			return errors.New("rotate-secrets needs INTAKE_SECRET_KEYS (or --secret-keys), newest first")
		}
		keys = [][]byte{store.SecretKey(strings.TrimSpace(string(b)))}
	}
	uri := cfg.MongoURI
	if uri == "" {
		uri = "mongodb://" + cfg.MongoAddr + "/"
	}
	s, err := store.Open(ctx, uri, cfg.MongoDatabase, keys...)
	if err != nil {
		return err
	}
	defer s.Close(context.Background())
	rotated, broken, err := s.RotateSecrets(ctx)
	fmt.Printf("re-encrypted %d integration(s) with the newest key\n", rotated)
	if err != nil {
		return err
	}
	if len(broken) > 0 {
		ids := make([]string, 0, len(broken))
		for id := range broken {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			fmt.Fprintln(os.Stderr, broken[id])
		}
		return fmt.Errorf("%d integration(s) left as they are: no key in INTAKE_SECRET_KEYS decrypts them (%s)", len(broken), strings.Join(ids, ", "))
	}
	return nil
}
