// Package tclient holds what every intake Temporal client shares and needs no server: the TLS
// configuration, the encrypting payload codec (and its HTTP endpoint for the Temporal UI), and
// the check of the namespace's search attributes.
package tclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/operatorservice/v1"
)

// SearchAttributes are the Keyword attributes every intake workflow carries.
var SearchAttributes = map[string]enumspb.IndexedValueType{
	"IntakeIntegration": enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	"IntakeOrigin":      enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	"IntakeTemplate":    enumspb.INDEXED_VALUE_TYPE_KEYWORD,
	"IntakeOutcome":     enumspb.INDEXED_VALUE_TYPE_KEYWORD,
}

// TLSFiles names the PEM files of a client TLS configuration; prefix names their settings in
// errors (INTAKE_TEMPORAL_TLS gives INTAKE_TEMPORAL_TLS_CERT, ...).
type TLSFiles struct {
	Prefix     string
	Cert, Key  string // client certificate and key (mTLS); both or neither
	CA         string // the only trusted roots; empty: the system roots
	ServerName string // the name the server's certificate must carry; empty: the dialled host
}

// Set reports whether any TLS setting is given.
func (f TLSFiles) Set() bool { return f.Cert != "" || f.Key != "" || f.CA != "" || f.ServerName != "" }

// Config builds the client TLS configuration.
func (f TLSFiles) Config() (*tls.Config, error) {
	p := f.Prefix
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.ServerName}
	switch {
	case (f.Cert == "") != (f.Key == ""):
		return nil, fmt.Errorf("%s_CERT and %s_KEY go together: set both for a client certificate, or neither", p, p)
	case f.Cert != "":
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("%s_CERT/%s_KEY: %w", p, p, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("%s_CA: %w", p, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s_CA: %s holds no PEM certificate", p, f.CA)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// CheckSearchAttributes fails, naming them, when the namespace lacks intake's search
// attributes (without them every workflow start fails).
func CheckSearchAttributes(ctx context.Context, op operatorservice.OperatorServiceClient, namespace string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := op.ListSearchAttributes(cctx, &operatorservice.ListSearchAttributesRequest{Namespace: namespace})
	if err != nil {
		return fmt.Errorf("list the search attributes of namespace %s: %w", namespace, err)
	}
	var missing []string
	for name, typ := range SearchAttributes {
		if got, ok := res.GetCustomAttributes()[name]; !ok || got != typ {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	cmds := make([]string, len(missing))
	for i, name := range missing {
		cmds[i] = fmt.Sprintf("temporal operator search-attribute create --namespace %s --name %s --type Keyword", namespace, name)
	}
	return errors.New("Temporal namespace " + namespace + " lacks the Keyword search attribute(s) " +
		strings.Join(missing, ", ") + "; create them first:\n  " + strings.Join(cmds, "\n  "))
}
