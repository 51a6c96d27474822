package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/oklog/ulid/v2"

	"intake/embedded"
	"intake/examples"
	"intake/store"
)

// devGCPercent is intake dev's GOGC unless the environment sets one.
const devGCPercent = 300

// runDev runs the whole stack in this process, with all state under the data folder.
func runDev(ctx context.Context, cfg *settings) error {
	log := cfg.logger()
	if os.Getenv("GOGC") == "" {
		// One process carries the Temporal server, the store, the receiver and the worker, and
		// under load the collector took 9 % of its CPU at Go's default of 100. A larger heap
		// target (a few hundred MB more) buys that back; GOGC set in the environment wins.
		debug.SetGCPercent(devGCPercent)
	}
	var err error
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data folder: %w", err)
	}
	token := cfg.AdminToken
	if token == "" {
		if token, err = keptSecret(filepath.Join(cfg.DataDir, "admin-token")); err != nil {
			return err
		}
	}
	if cfg.SecretKeys == "" && cfg.SecretKey == "" {
		if cfg.SecretKey, err = keptSecret(filepath.Join(cfg.DataDir, "secret-key")); err != nil {
			return err
		}
	}
	started := time.Now()
	var stack []func()
	defer func() {
		for i := len(stack) - 1; i >= 0; i-- {
			stack[i]()
		}
	}()

	mongoURI := cfg.MongoURI
	var ferret *store.Embedded
	if mongoURI == "" {
		quiet := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
		if ferret, err = store.StartEmbedded(filepath.Join(cfg.DataDir, "mongodb"), cfg.MongoAddr, quiet); err != nil {
			return err
		}
		stack = append(stack, ferret.Stop)
		mongoURI = ferret.URI()
	}
	if cfg.StoreWriters == "auto" {
		// The embedded store is this folder's; its only entity writer is this process's worker,
		// unless dev runs without one (--roles none: a cluster for serve workers).
		cfg.StoreWriters = "many"
		if ferret != nil && cfg.hasRole("worker") {
			cfg.StoreWriters = "one"
		}
	}
	if cfg.Kafka == "embedded" {
		kfk, err := embedded.StartKafka(cfg.KafkaAddr, filepath.Join(cfg.DataDir, "kafka"), 3)
		if err != nil {
			return err
		}
		stack = append(stack, kfk.Stop)
		cfg.KafkaBrokers = strings.Join(kfk.Addrs(), ",")
	} else if cfg.Kafka != "" {
		return fmt.Errorf(`--kafka takes "embedded" (or set INTAKE_KAFKA_BROKERS), not %q`, cfg.Kafka)
	}
	tsrv, err := embedded.StartTemporal(embedded.TemporalConfig{
		DatabaseFile: filepath.Join(cfg.DataDir, "temporal", "temporal.db"),
		FrontendAddr: cfg.TemporalAddr,
		Namespace:    cfg.TemporalNamespace,
		LogFile:      filepath.Join(cfg.DataDir, "temporal", "server.log"),
		TLSCertFile:  cfg.FrontendTLSCert,
		TLSKeyFile:   cfg.FrontendTLSKey,
		TLSCAFile:    cfg.FrontendTLSCA,
	})
	if err != nil {
		return err
	}
	stack = append(stack, func() { _ = tsrv.Stop() })
	ui, err := embedded.StartUI(cfg.TemporalUIAddr, tsrv.FrontendAddr(), cfg.TemporalNamespace, cfg.temporalTLS())
	if err != nil {
		return err
	}
	stack = append(stack, ui.Stop)

	if cfg.TemporalUIURL == "" {
		cfg.TemporalUIURL = "http://" + ui.Addr()
	}
	p, err := startProcess(ctx, cfg, log, mongoURI, tsrv.FrontendAddr(), token)
	if err != nil {
		return err
	}
	stopCtx, cancelStop := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancelStop()
	stack = append(stack, func() { p.stop(stopCtx) })
	p.dev = true
	if err := p.connect(ctx); err != nil {
		return err
	}
	if ferret != nil {
		if err := ferret.AddIDIndexes(ctx, cfg.MongoDatabase); err != nil {
			return err
		}
	}
	if err := loadExamplesOnce(ctx, cfg, p); err != nil {
		return err
	}
	p.configured.Store(true)
	if err := waitReady(ctx, p); err != nil {
		return err
	}
	printBanner(cfg, p, "http://"+ui.Addr(), tsrv.FrontendAddr(), mongoURI, token, time.Since(started))
	<-ctx.Done()
	log.Info("shutting down")
	return nil
}

// keptSecret reads a generated secret from path, creating it on the first start.
func keptSecret(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	buf := make([]byte, 32)
	if _, err := rand.Read(buf); err != nil {
		return "", err
	}
	s := hex.EncodeToString(buf)
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep %s: %w", path, err)
	}
	return s, nil
}

// loadExamplesOnce loads examples/ on the first start of an empty data folder.
func loadExamplesOnce(ctx context.Context, cfg *settings, p *process) error {
	marker := filepath.Join(cfg.DataDir, "examples-loaded")
	if _, err := os.Stat(marker); err == nil || !cfg.LoadExamples {
		return nil
	}
	tpls, err := examples.Templates()
	if err != nil {
		return err
	}
	// Relation targets must exist first.
	if err := inRounds(len(tpls), func(i int) error {
		_, err := p.api.ApplyTemplate(ctx, &tpls[i])
		return err
	}); err != nil {
		return fmt.Errorf("load example templates: %w", err)
	}
	ints, err := examples.Integrations()
	if err != nil {
		return err
	}
	for i := range ints {
		if _, err := p.api.ApplyIntegration(ctx, &ints[i]); err != nil {
			return fmt.Errorf("load example integration %s: %w", ints[i].Identifier, err)
		}
	}
	p.log.Info("examples loaded", "templates", len(tpls), "integrations", len(ints))
	return os.WriteFile(marker, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o600)
}

func waitReady(ctx context.Context, p *process) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := p.ready(c)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not ready: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func printBanner(cfg *settings, p *process, uiURL, temporalAddr, mongoURI, token string, took time.Duration) {
	fmt.Printf(`
intake dev is ready (%.1fs)
  receiver + admin API  %s
  console               %s/console/   (sign in with the admin token)
  Temporal Web UI       %s   (namespace %s, task queue intake)
  Temporal frontend     %s
  MongoDB               %s   (database %s)%s
  data folder           %s
  admin token           %s

Try it: post a signed GitHub "repository created" event:

%s

then look at the entity and the audit log:

  curl -s -H 'Authorization: Bearer %s' %s/api/v1/entities/github_repository/octo-org_care_back
  curl -s -H 'Authorization: Bearer %s' %s/api/v1/audit_logs

`, took.Seconds(), p.httpURL, p.httpURL, uiURL, cfg.TemporalNamespace, temporalAddr, mongoURI, cfg.MongoDatabase, kafkaLine(cfg),
		cfg.DataDir, token, signedCurl(p.httpURL), token, p.httpURL, token, p.httpURL)
}

func kafkaLine(cfg *settings) string {
	if cfg.KafkaBrokers == "" {
		return ""
	}
	return "\n  Kafka brokers         " + cfg.KafkaBrokers + "   (group " + cfg.KafkaGroup + ")"
}

// signedCurl builds the example GitHub delivery, signed like GitHub signs it.
func signedCurl(base string) string {
	samples, err := examples.Samples()
	if err != nil || len(samples) == 0 {
		return "(no example samples)"
	}
	s := samples[0]
	var body bytes.Buffer
	if err := json.Compact(&body, s.Body); err != nil {
		return "(bad example sample)"
	}
	mac := hmac.New(sha256.New, []byte("your-webhook-secret"))
	mac.Write(body.Bytes())
	return fmt.Sprintf(`  curl -i -X POST %s/webhooks/%s \
    -H 'Content-Type: application/json' \
    -H 'X-GitHub-Event: repository' \
    -H 'X-GitHub-Delivery: %s' \
    -H 'X-Hub-Signature-256: sha256=%s' \
    --data '%s'`, base, s.Integration, strings.ToLower(ulid.Make().String()), hex.EncodeToString(mac.Sum(nil)), body.String())
}
