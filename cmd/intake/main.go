// Command intake is the ingestion worker: `intake dev` runs everything in one process on this
// machine; `intake serve` runs the receiver and worker roles against outside services; the other
// verbs are the operator's command line over the admin API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	flag "github.com/spf13/pflag"
)

const about = `intake turns webhook, Kafka and Pub/Sub deliveries into catalog entities, one Temporal
workflow per delivery.

The admin verbs (get, delete, apply, replay, test-mapping) read --server ($INTAKE_SERVER, default
http://127.0.0.1:8080) and --token ($INTAKE_ADMIN_TOKEN, default: ./.intake/admin-token).
Every flag of dev and serve has an environment variable (see "intake dev -h").`

// usageError is a command line that cannot be run as written (exit status 2).
type usageError struct{ error }

func main() {
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
	root := rootCommand()
	root.SetArgs(longFlags(root, os.Args[1:]))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "intake:", err)
	var ue usageError
	if errors.As(err, &ue) || strings.HasPrefix(err.Error(), "unknown command") {
		os.Exit(2)
	}
	os.Exit(1)
}

func rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "intake",
		Short:         "webhook, Kafka and Pub/Sub deliveries into catalog entities",
		Long:          about,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Usage()
			return usageError{errors.New("a command is needed")}
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w (see %q)", err, cmd.CommandPath()+" -h")}
	})
	root.AddGroup(&cobra.Group{ID: "run", Title: "Run intake:"}, &cobra.Group{ID: "admin", Title: "Operate it (admin API):"})
	root.AddCommand(devCommand(), serveCommand(), getCommand(), deleteCommand(), applyCommand(),
		replayCommand(), testMappingCommand(), rotateSecretsCommand(), probeCommand())
	root.SetHelpCommandGroupID("admin")
	root.SetCompletionCommandGroupID("admin")
	return root
}

func devCommand() *cobra.Command {
	cfg := &settings{}
	cmd := &cobra.Command{
		Use:     "dev",
		GroupID: "run",
		Short:   "everything on this machine: embedded Temporal (+ Web UI), MongoDB-protocol server, receiver, admin API and worker",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runDev(cmd.Context(), cfg) },
	}
	cfg.bind(cmd.Flags(), true)
	return cmd
}

func serveCommand() *cobra.Command {
	cfg := &settings{}
	cmd := &cobra.Command{
		Use:     "serve",
		GroupID: "run",
		Short:   "the production roles (--roles receiver,worker,listeners) against a Temporal cluster and MongoDB",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runServe(cmd.Context(), cfg) },
	}
	cfg.bind(cmd.Flags(), false)
	return cmd
}

func rotateSecretsCommand() *cobra.Command {
	cfg := &settings{}
	cmd := &cobra.Command{
		Use:     "rotate-secrets",
		GroupID: "admin",
		Short:   "re-encrypt every integration's secrets with the newest key (talks to the store, not the API)",
		Long: `Re-encrypts every integration's secrets with the newest key of --secret-keys (idempotent).
Without --mongodb-uri it reaches the running intake dev's embedded server (--mongodb-addr), and
without keys it uses that folder's kept key.`,
		Example: "  INTAKE_SECRET_KEYS=new,old intake rotate-secrets --mongodb-uri mongodb://db:27017/",
		Args:    cobra.NoArgs,
		RunE:    func(cmd *cobra.Command, _ []string) error { return runRotateSecrets(cmd.Context(), cfg) },
	}
	cfg.bindStore(cmd.Flags())
	return cmd
}

// longFlags keeps the command lines of the first versions working: Go's flag package took long
// flags with one dash (-http-addr), pflag wants two. A one-dash word that names a long flag of
// the command it is given to gets its second dash; shorthands (-f, -o) are left alone.
func longFlags(root *cobra.Command, args []string) []string {
	cmd, _, err := root.Find(args)
	if err != nil || cmd == nil {
		return args
	}
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a, "-"), "=")
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && lookup(cmd, name) != nil {
			out[i] = "-" + a
		}
	}
	return out
}

func lookup(cmd *cobra.Command, name string) *flag.Flag {
	if f := cmd.Flags().Lookup(name); f != nil {
		return f
	}
	return cmd.InheritedFlags().Lookup(name)
}

func probeCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "probe URL",
		GroupID: "run",
		Short:   "exit 0 when URL answers 200 (container healthchecks: the image has no curl)",
		Example: "  intake probe http://127.0.0.1:8080/readyz",
		Args:    cobra.ExactArgs(1),
		RunE:    func(cmd *cobra.Command, args []string) error { return runProbe(cmd.Context(), args) },
	}
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
