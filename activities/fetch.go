package activities

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Hydration fetches the full record behind a thin notification from a configured URL. The URL's
// scheme, host and port come from configuration only; the target is judged after DNS resolution
// and on every redirect, so neither a DNS answer nor an upstream redirect can point the worker at
// internal services (cloud metadata, databases, the worker's own admin ports).

// Defaults of FetchPolicy.
const (
	DefaultFetchTimeout  = 10 * time.Second
	DefaultFetchMaxBytes = 1 << 20
)

// maxFetchRedirects bounds redirect chains: enough for http->https and a moved resource, short
// enough that a loop fails fast.
const maxFetchRedirects = 5

// FetchPolicy bounds what hydration may fetch.
type FetchPolicy struct {
	Allow    []string      // INTAKE_HYDRATION_ALLOW entries: IPs, CIDRs or host names that may be fetched although private/loopback/link-local
	Timeout  time.Duration // per request (connect + headers + body); 0 means DefaultFetchTimeout (10s)
	MaxBytes int64         // response size cap; 0 means DefaultFetchMaxBytes (1 MiB)
}

// FetchError is a failed fetch: Status is the HTTP status (0 when no answer), Retryable says
// whether trying again may help (5xx, 429, timeouts, connection errors), Message never contains
// header values (they may be secrets).
type FetchError struct {
	Status    int
	Retryable bool
	Message   string
}

func (e *FetchError) Error() string { return e.Message }

// ParseAllow splits a comma-separated INTAKE_HYDRATION_ALLOW value (spaces trimmed, empties
// dropped) and validates each entry (IP, CIDR, or host name); the error names the bad entry.
func ParseAllow(s string) ([]string, error) {
	var out []string
	for e := range strings.SplitSeq(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if _, _, err := parseAllowEntry(e); err != nil {
			return nil, fmt.Errorf("INTAKE_HYDRATION_ALLOW entry %q: %w", e, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// hydrationAllow is FetchPolicy.Allow in the form the checks use.
type hydrationAllow struct {
	hosts    map[string]bool // normalized host names
	prefixes []netip.Prefix  // single IPs are /32 or /128 prefixes
}

func newHydrationAllow(entries []string) hydrationAllow {
	l := hydrationAllow{hosts: map[string]bool{}}
	for _, e := range entries {
		// An entry that does not parse permits nothing: the list should have passed ParseAllow,
		// and failing closed is the safe way to treat one that did not.
		host, prefix, err := parseAllowEntry(strings.TrimSpace(e))
		switch {
		case err != nil:
		case host != "":
			l.hosts[host] = true
		default:
			l.prefixes = append(l.prefixes, prefix)
		}
	}
	return l
}

// parseAllowEntry reads one entry as an IP, a CIDR or a host name (returned normalized).
func parseAllowEntry(e string) (host string, prefix netip.Prefix, err error) {
	if a, err := netip.ParseAddr(e); err == nil {
		if a.Zone() != "" {
			return "", netip.Prefix{}, errors.New("an IPv6 zone is not supported")
		}
		a = a.Unmap()
		return "", netip.PrefixFrom(a, a.BitLen()), nil
	}
	if strings.Contains(e, "/") {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			return "", netip.Prefix{}, errors.New("not a valid CIDR")
		}
		// ::ffff:10.0.0.0/104 means 10.0.0.0/8: addresses are compared unmapped.
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return "", p.Masked(), nil
	}
	if !validHostName(e) {
		return "", netip.Prefix{}, errors.New("not an IP, a CIDR or a host name")
	}
	return normalizeHost(e), netip.Prefix{}, nil
}

// validHostName accepts DNS names (letters, digits, '-', and '_' as used by container service
// names) but not things that look like a mistyped IP such as "10.0.0", nor URLs or host:port.
func validHostName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
			if !ok {
				return false
			}
		}
	}
	return strings.Trim(labels[len(labels)-1], "0123456789") != ""
}

func normalizeHost(h string) string { return strings.ToLower(strings.TrimSuffix(h, ".")) }

func (l hydrationAllow) hostAllowed(host string) bool { return l.hosts[normalizeHost(host)] }

func (l hydrationAllow) addrAllowed(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// internalPrefixes are the refused ranges that netip's predicates do not name.
var internalPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network": Linux connects 0.x to the local host
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT shared space, internal to a provider's network
	netip.MustParsePrefix("fec0::/10"),     // deprecated IPv6 site-local, still routed internally by some
}

// nat64Prefix embeds an IPv4 address (RFC 6052); behind a NAT64 gateway 64:ff9b::a9fe:a9fe
// reaches 169.254.169.254, so the embedded address is what gets judged.
var nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")

// internalHydrationAddr reports whether a is loopback, private, link-local, unspecified,
// multicast, CGNAT or unique-local, looking through IPv4-mapped and NAT64 forms.
func internalHydrationAddr(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	if nat64Prefix.Contains(a) {
		b := a.As16()
		a = netip.AddrFrom4([4]byte(b[12:]))
	}
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return true
	}
	for _, p := range internalPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

const hydrationRefused = "private/loopback/link-local address (set INTAKE_HYDRATION_ALLOW to permit it)"

// urlPlaceholder matches the {...} placeholders of a URL template.
var urlPlaceholder = regexp.MustCompile(`\{[^{}]*\}`)

// splitURLTemplate cuts a URL template into scheme+authority, path, query (with '?') and
// fragment (with '#') without parsing it, so a placeholder's position is known before it is
// filled. ok is false when there is no "scheme://".
func splitURLTemplate(t string) (head, path, query, fragment string, ok bool) {
	i := strings.Index(t, "://")
	if i < 0 {
		return "", "", "", "", false
	}
	rest := t[i+3:]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	head, rest = t[:i+3+end], rest[end:]
	if j := strings.IndexByte(rest, '#'); j >= 0 {
		rest, fragment = rest[:j], rest[j:]
	}
	if j := strings.IndexByte(rest, '?'); j >= 0 {
		rest, query = rest[:j], rest[j:]
	}
	return head, rest, query, fragment, true
}

// CheckURL is the write-time check of a configured URL template: scheme http or https, a host, no
// user info, no placeholder in scheme, host or port; a host that is a literal IP which is
// loopback/private/link-local/unspecified/multicast (IPv4 or IPv6, incl. 169.254.169.254 and
// IPv4-mapped IPv6) is refused unless Allow lists it. Host names are not resolved here (Fetch
// judges their addresses). Placeholders like {id} are replaced by "x" before parsing.
func (p FetchPolicy) CheckURL(rawURL string) error {
	if head, _, _, _, ok := splitURLTemplate(rawURL); ok && urlPlaceholder.MatchString(head) {
		return fmt.Errorf("hydration URL %q: a placeholder may stand only in the path or query, never in scheme, host or port", rawURL)
	}
	u, err := url.Parse(urlPlaceholder.ReplaceAllString(rawURL, "x"))
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("hydration URL %q is not a valid URL: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("hydration URL %q: scheme must be http or https", rawURL)
	}
	if u.User != nil {
		return fmt.Errorf("hydration URL %q: user info is not allowed (send credentials as a header)", rawURL)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("hydration URL %q has no host", rawURL)
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && internalHydrationAddr(a) && !newHydrationAllow(p.Allow).addrAllowed(a) {
		return fmt.Errorf("hydration URL host %s is not allowed: %s", u.Hostname(), hydrationRefused)
	}
	return nil
}

// ExpandURL fills the URL template's {id} placeholders with id, escaped for where it stands:
// url.PathEscape in the path (so "a/b" cannot add a path segment), url.QueryEscape in the query.
// An id that is empty, "." or ".." is refused (it would name another resource), and so is a
// placeholder in scheme, host, port or fragment: values from payloads never choose the host.
// Other {...} text is left as it is.
func ExpandURL(tmpl, id string) (string, error) {
	const ph = "{id}"
	head, path, query, fragment, ok := splitURLTemplate(tmpl)
	if !ok {
		return "", fmt.Errorf("hydration URL template %q has no scheme://host", tmpl)
	}
	if strings.Contains(head, ph) {
		return "", fmt.Errorf("hydration URL template %q: {id} may stand only in the path or query, never in scheme, host or port", tmpl)
	}
	if strings.Contains(fragment, ph) {
		return "", fmt.Errorf("hydration URL template %q: {id} in the fragment is never sent", tmpl)
	}
	if strings.Contains(path+query, ph) && (id == "" || id == "." || id == "..") {
		return "", fmt.Errorf("hydration id %q cannot be put in a URL", id)
	}
	out := head + strings.ReplaceAll(path, ph, url.PathEscape(id)) + strings.ReplaceAll(query, ph, url.QueryEscape(id)) + fragment
	if _, err := url.Parse(out); err != nil {
		return "", fmt.Errorf("hydration URL template %q with id %q is not a valid URL", tmpl, id)
	}
	return out, nil
}

// Fetcher does hydration GETs under a policy. Safe for concurrent use; build once per process
// (it keeps connections alive between fetches).
type Fetcher struct {
	allow    hydrationAllow
	timeout  time.Duration
	maxBytes int64
	dialer   net.Dialer
	client   *http.Client
}

// NewFetcher builds a Fetcher. Allow entries are expected to have passed ParseAllow; one that
// does not parse permits nothing.
func NewFetcher(p FetchPolicy) *Fetcher {
	f := &Fetcher{allow: newHydrationAllow(p.Allow), timeout: p.Timeout, maxBytes: p.MaxBytes}
	if f.timeout <= 0 {
		f.timeout = DefaultFetchTimeout
	}
	if f.maxBytes <= 0 {
		f.maxBytes = DefaultFetchMaxBytes
	}
	f.dialer = net.Dialer{Timeout: f.timeout, KeepAlive: 30 * time.Second}
	f.client = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // a proxy would do its own resolution and defeat the address checks
			DialContext:            f.dial,
			ForceAttemptHTTP2:      true, // a custom DialContext turns HTTP/2 off otherwise
			TLSHandshakeTimeout:    f.timeout,
			MaxIdleConns:           64,
			IdleConnTimeout:        90 * time.Second,
			MaxResponseHeaderBytes: 64 << 10,
		},
		CheckRedirect: checkFetchRedirect,
		Timeout:       f.timeout,
	}
	return f
}

// dial resolves the host itself, judges every address, and connects to a judged address, never
// resolving again: a second lookup could answer differently (DNS rebinding). It runs for the
// first request and for every redirect target that needs a new connection.
func (f *Fetcher) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	addrs, err := f.resolve(ctx, network, host)
	if err != nil {
		return nil, err
	}
	if !f.allow.hostAllowed(host) {
		// One internal address refuses the host: a name answering both public and internal
		// addresses is how rebinding attacks pick their moment.
		for _, a := range addrs {
			if internalHydrationAddr(a) && !f.allow.addrAllowed(a) {
				return nil, &FetchError{Message: fmt.Sprintf("hydration target %s (%s) is not allowed: %s", host, a.WithZone(""), hydrationRefused)}
			}
		}
	}
	var firstErr error
	for _, a := range addrs {
		conn, err := f.dialer.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, firstErr
}

// resolve returns host's addresses, unmapped so IPv4 dials as IPv4 and prefixes compare.
func (f *Fetcher) resolve(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	ipNetwork := map[string]string{"tcp4": "ip4", "tcp6": "ip6"}[network]
	if ipNetwork == "" {
		ipNetwork = "ip"
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, ipNetwork, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}

// checkFetchRedirect bounds redirect chains and keeps the caller's headers (credentials) from
// travelling to another origin; the target's address is judged by dial like the first one.
func checkFetchRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxFetchRedirects {
		return &FetchError{Message: fmt.Sprintf("upstream redirected more than %d times (last to %s)", maxFetchRedirects, describeURL(req.URL))}
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return &FetchError{Message: fmt.Sprintf("upstream redirected to a %s URL; only http and https are fetched", req.URL.Scheme)}
	}
	if req.URL.User != nil {
		return &FetchError{Message: fmt.Sprintf("upstream redirected to a URL with user info (%s)", describeURL(req.URL))}
	}
	first := via[0].URL
	// Go already drops Authorization and Cookie across domains, but not custom headers such as
	// X-Api-Key, nor on an https -> http downgrade; so any origin change keeps only Accept.
	if req.URL.Scheme != first.Scheme || !strings.EqualFold(req.URL.Host, first.Host) {
		req.Header = http.Header{"Accept": via[0].Header.Values("Accept")}
	}
	return nil
}

// describeURL names a URL in messages: scheme, host and path, without user info or query (a
// query may carry a key).
func describeURL(u *url.URL) string {
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// Fetch GETs rawURL with the given headers (Accept: application/json added unless set) and
// returns the body, which must be JSON. 2xx: the body. 4xx except 408/429: non-retryable.
// 5xx/408/429/timeouts/connection errors: retryable. A body over MaxBytes, a refused target and
// a bad redirect are non-retryable. Redirects are followed (at most 5), each target checked like
// the first. Every failure is a *FetchError.
func (f *Fetcher) Fetch(ctx context.Context, rawURL string, headers map[string]string) ([]byte, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &FetchError{Message: "hydration URL is not an absolute http(s) URL"}
	}
	if u.User != nil {
		return nil, &FetchError{Message: "hydration URL must not carry user info (send credentials as a header)"}
	}
	target := describeURL(u)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, &FetchError{Message: fmt.Sprintf("GET %s: %v", target, err)}
	}
	for k, v := range headers {
		if !validHeaderName(k) || strings.ContainsAny(v, "\r\n\x00") {
			// The value is left out of the message: it may be a secret.
			return nil, &FetchError{Message: fmt.Sprintf("hydration header %q has an invalid name or value", k)}
		}
		req.Header.Set(k, v)
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}

	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.transportError(ctx, err, target)
	}
	defer resp.Body.Close()
	if resp.Request != nil {
		target = describeURL(resp.Request.URL) // after redirects, name where the answer came from
	}

	code := resp.StatusCode
	if code < 200 || code > 299 {
		// Read a little so the connection can be reused; the body stays out of the message.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		return nil, &FetchError{
			Status:    code,
			Retryable: code >= 500 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests,
			Message:   fmt.Sprintf("upstream answered %s for GET %s", httpStatusText(code), target),
		}
	}
	tooBig := &FetchError{Status: code, Message: fmt.Sprintf("upstream answer is over the %d-byte limit (GET %s)", f.maxBytes, target)}
	if resp.ContentLength > f.maxBytes {
		return nil, tooBig
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxBytes+1))
	if err != nil {
		return nil, f.transportError(ctx, err, target)
	}
	if int64(len(body)) > f.maxBytes {
		return nil, tooBig
	}
	// The body is checked, not Content-Type: many APIs label JSON loosely.
	if !json.Valid(body) {
		return nil, &FetchError{Status: code, Message: fmt.Sprintf("upstream answered non-JSON for GET %s", target)}
	}
	return body, nil
}

// transportError turns an error without an HTTP answer into a FetchError: refusals and redirect
// policy pass through as they are (non-retryable), everything else may heal and is retryable.
func (f *Fetcher) transportError(ctx context.Context, err error, target string) *FetchError {
	var fe *FetchError
	if errors.As(err, &fe) {
		return fe
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &FetchError{Retryable: true, Message: fmt.Sprintf("upstream did not answer GET %s within %s", target, f.timeout)}
	}
	// url.Error repeats the full URL, query included; the message names the target instead.
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return &FetchError{Retryable: true, Message: fmt.Sprintf("GET %s failed: %v", target, err)}
}

func httpStatusText(code int) string {
	return strings.TrimSpace(fmt.Sprintf("%d %s", code, http.StatusText(code)))
}

// validHeaderName accepts RFC 9110 tokens.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}
