// Package embedded runs the outside services of `intake dev` inside the process: a Temporal
// server with SQLite persistence and its Web UI. Tests use the same code with temporary folders.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.temporal.io/server/common/authorization"
	"go.temporal.io/server/common/cluster"
	"go.temporal.io/server/common/config"
	"go.temporal.io/server/common/dynamicconfig"
	tlog "go.temporal.io/server/common/log"
	sqliteplugin "go.temporal.io/server/common/persistence/sql/sqlplugin/sqlite"
	"go.temporal.io/server/schema/sqlite"
	"go.temporal.io/server/temporal"

	"intake/embedded/checkpoint"
	"intake/tclient"
)

// SearchAttributes are the Keyword attributes every intake workflow carries.
var SearchAttributes = tclient.SearchAttributes

// TemporalConfig configures the embedded Temporal server.
type TemporalConfig struct {
	// DatabaseFile is the SQLite file of executions; created with its schema when absent.
	// Visibility records go to VisibilityFile in the same folder.
	DatabaseFile string
	// FrontendAddr is host:port of the gRPC frontend ("127.0.0.1:0" picks a free port).
	FrontendAddr string
	Namespace    string
	// LogLevel of the server's own logs (debug, info, warn, error).
	LogLevel string
	// LogFile receives the server's logs (they are verbose); empty means stderr.
	LogFile string
	// TLSCertFile and TLSKeyFile (PEM) make the frontend serve TLS; TLSCAFile makes it require
	// client certificates signed by that CA (mTLS). The server's own system worker dials the
	// frontend with the same certificate, so with a CA it must allow client authentication too.
	TLSCertFile, TLSKeyFile, TLSCAFile string
}

// Temporal is a running embedded Temporal server.
type Temporal struct {
	server       temporal.Server
	frontend     string
	checkpointer *checkpoint.Checkpointer
}

// StartTemporal creates the schema and namespace if needed and starts every service.
func StartTemporal(cfg TemporalConfig) (*Temporal, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if cfg.LogLevel == "" {
		cfg.LogLevel = "warn"
	}
	host, port, err := resolvePort(cfg.FrontendAddr)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(cfg.DatabaseFile), 0o700); err != nil {
		return nil, fmt.Errorf("create data folder: %w", err)
	}
	sqlCfg := sqliteConfig(cfg.DatabaseFile)
	// Visibility (the workflow lists of the UI and of ListWorkflowExecutions) gets a file and a
	// connection of its own: its records are the heaviest writes of a run (a row with ~60
	// indexes and two full-text tables, written at start and at close), and on the one
	// connection of the execution store they queue in front of every workflow start.
	visCfg := sqliteConfig(VisibilityDatabase(cfg.DatabaseFile))
	// Visibility's file first: a start cut short between the two then still splits next time.
	for _, c := range []*config.SQL{visCfg, sqlCfg} {
		if _, err := os.Stat(c.DatabaseName); errors.Is(err, os.ErrNotExist) {
			// The schema is one script of both stores; each file uses its half.
			if err := sqlite.SetupSchema(c); err != nil {
				return nil, fmt.Errorf("set up temporal schema in %s: %w", c.DatabaseName, err)
			}
		}
	}
	if err := trimVisibility(visCfg.DatabaseName); err != nil {
		return nil, err
	}
	// One datastore per file: two connections to one file would only wait on each other.
	visStore, stores := "sqlite", map[string]config.DataStore{"sqlite": {SQL: sqlCfg}}
	if visCfg.DatabaseName != sqlCfg.DatabaseName {
		visStore, stores["sqlite-visibility"] = "sqlite-visibility", config.DataStore{SQL: visCfg}
	}
	ns, err := sqlite.NewNamespaceConfig("active", cfg.Namespace, false, SearchAttributes)
	if err != nil {
		return nil, fmt.Errorf("namespace config: %w", err)
	}
	if err := sqlite.CreateNamespaces(sqlCfg, ns); err != nil {
		return nil, fmt.Errorf("create namespace %s: %w", cfg.Namespace, err)
	}

	frontend := net.JoinHostPort(host, strconv.Itoa(port))
	service := func(grpcPort int) (config.Service, error) {
		if grpcPort == 0 {
			p, err := freePort(host)
			if err != nil {
				return config.Service{}, err
			}
			grpcPort = p
		}
		mp, err := freePort(host)
		if err != nil {
			return config.Service{}, err
		}
		return config.Service{RPC: config.RPC{GRPCPort: grpcPort, MembershipPort: mp, BindOnIP: host}}, nil
	}
	services := map[string]config.Service{}
	for name, p := range map[string]int{"frontend": port, "history": 0, "matching": 0, "worker": 0} {
		s, err := service(p)
		if err != nil {
			return nil, err
		}
		services[name] = s
	}
	sc := &config.Config{
		Global: config.Global{
			Membership: config.Membership{MaxJoinDuration: 30 * time.Second, BroadcastAddress: host},
		},
		Persistence: config.Persistence{
			DefaultStore:     "sqlite",
			VisibilityStore:  visStore,
			NumHistoryShards: 1,
			DataStores:       stores,
		},
		ClusterMetadata: &cluster.Config{
			EnableGlobalNamespace:    false,
			FailoverVersionIncrement: 10,
			MasterClusterName:        "active",
			CurrentClusterName:       "active",
			ClusterInformation: map[string]cluster.ClusterInformation{
				"active": {Enabled: true, InitialFailoverVersion: 1, RPCAddress: frontend},
			},
		},
		DCRedirectionPolicy: config.DCRedirectionPolicy{Policy: "noop"},
		Services:            services,
		Archival: config.Archival{
			History:    config.HistoryArchival{State: "disabled"},
			Visibility: config.VisibilityArchival{State: "disabled"},
		},
		NamespaceDefaults: config.NamespaceDefaults{Archival: config.ArchivalNamespaceDefaults{
			History:    config.HistoryArchivalNamespaceDefaults{State: "disabled"},
			Visibility: config.VisibilityArchivalNamespaceDefaults{State: "disabled"},
		}},
		PublicClient: config.PublicClient{HostPort: frontend},
	}
	if cfg.TLSCertFile != "" {
		srvTLS := config.ServerTLS{CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile}
		worker := config.WorkerTLS{Client: config.ClientTLS{ServerName: host, ForceTLS: true}}
		if cfg.TLSCAFile != "" {
			srvTLS.ClientCAFiles, srvTLS.RequireClientAuth = []string{cfg.TLSCAFile}, true
			worker.CertFile, worker.KeyFile = cfg.TLSCertFile, cfg.TLSKeyFile
			worker.Client.RootCAFiles = []string{cfg.TLSCAFile}
		} else {
			worker.Client.DisableHostVerification = true // its own frontend, over loopback
		}
		sc.Global.TLS = config.RootTLS{Frontend: config.GroupTLS{Server: srvTLS}, SystemWorker: worker}
	}
	logger := tlog.NewZapLogger(tlog.BuildZapLogger(tlog.Config{Level: cfg.LogLevel, OutputFile: cfg.LogFile}))
	authorizer, err := authorization.GetAuthorizerFromConfig(&sc.Global.Authorization)
	if err != nil {
		return nil, err
	}
	claimMapper, err := authorization.GetClaimMapperFromConfig(&sc.Global.Authorization, logger)
	if err != nil {
		return nil, err
	}
	srv, err := temporal.NewServer(
		temporal.WithConfig(sc),
		temporal.ForServices(temporal.DefaultServices),
		temporal.WithLogger(logger),
		temporal.WithAuthorizer(authorizer),
		temporal.WithClaimMapper(func(*config.Config) authorization.ClaimMapper { return claimMapper }),
		temporal.WithDynamicConfigClient(dynamicconfig.StaticClient{
			// One partition per task queue: one host polls them all, and with four (the
			// default) polls and tasks meet less often and are forwarded between partitions.
			dynamicconfig.MatchingNumTaskqueueReadPartitions.Key():  1,
			dynamicconfig.MatchingNumTaskqueueWritePartitions.Key(): 1,
			// Keep a queue slice's predicate universal while it has pending tasks. Shrunk to the
			// one namespace they belong to, it no longer merges by range with the slice of each
			// new batch of tasks, so every new batch splits the slice's pending tasks one by one:
			// work quadratic in the backlog, which after a burst took a third of the process's
			// CPU (queues.executableTracker.split) and slowed the next phase's workflows by ~80 %.
			dynamicconfig.QueueShrinkPredicateMaxPendingKeys.Key(): 0,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("create temporal server: %w", err)
	}
	if err := srv.Start(); err != nil {
		return nil, fmt.Errorf("start temporal server: %w", err)
	}
	files := []string{cfg.DatabaseFile}
	if vis := VisibilityDatabase(cfg.DatabaseFile); vis != cfg.DatabaseFile {
		files = append(files, vis)
	}
	cp := checkpoint.Start(slog.Default().With("component", "temporal-sqlite"), files...)
	return &Temporal{server: srv, frontend: frontend, checkpointer: cp}, nil
}

// VisibilityFile is the SQLite file of the visibility store, next to DatabaseFile.
const VisibilityFile = "visibility.db"

// VisibilityDatabase is the SQLite file of the visibility store for the execution file
// dbFile: VisibilityFile next to it, except in a data folder made before the split (dbFile
// there, VisibilityFile not), which keeps its visibility records where they are.
func VisibilityDatabase(dbFile string) string {
	vis := filepath.Join(filepath.Dir(dbFile), VisibilityFile)
	_, errMain := os.Stat(dbFile)
	_, errVis := os.Stat(vis)
	if errMain == nil && errors.Is(errVis, os.ErrNotExist) {
		return dbFile
	}
	return vis
}

// sqliteConfig is one SQLite file of the server, created when absent.
func sqliteConfig(file string) *config.SQL {
	return &config.SQL{
		PluginName:   sqliteplugin.PluginName,
		DatabaseName: file,
		// WAL and synchronous=normal: without them the server rewrites gigabytes for a tiny
		// database and completes only ~10 workflows/s (design.md §7). One connection (MaxConns 0).
		// No automatic checkpoint: a Checkpointer does it beside the server (see there).
		ConnectAttributes: map[string]string{
			"mode": "rwc", "journal_mode": "wal", "synchronous": "normal", "busy_timeout": "5000",
			"wal_autocheckpoint": "0",
		},
	}
}

// FrontendAddr is the gRPC address clients dial.
func (t *Temporal) FrontendAddr() string { return t.frontend }

// Stop stops every service, then checkpoints the files a last time.
func (t *Temporal) Stop() error {
	err := t.server.Stop()
	t.checkpointer.Stop()
	return err
}

func resolvePort(addr string) (string, int, error) {
	if addr == "" {
		addr = "127.0.0.1:7233"
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("temporal address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("temporal address %q: %w", addr, err)
	}
	if port == 0 {
		if port, err = freePort(host); err != nil {
			return "", 0, err
		}
	}
	return host, port, nil
}

// freePort asks the kernel for a port that is free now.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitTCP waits until addr accepts connections.
func WaitTCP(ctx context.Context, addr string) error {
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", addr, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
