package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"intake"
	"intake/activities"
	"intake/api"
	"intake/mappings"
	"intake/metrics"
	"intake/starters"
	"intake/starters/kafka"
	"intake/starters/pubsub"
	"intake/starters/webhook"
	"intake/store"
	"intake/tclient"
	"intake/workflows"
)

// process is one running intake: store, config catalog, Temporal client, and the roles asked.
type process struct {
	cfg     *settings
	log     *slog.Logger
	store   *store.Store
	catalog *mappings.Catalog
	client  client.Client
	worker  worker.Worker
	api     *api.Server
	http    *http.Server
	httpURL string

	configured atomic.Bool // examples loaded (or not needed)
	connected  atomic.Bool // Temporal answered, the search attributes are there, the roles started
	dev        bool        // intake dev: ready needs every part, the store included
	polls      *tclient.PollWatch
	accept     *starters.Acceptor
	allow      []string
	kafka      *kafka.Listener
	pubsub     *pubsub.Listener
	bg         context.Context
	cancel     context.CancelFunc
	listeners  sync.WaitGroup
	// recorded closes once the receiver's queued accepted-delivery records are written.
	recorded <-chan struct{}
}

// connect waits for Temporal (with backoff: a process may start before the cluster), checks
// the namespace's search attributes and then starts the worker and listener roles.
func (p *process) connect(ctx context.Context) error {
	cfg, log, bg := p.cfg, p.log, p.bg
	if err := waitTemporal(ctx, p.client, log); err != nil {
		return err
	}
	if err := tclient.CheckSearchAttributes(ctx, p.client.OperatorService(), cfg.TemporalNamespace); err != nil {
		return err
	}
	if cfg.hasRole("worker") {
		// Activities in flight get 3 s to finish on shutdown; Temporal retries the rest.
		p.worker = worker.New(p.client, intake.TaskQueue, worker.Options{WorkerStopTimeout: 3 * time.Second})
		p.worker.RegisterWorkflow(workflows.IngestWorkflow)
		p.worker.RegisterWorkflow(workflows.BulkReplayWorkflow)
		p.worker.RegisterWorkflow(workflows.IngestBatchWorkflow)
		p.worker.RegisterActivity(&activities.Activities{Store: p.store, Catalog: p.catalog, Log: log, HydrationAllow: p.allow, MaxEntities: cfg.MaxEntities})
		if err := p.worker.Start(); err != nil {
			return fmt.Errorf("start worker: %w", err)
		}
		if cfg.ReconcileEvery > 0 {
			rec := &starters.Reconciler{Client: p.client, Store: p.store, Log: log.With("component", "reconciler"),
				Namespace: cfg.TemporalNamespace, Every: cfg.ReconcileEvery, Lookback: cfg.ReconcileLookback}
			go rec.Run(bg)
		}
		go p.countInFlight(bg, 15*time.Second)
		if cfg.DeliveryRetention > 0 || cfg.AuditRetention > 0 {
			go p.expire(bg, cfg.DeliveryRetention, cfg.AuditRetention)
		}
	}
	if cfg.hasRole("listeners") && cfg.KafkaBrokers != "" {
		conn, err := cfg.kafkaConnection()
		if err != nil {
			return err
		}
		p.kafka = &kafka.Listener{
			Brokers: strings.Split(cfg.KafkaBrokers, ","), DefaultGroup: cfg.KafkaGroup, Conn: conn,
			Catalog: p.catalog, Accept: p.accept, Log: log.With("component", "kafka"),
		}
		p.listeners.Add(1)
		go func() { defer p.listeners.Done(); p.kafka.Run(bg) }()
	}
	if cfg.hasRole("listeners") && cfg.PubSubProject != "" {
		p.pubsub = &pubsub.Listener{Project: cfg.PubSubProject, Catalog: p.catalog, Accept: p.accept, Log: log.With("component", "pubsub")}
		p.listeners.Add(1)
		go func() {
			defer p.listeners.Done()
			if err := p.pubsub.Run(bg); err != nil {
				log.Error("pubsub listener stopped", "err", err)
			}
		}()
	}
	p.connected.Store(true)
	return nil
}

// startProcess connects to the store and Temporal and starts the roles in cfg.Roles. The process
// reports ready once its caller marks it configured (dev: after loading the examples).
func startProcess(ctx context.Context, cfg *settings, log *slog.Logger, mongoURI, temporalAddr, adminToken string) (*process, error) {
	p := &process{cfg: cfg, log: log}
	if cfg.PprofAddr != "" {
		if err := servePprof(cfg.PprofAddr, log); err != nil {
			return nil, err
		}
	}
	allow, err := activities.ParseAllow(cfg.HydrationAllow)
	if err != nil {
		return nil, fmt.Errorf("INTAKE_HYDRATION_ALLOW: %w", err)
	}
	keys, err := cfg.secretKeys()
	if err != nil {
		return nil, err
	}
	if p.store, err = store.Open(ctx, mongoURI, cfg.MongoDatabase, keys...); err != nil {
		return nil, err
	}
	switch cfg.StoreWriters {
	case "one":
		// The one writer of a store is intake dev's worker on its embedded FerretDB, whose
		// SQLite file takes one write at a time anyway: queue them here, not in SQLite.
		p.store.SoleWriter(log)
		p.store.OneWriteAtATime()
	case "auto": // intake dev: set to "one" when it runs the embedded store and the worker role
	case "many":
	default:
		return nil, fmt.Errorf(`--store-writers takes "one" or "many", not %q`, cfg.StoreWriters)
	}
	p.catalog = mappings.NewCatalog(p.store, log)
	if err := p.catalog.Refresh(ctx); err != nil {
		return nil, err
	}
	bg, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go p.catalog.Watch(bg, time.Second)

	opts, err := cfg.temporalOptions(temporalAddr, log)
	if err != nil {
		return nil, err
	}
	p.polls = &tclient.PollWatch{}
	opts.MetricsHandler = p.polls.Handler()
	// Lazy: the process serves /healthz and /readyz (503 until Temporal answers) while connect
	// waits for the frontend.
	if p.client, err = client.NewLazyClient(opts); err != nil {
		return nil, fmt.Errorf("temporal client: %w", err)
	}
	p.bg, p.allow = bg, allow
	starter := &starters.Starter{Client: p.client, TaskQueue: intake.TaskQueue}
	p.api = &api.Server{Store: p.store, Catalog: p.catalog, AdminToken: adminToken, Log: log, Ready: p.ready,
		Starter: starter, TemporalUI: cfg.TemporalUIURL, Namespace: cfg.TemporalNamespace, HydrationAllow: allow}
	// One accept path for every source; the receiver records each delivery at once.
	accept := &starters.Acceptor{Starter: starter, Store: p.store, Log: log, MaxBody: cfg.MaxBody}
	var receiver *webhook.Receiver
	if cfg.hasRole("receiver") {
		webhookAccept := *accept
		webhookAccept.RecordAtOnce = true
		p.recorded = webhookAccept.StartRecording(bg)
		receiver = &webhook.Receiver{
			Catalog: p.catalog, Accept: &webhookAccept,
			Store: p.store, Log: log, MaxBody: cfg.MaxBody, Observe: metrics.Webhook{},
		}
	}
	p.accept = accept
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.HTTPAddr, err)
	}
	p.httpURL = "http://" + ln.Addr().String()
	// Bounded reads and writes: a slow client cannot hold a connection; a sync answer waits at
	// most 30 s, well inside the write timeout.
	router := api.Router(p.api, receiver)
	if codec, err := cfg.payloadCodec(); err != nil {
		return nil, err
	} else if codec != nil {
		token := cfg.CodecToken
		if token == "" {
			token = adminToken
		}
		// The Temporal UI's remote codec: operators read sealed payloads in the UI.
		router.Any("/codec/*op", gin.WrapH(&tclient.CodecServer{Codec: codec, Token: token, Origins: cfg.codecOrigins()}))
	}
	p.http = &http.Server{Handler: router, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: time.Minute, WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	go func() {
		if err := p.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "err", err)
		}
	}()
	return p, nil
}

// expire deletes what is past its retention, at start and then hourly.
func (p *process) expire(ctx context.Context, deliveries, audit time.Duration) {
	cutoff := func(keep time.Duration) time.Time {
		if keep <= 0 {
			return time.Time{}
		}
		return time.Now().Add(-keep)
	}
	for {
		d, a, err := p.store.Expire(ctx, cutoff(deliveries), cutoff(audit))
		switch {
		case err != nil && ctx.Err() == nil:
			p.log.Warn("retention sweep failed", "err", err)
		case d+a > 0:
			p.log.Info("retention sweep", "deliveries_deleted", d, "audit_entries_deleted", a)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Hour):
		}
	}
}

// countInFlight keeps intake_deliveries_in_flight: running ingest workflows per integration,
// counted by Temporal's visibility (the backlog, whichever process accepted them).
func (p *process) countInFlight(ctx context.Context, every time.Duration) {
	for {
		wait := every
		if !p.configured.Load() || !p.catalog.Ready() {
			// Not loaded yet (dev loads the examples after the worker starts): count as soon
			// as it is, so the gauges do not wait a whole period to appear.
			wait = 200 * time.Millisecond
		}
		for _, prog := range p.catalog.Programs() {
			id := prog.Integration.Identifier
			q := fmt.Sprintf("WorkflowType = 'IngestWorkflow' AND ExecutionStatus = 'Running' AND IntakeIntegration = '%s'", id)
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			res, err := p.client.CountWorkflow(cctx, &workflowservice.CountWorkflowExecutionsRequest{Namespace: p.cfg.TemporalNamespace, Query: q})
			cancel()
			if err != nil {
				p.log.Debug("in-flight count failed", "integration", id, "err", err)
				continue
			}
			metrics.InFlight.WithLabelValues(id).Set(float64(res.GetCount()))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// ready is /readyz, for what this process's roles need: every role needs Temporal (a receiver
// nothing else, so a MongoDB blink does not take it out of a load balancer), a worker its
// pollers, listeners their group joins; intake dev needs everything, the store included.
func (p *process) ready(ctx context.Context) error {
	if !p.configured.Load() {
		return &api.PublicError{Reason: "loading examples"}
	}
	if !p.catalog.Ready() {
		return &api.PublicError{Reason: "configuration not loaded"}
	}
	if p.dev {
		if err := p.store.Ping(ctx); err != nil {
			return &api.PublicError{Reason: "the store is not reachable", Err: err}
		}
	}
	if _, err := p.client.CheckHealth(ctx, &client.CheckHealthRequest{}); err != nil {
		return &api.PublicError{Reason: "Temporal is not reachable", Err: err}
	}
	if !p.connected.Load() {
		return &api.PublicError{Reason: "connecting to Temporal"}
	}
	if p.worker != nil && !p.polls.Polling() {
		return &api.PublicError{Reason: "the worker is not polling Temporal"}
	}
	if p.kafka != nil {
		if waiting := p.kafka.Waiting(); len(waiting) > 0 {
			return &api.PublicError{Reason: "Kafka consumer groups not joined yet: " + strings.Join(waiting, ", ")}
		}
	}
	return nil
}

// stop shuts the roles down: HTTP first (no new deliveries), then the worker.
func (p *process) stop(ctx context.Context) {
	if p.http != nil {
		_ = p.http.Shutdown(ctx)
	}
	if p.cancel != nil {
		p.cancel() // stops the config watch and the listeners, which commit what they started
	}
	p.listeners.Wait()
	if p.recorded != nil {
		<-p.recorded // the accepted deliveries' records still queued are written
	}
	if p.worker != nil {
		p.worker.Stop()
	}
	if p.client != nil {
		p.client.Close()
	}
	if p.store != nil {
		_ = p.store.Close(ctx)
	}
}

// runServe is the production entry point.
func runServe(ctx context.Context, cfg *settings) error {
	log := cfg.logger()
	if cfg.MongoURI == "" {
		return errors.New("serve needs INTAKE_MONGODB_URI (or --mongodb-uri)")
	}
	if cfg.AdminToken == "" {
		return errors.New("serve needs INTAKE_ADMIN_TOKEN (or --admin-token)")
	}
	if cfg.SecretKeys == "" && cfg.SecretKey == "" {
		return errors.New("serve needs INTAKE_SECRET_KEYS (or --secret-keys) to keep integration secrets encrypted")
	}
	p, err := startProcess(ctx, cfg, log, cfg.MongoURI, cfg.TemporalAddr, cfg.AdminToken)
	if err != nil {
		return err
	}
	p.configured.Store(true)
	log.Info("intake serving", "http", p.httpURL, "roles", cfg.Roles, "temporal", cfg.TemporalAddr)
	if err := p.connect(ctx); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		p.stop(sctx)
		if ctx.Err() != nil {
			return nil // stopped while waiting for Temporal
		}
		return err
	}
	log.Info("intake connected to Temporal", "roles", cfg.Roles, "namespace", cfg.TemporalNamespace)
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	p.stop(sctx)
	return nil
}

// servePprof serves Go's profiler on its own listener, apart from the API: profiles show
// payloads in stack arguments and cost CPU, so they are opt-in and meant for loopback.
func servePprof(addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s (pprof): %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	log.Info("profiler listening", "addr", ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}
