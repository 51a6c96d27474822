// Command intake is the ingestion worker: `intake dev` runs everything in one process on this
// machine; `intake serve` runs the receiver and worker roles against outside services.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

const usage = `intake turns webhook, Kafka and Pub/Sub deliveries into catalog entities, one Temporal
workflow per delivery.

Usage:
  intake dev    [flags]   everything on this machine: embedded Temporal (+ Web UI), embedded
                          MongoDB-protocol server, receiver, admin API and worker
  intake serve  [flags]   production roles against a Temporal cluster and MongoDB
  intake apply -f FILE|DIR
                          create or update templates and integrations (JSON or YAML; idempotent)
  intake replay ID        replay one stored delivery against the current configuration
  intake replay --integration ID [--status failed] [--from T] [--to T] [--wait]
                          replay every matching delivery (a bulk replay workflow)
  intake test-mapping --integration ID --payload FILE [--headers k=v,...]
                          dry run: the entities a payload would produce; writes nothing
  intake rotate-secrets [--mongodb-uri URI] [--secret-keys NEW,OLD]
                          re-encrypt every integration's secrets with the newest key
                          (idempotent; without a URI: the running intake dev's store)
  intake probe URL        exit 0 when URL answers 200 (container healthchecks: the image has no curl)
  intake help             this text

The admin commands read --server ($INTAKE_SERVER, default http://127.0.0.1:8080) and --token
($INTAKE_ADMIN_TOKEN, default: ./.intake/admin-token).

Run "intake dev -h", "intake serve -h" or "intake rotate-secrets -h" for the flags; each has an
environment variable.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// A clean stop takes a few seconds; should a server hang, the process still ends within
		// 10 s of the signal (state is as safe as after kill -9, which the tests exercise).
		<-ctx.Done()
		time.Sleep(9500 * time.Millisecond)
		fmt.Fprintln(os.Stderr, "intake: shutdown took longer than 10s; exiting")
		os.Exit(1)
	}()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "dev":
		err = runDev(ctx, args)
	case "serve":
		err = runServe(ctx, args)
	case "apply":
		err = runApply(ctx, args)
	case "replay":
		err = runReplay(ctx, args)
	case "test-mapping":
		err = runTestMapping(ctx, args)
	case "rotate-secrets":
		err = runRotateSecrets(ctx, args)
	case "probe":
		err = runProbe(ctx, args)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", cmd, usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "intake:", err)
		os.Exit(1)
	}
}

func parse(name string, args []string, dev bool) (*settings, error) {
	s := &settings{}
	fs := flag.NewFlagSet("intake "+name, flag.ContinueOnError)
	s.bind(fs, dev)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	return s, nil
}

// runProbe GETs one URL: a healthcheck for images without a shell.
func runProbe(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("probe takes one URL, e.g. http://127.0.0.1:8080/readyz")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, args[0], nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s answered %d: %s", args[0], resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return nil
}
