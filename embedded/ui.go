package embedded

import (
	"fmt"
	"net"
	"strconv"

	uiserver "github.com/temporalio/ui-server/v2/server"
	uiconfig "github.com/temporalio/ui-server/v2/server/config"
	"github.com/temporalio/ui-server/v2/server/server_options"

	"intake/tclient"
)

// UI is the Temporal Web UI served in-process.
type UI struct {
	srv  *uiserver.Server
	addr string
}

type uiConfig struct{ cfg *uiconfig.Config }

func (u uiConfig) GetConfig() (*uiconfig.Config, error) { return u.cfg, nil }

// StartUI serves the Temporal Web UI on addr, talking to the frontend at temporalAddr.
// A TLS setting makes it dial the frontend with TLS (its client certificate, the CA).
func StartUI(addr, temporalAddr, namespace string, tlsFiles tclient.TLSFiles) (*UI, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("ui address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return nil, fmt.Errorf("ui address %q: %w", addr, err)
	}
	if port == 0 {
		if port, err = freePort(host); err != nil {
			return nil, err
		}
	}
	// The UI server exits the process when it cannot bind, so check the port first.
	l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("temporal ui: %w", err)
	}
	_ = l.Close()
	cfg := &uiconfig.Config{
		Host:                host,
		Port:                port,
		TemporalGRPCAddress: temporalAddr,
		EnableUI:            true,
		DefaultNamespace:    namespace,
		HideLogs:            true,
		CORS:                uiconfig.CORS{CookieInsecure: true},
		DisableNewsFetch:    true,
	}
	if tlsFiles.Set() {
		cfg.TLS = uiconfig.TLS{CaFile: tlsFiles.CA, CertFile: tlsFiles.Cert, KeyFile: tlsFiles.Key,
			ServerName: tlsFiles.ServerName, EnableHostVerification: true}
	}
	srv := uiserver.NewServer(server_options.WithConfigProvider(uiConfig{cfg}))
	go func() { _ = srv.Start() }()
	return &UI{srv: srv, addr: net.JoinHostPort(host, strconv.Itoa(port))}, nil
}

// Addr is where the UI listens.
func (u *UI) Addr() string { return u.addr }

// Stop closes the UI server.
func (u *UI) Stop() { u.srv.Stop() }
