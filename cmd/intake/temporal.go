package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"go.temporal.io/sdk/client"
	sdklog "go.temporal.io/sdk/log"

	"intake/starters"
	"intake/tclient"
)

// temporalTLS names the client's TLS settings.
func (s *settings) temporalTLS() tclient.TLSFiles {
	return tclient.TLSFiles{Prefix: "INTAKE_TEMPORAL_TLS", Cert: s.TemporalTLSCert, Key: s.TemporalTLSKey,
		CA: s.TemporalTLSCA, ServerName: s.TemporalTLSServerName}
}

// payloadCodec is the codec INTAKE_PAYLOAD_CODEC asks for (nil: payloads as they are).
func (s *settings) payloadCodec() (*tclient.Codec, error) {
	switch s.PayloadCodec {
	case "", "none":
		return nil, nil
	case "aes-gcm":
		keys, err := s.secretKeys()
		if err != nil {
			return nil, err
		}
		return tclient.NewCodec(keys)
	}
	return nil, fmt.Errorf(`INTAKE_PAYLOAD_CODEC takes "aes-gcm" or "none", not %q`, s.PayloadCodec)
}

// codecOrigins are the browser origins the codec endpoint answers: INTAKE_CODEC_ORIGINS, else
// the origin of INTAKE_TEMPORAL_UI_URL.
func (s *settings) codecOrigins() []string {
	if s.CodecOrigins != "" {
		var out []string
		for _, o := range strings.Split(s.CodecOrigins, ",") {
			if o = strings.TrimSpace(o); o != "" {
				out = append(out, o)
			}
		}
		return out
	}
	if u, err := url.Parse(s.TemporalUIURL); err == nil && u.Scheme != "" && u.Host != "" {
		return []string{u.Scheme + "://" + u.Host}
	}
	return nil
}

// temporalOptions are the options of every Temporal client this process makes.
func (s *settings) temporalOptions(addr string, log *slog.Logger) (client.Options, error) {
	var err error
	opts := client.Options{
		HostPort:  addr,
		Namespace: s.TemporalNamespace,
		Logger:    sdklog.NewStructuredLogger(log.With("component", "temporal-sdk")),
	}
	if f := s.temporalTLS(); f.Set() {
		cfg, err := f.Config()
		if err != nil {
			return opts, err
		}
		opts.ConnectionOptions.TLS = cfg
	}
	if s.TemporalAPIKey != "" {
		// Temporal Cloud: the key goes as a bearer token; the SDK turns TLS on (system roots)
		// when no TLS setting is given.
		opts.Credentials = client.NewAPIKeyStaticCredentials(s.TemporalAPIKey)
	}
	if opts.ConnectionOptions.GrpcCompression, err = s.temporalCompression(addr); err != nil {
		return opts, err
	}
	codec, err := s.payloadCodec()
	if err != nil {
		return opts, err
	}
	if codec != nil {
		opts.DataConverter = codec.DataConverter()
	}
	return opts, nil
}

// waitTemporal retries until the frontend answers: a process started before Temporal is
// reachable waits (its /readyz says why) instead of exiting.
func waitTemporal(ctx context.Context, c client.Client, log *slog.Logger) error {
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.CheckHealth(cctx, &client.CheckHealthRequest{})
		cancel()
		if err == nil {
			if attempt > 0 {
				log.Info("Temporal is reachable", "attempts", attempt+1)
			}
			return nil
		}
		log.Warn("Temporal is not reachable yet; retrying", "err", err, "attempt", attempt+1)
		if !starters.Backoff(ctx, attempt) {
			return fmt.Errorf("wait for Temporal: %w", ctx.Err())
		}
	}
}

// temporalCompression is the client's gRPC compression (INTAKE_TEMPORAL_COMPRESSION). On
// loopback, gzip only costs CPU: every request, and every answer, which carries history events
// (an eager start's first workflow task), compressed on one side and inflated on the other,
// about 3 % of intake dev's CPU under load.
func (s *settings) temporalCompression(addr string) (client.GrpcCompression, error) {
	switch s.TemporalCompression {
	case "gzip":
		return &client.GrpcCompressionGzip{}, nil
	case "none":
		return &client.GrpcCompressionNone{}, nil
	case "", "auto":
		if loopback(addr) {
			return &client.GrpcCompressionNone{}, nil
		}
		return &client.GrpcCompressionGzip{}, nil
	}
	return nil, fmt.Errorf(`INTAKE_TEMPORAL_COMPRESSION takes "gzip", "none" or "auto", not %q`, s.TemporalCompression)
}

// loopback reports whether a host:port names this machine.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
