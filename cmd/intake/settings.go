package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	flag "github.com/spf13/pflag"

	"intake/starters/kafka"
	"intake/store"
	"intake/tclient"
)

// settings are the process configuration: every one has a flag and an environment variable.
type settings struct {
	DataDir           string
	HTTPAddr          string
	TemporalAddr      string
	TemporalUIAddr    string
	TemporalNamespace string
	TemporalUIURL     string
	// Temporal client security (Temporal Cloud: mTLS certificates or an API key).
	TemporalTLSCert       string
	TemporalTLSKey        string
	TemporalTLSCA         string
	TemporalTLSServerName string
	TemporalAPIKey        string
	TemporalCompression   string
	// dev: serve the embedded frontend with TLS (a CA makes it mTLS).
	FrontendTLSCert   string
	FrontendTLSKey    string
	FrontendTLSCA     string
	PayloadCodec      string
	CodecOrigins      string
	CodecToken        string
	MongoURI          string
	MongoAddr         string
	MongoDatabase     string
	AdminToken        string
	SecretKeys        string
	SecretKey         string
	LogLevel          string
	PprofAddr         string
	MaxBody           int64
	Roles             string
	StoreWriters      string
	LoadExamples      bool
	KafkaBrokers      string
	KafkaGroup        string
	Kafka             string
	KafkaAddr         string
	KafkaTLS          bool
	KafkaTLSCert      string
	KafkaTLSKey       string
	KafkaTLSCA        string
	KafkaTLSServer    string
	KafkaSASL         string
	KafkaUser         string
	KafkaPassword     string
	PubSubProject     string
	HydrationAllow    string
	MaxEntities       int
	ReconcileEvery    time.Duration
	ReconcileLookback time.Duration
	DeliveryRetention time.Duration
	AuditRetention    time.Duration
}

// bind declares the flags, with defaults taken from the environment.
func (s *settings) bind(fs *flag.FlagSet, dev bool) {
	httpDefault := ":8080"
	if dev {
		httpDefault = "127.0.0.1:8080"
	}
	str := strFlag(fs)
	str(&s.HTTPAddr, "http-addr", "INTAKE_HTTP_ADDR", httpDefault, "receiver and admin API address")
	str(&s.TemporalAddr, "temporal-addr", "INTAKE_TEMPORAL_ADDRESS", "127.0.0.1:7233", "Temporal frontend (dev: where the embedded one listens)")
	str(&s.TemporalUIAddr, "temporal-ui-addr", "INTAKE_TEMPORAL_UI_ADDR", "127.0.0.1:8233", "embedded Temporal Web UI address (dev)")
	str(&s.TemporalUIURL, "temporal-ui-url", "INTAKE_TEMPORAL_UI_URL", "", "Temporal Web UI base URL for workflow links (dev: the embedded UI)")
	str(&s.TemporalNamespace, "temporal-namespace", "INTAKE_TEMPORAL_NAMESPACE", "default", "Temporal namespace")
	str(&s.TemporalTLSCert, "temporal-tls-cert", "INTAKE_TEMPORAL_TLS_CERT", "", "PEM client certificate for mTLS to Temporal (with --temporal-tls-key)")
	str(&s.TemporalTLSKey, "temporal-tls-key", "INTAKE_TEMPORAL_TLS_KEY", "", "PEM key of the client certificate")
	str(&s.TemporalTLSCA, "temporal-tls-ca", "INTAKE_TEMPORAL_TLS_CA", "", "PEM CA bundle that signed the Temporal frontend's certificate (unset: the system roots)")
	str(&s.TemporalTLSServerName, "temporal-tls-server-name", "INTAKE_TEMPORAL_TLS_SERVER_NAME", "", "name the frontend's certificate must carry (unset: the host of --temporal-addr)")
	str(&s.TemporalAPIKey, "temporal-api-key", "INTAKE_TEMPORAL_API_KEY", "", "Temporal Cloud API key (sent as a bearer token over TLS); prefer the variable to the flag")
	str(&s.TemporalCompression, "temporal-compression", "INTAKE_TEMPORAL_COMPRESSION", "auto", `gRPC compression to Temporal: "gzip", "none", or "auto" (none to a loopback address, such as dev's embedded server; gzip elsewhere)`)
	str(&s.FrontendTLSCert, "temporal-frontend-tls-cert", "INTAKE_TEMPORAL_FRONTEND_TLS_CERT", "", "dev: serve the embedded Temporal frontend with TLS, this PEM certificate")
	str(&s.FrontendTLSKey, "temporal-frontend-tls-key", "INTAKE_TEMPORAL_FRONTEND_TLS_KEY", "", "dev: PEM key of the frontend certificate")
	str(&s.FrontendTLSCA, "temporal-frontend-tls-ca", "INTAKE_TEMPORAL_FRONTEND_TLS_CA", "", "dev: require client certificates signed by this PEM CA (mTLS)")
	str(&s.PayloadCodec, "payload-codec", "INTAKE_PAYLOAD_CODEC", "none", `"aes-gcm" encrypts every workflow payload with the secret key (bodies unreadable in the cluster); "none"`)
	str(&s.CodecOrigins, "codec-origins", "INTAKE_CODEC_ORIGINS", "", "browser origins allowed to call /codec/ (comma-separated; unset: the origin of --temporal-ui-url)")
	str(&s.CodecToken, "codec-token", "INTAKE_CODEC_TOKEN", "", "bearer token /codec/ requires (unset: the admin token)")
	s.bindStore(fs)
	str(&s.AdminToken, "admin-token", "INTAKE_ADMIN_TOKEN", "", "admin API bearer token (dev: generated and kept when unset)")
	str(&s.LogLevel, "log-level", "INTAKE_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&s.PprofAddr, "pprof-addr", "INTAKE_PPROF_ADDR", "", "serve Go's profiler (/debug/pprof/) on this address; off when empty (keep it on loopback)")
	str(&s.Roles, "roles", "INTAKE_ROLES", "receiver,worker,listeners", "comma-separated roles (receiver, worker, listeners); dev: \"none\" runs only the embedded servers and the admin API (a cluster for serve processes)")
	writers := "many"
	if dev {
		writers = "auto"
	}
	str(&s.StoreWriters, "store-writers", "INTAKE_STORE_WRITERS", writers, `"many": other processes may write entities to this store (on FerretDB each write claims its revision, 3-4 operations more); "one": this process is the only writer; dev "auto": "one" when dev runs the embedded store and the worker role`)
	str(&s.KafkaBrokers, "kafka-brokers", "INTAKE_KAFKA_BROKERS", "", "comma-separated Kafka brokers; unset: no Kafka listener")
	str(&s.KafkaGroup, "kafka-group", "INTAKE_KAFKA_GROUP", "intake", "consumer group of kafka integrations that name none")
	str(&s.KafkaTLSCert, "kafka-tls-cert", "INTAKE_KAFKA_TLS_CERT", "", "PEM client certificate for mTLS to Kafka (with --kafka-tls-key)")
	str(&s.KafkaTLSKey, "kafka-tls-key", "INTAKE_KAFKA_TLS_KEY", "", "PEM key of the Kafka client certificate")
	str(&s.KafkaTLSCA, "kafka-tls-ca", "INTAKE_KAFKA_TLS_CA", "", "PEM CA bundle that signed the brokers' certificates (unset: the system roots)")
	str(&s.KafkaTLSServer, "kafka-tls-server-name", "INTAKE_KAFKA_TLS_SERVER_NAME", "", "name the brokers' certificates must carry (unset: each broker's host)")
	kafkaTLS := envOr("INTAKE_KAFKA_TLS", "false") == "true"
	fs.BoolVar(&s.KafkaTLS, "kafka-tls", kafkaTLS, "TLS to Kafka with the system roots (implied by any --kafka-tls-* setting) ($INTAKE_KAFKA_TLS)")
	str(&s.KafkaSASL, "kafka-sasl-mechanism", "INTAKE_KAFKA_SASL_MECHANISM", "", "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; unset: no SASL")
	str(&s.KafkaUser, "kafka-sasl-username", "INTAKE_KAFKA_SASL_USERNAME", "", "SASL user name")
	str(&s.KafkaPassword, "kafka-sasl-password", "INTAKE_KAFKA_SASL_PASSWORD", "", "SASL password; prefer the variable to the flag")
	str(&s.Kafka, "kafka", "INTAKE_KAFKA", "", `dev: "embedded" runs an in-process Kafka-protocol broker`)
	str(&s.PubSubProject, "pubsub-project", "INTAKE_PUBSUB_PROJECT", "", "GCP project of pubsub subscriptions; unset: no Pub/Sub listener (PUBSUB_EMULATOR_HOST for the emulator)")
	str(&s.HydrationAllow, "hydration-allow", "INTAKE_HYDRATION_ALLOW", "", "comma-separated IPs, CIDRs or host names hydration may fetch although private, loopback or link-local")
	str(&s.KafkaAddr, "kafka-addr", "INTAKE_KAFKA_ADDR", "127.0.0.1:9092", "dev: embedded Kafka broker address")
	maxBody, _ := strconv.ParseInt(envOr("INTAKE_MAX_BODY_BYTES", "1048576"), 10, 64)
	fs.Int64Var(&s.MaxBody, "max-body-bytes", maxBody, "webhook body limit ($INTAKE_MAX_BODY_BYTES)")
	maxEntities, _ := strconv.Atoi(envOr("INTAKE_MAX_ENTITIES", "1000"))
	fs.IntVar(&s.MaxEntities, "max-entities", maxEntities, "entities one delivery may produce; above it the delivery fails ($INTAKE_MAX_ENTITIES)")
	every, _ := time.ParseDuration(envOr("INTAKE_RECONCILE_EVERY", "1m"))
	fs.DurationVar(&s.ReconcileEvery, "reconcile-every", every, "worker: how often ended workflows are looked for deliveries they left accepted; 0: never ($INTAKE_RECONCILE_EVERY)")
	lookback, _ := time.ParseDuration(envOr("INTAKE_RECONCILE_LOOKBACK", "72h"))
	fs.DurationVar(&s.ReconcileLookback, "reconcile-lookback", lookback, "worker: how far back, at start, ended workflows are looked for ($INTAKE_RECONCILE_LOOKBACK)")
	keepDeliveries, _ := time.ParseDuration(envOr("INTAKE_DELIVERY_RETENTION", "720h"))
	fs.DurationVar(&s.DeliveryRetention, "delivery-retention", keepDeliveries, "worker: delivery records (and their bodies) older than this are deleted; 0 keeps them ($INTAKE_DELIVERY_RETENTION)")
	keepAudit, _ := time.ParseDuration(envOr("INTAKE_AUDIT_RETENTION", "0"))
	fs.DurationVar(&s.AuditRetention, "audit-retention", keepAudit, "worker: audit entries older than this are deleted; 0 (default) keeps them ($INTAKE_AUDIT_RETENTION)")
	hideDefault(fs, "admin-token")
	examples := envOr("INTAKE_LOAD_EXAMPLES", "true") != "false"
	fs.BoolVar(&s.LoadExamples, "examples", examples, "dev: load examples/ on the first start ($INTAKE_LOAD_EXAMPLES)")
}

// bindStore declares the flags that reach the store and its keys (all rotate-secrets takes).
func (s *settings) bindStore(fs *flag.FlagSet) {
	str := strFlag(fs)
	str(&s.DataDir, "data-dir", "INTAKE_DATA_DIR", ".intake", "folder for all embedded state")
	str(&s.MongoURI, "mongodb-uri", "INTAKE_MONGODB_URI", "", "MongoDB URI (dev: unset runs the embedded server)")
	str(&s.MongoAddr, "mongodb-addr", "INTAKE_MONGODB_ADDR", "127.0.0.1:27017", "embedded MongoDB-protocol server address (dev)")
	str(&s.MongoDatabase, "mongodb-database", "INTAKE_MONGODB_DATABASE", "intake", "MongoDB database")
	str(&s.SecretKeys, "secret-keys", "INTAKE_SECRET_KEYS", "", "comma-separated keys for integration secrets at rest, newest first: the newest encrypts, every one decrypts (dev: one generated and kept)")
	str(&s.SecretKey, "secret-key", "INTAKE_SECRET_KEY", "", "a single key, instead of --secret-keys")
	hideDefault(fs, "mongodb-uri", "secret-keys", "secret-key")
}

// hideDefault keeps -h from printing a secret taken from the environment as a flag's default
// (a MongoDB URI may hold a password).
func hideDefault(fs *flag.FlagSet, names ...string) {
	for _, n := range names {
		fs.Lookup(n).DefValue = ""
	}
}

// kafkaConnection is the Kafka listener's TLS and SASL from the INTAKE_KAFKA_* settings.
func (s *settings) kafkaConnection() (kafka.Conn, error) {
	var c kafka.Conn
	files := tclient.TLSFiles{Prefix: "INTAKE_KAFKA_TLS", Cert: s.KafkaTLSCert, Key: s.KafkaTLSKey, CA: s.KafkaTLSCA, ServerName: s.KafkaTLSServer}
	if s.KafkaTLS || files.Set() {
		cfg, err := files.Config()
		if err != nil {
			return c, err
		}
		c.TLS = cfg
	}
	if s.KafkaSASL != "" && s.KafkaUser == "" {
		return c, errors.New("INTAKE_KAFKA_SASL_MECHANISM needs INTAKE_KAFKA_SASL_USERNAME and INTAKE_KAFKA_SASL_PASSWORD")
	}
	m, err := kafka.Mechanism(s.KafkaSASL, s.KafkaUser, s.KafkaPassword)
	if err != nil {
		return c, fmt.Errorf("INTAKE_KAFKA_SASL_MECHANISM: %w", err)
	}
	c.SASL = m
	return c, nil
}

func strFlag(fs *flag.FlagSet) func(p *string, name, env, def, usage string) {
	return func(p *string, name, env, def, usage string) {
		fs.StringVar(p, name, envOr(env, def), usage+" ($"+env+")")
	}
}

// secretKeys is the key list, newest first: INTAKE_SECRET_KEYS, or INTAKE_SECRET_KEY alone.
func (s *settings) secretKeys() ([][]byte, error) {
	switch {
	case s.SecretKeys != "" && s.SecretKey != "":
		return nil, errors.New("both INTAKE_SECRET_KEYS and INTAKE_SECRET_KEY are set: put every key in INTAKE_SECRET_KEYS, newest first")
	case s.SecretKeys != "":
		keys := store.SecretKeys(s.SecretKeys)
		if len(keys) == 0 {
			return nil, errors.New("INTAKE_SECRET_KEYS holds no key")
		}
		return keys, nil
	case s.SecretKey != "":
		return [][]byte{store.SecretKey(strings.TrimSpace(s.SecretKey))}, nil
	}
	return nil, nil
}

func (s *settings) hasRole(role string) bool {
	for _, r := range strings.Split(s.Roles, ",") {
		if strings.TrimSpace(r) == role {
			return true
		}
	}
	return false
}

func (s *settings) logger() *slog.Logger {
	var level slog.Level
	if err := level.UnmarshalText([]byte(s.LogLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "unknown log level %q, using info\n", s.LogLevel)
		level = slog.LevelInfo
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
