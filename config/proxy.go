package config

import (
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Proxy forwards requests to a pool of upstream servers, WebSocket and other
// upgrades included.
type Proxy struct {
	// Upstreams are the servers: "http://host:port", "https://host:port" or
	// "unix:/path.sock", each a URL or a mapping with url, weight, backup,
	// max_fails and fail_timeout.
	Upstreams []Upstream `yaml:"upstreams"`
	// Balance is round_robin (default, smooth weighted), least_conn (fewest
	// open requests and tunnels per weight), ip_hash (sticky by client IP:
	// weighted rendezvous hashing, so a client moves only when its server
	// goes down, and every edge node picks the same server) or first (the
	// first available server in the order listed).
	Balance string `yaml:"balance"`
	// MaxFails failures within FailTimeout mark a server down for
	// FailTimeout, as nginx. A failure is a connection error, a timeout or
	// an error reading the response header; HTTP error statuses are not
	// failures. Default 1; 0 turns passive health off. As nginx, a pool of
	// one server is never marked down by passive health.
	MaxFails *int `yaml:"max_fails"`
	// FailTimeout is the window and the down time. Default 10s.
	FailTimeout time.Duration `yaml:"fail_timeout"`
	// HealthCheck probes servers actively. Default off.
	HealthCheck *HealthCheck `yaml:"health_check"`
	// DialTimeout bounds connecting to an upstream; a refused or unreachable
	// upstream answers 502 within it. Default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// TLSHandshakeTimeout bounds the TLS handshake to an https upstream.
	// Default 5s.
	TLSHandshakeTimeout time.Duration `yaml:"tls_handshake_timeout"`
	// ResponseHeaderTimeout bounds the wait for the response headers; 504
	// after it. There is no timeout on bodies. Default 60s.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// TunnelIdleTimeout closes an upgraded connection (WebSocket) after this
	// long without traffic either way. Default 1h; "0" means never.
	TunnelIdleTimeout *time.Duration `yaml:"tunnel_idle_timeout"`
	// KeepAlive is the number of idle connections kept per upstream server
	// (nginx upstream keepalive, with HTTP/1.1 to upstreams always on).
	// Default 64, above a busy client's concurrency, so that connections
	// are reused rather than re-dialled; 0 closes each connection after its
	// request.
	KeepAlive *int `yaml:"keepalive"`
	// Host sets the Host header sent upstream. Default: the client's Host.
	Host string `yaml:"host"`
	// Forwarded adds an RFC 7239 Forwarded header. Default false.
	Forwarded bool `yaml:"forwarded"`
	// TLS configures connections to https upstreams.
	TLS *UpstreamTLS `yaml:"tls"`
	// Retries is how many other servers are tried when connecting to a
	// server failed, so that nothing was sent to it (refused, unreachable,
	// dial or TLS handshake timeout). Because nothing was sent, this is safe
	// for every method, as nginx's proxy_next_upstream error; upgrades are
	// retried the same way when the failure came before the 101. A request
	// that reached a server is never sent again. Default 1.
	Retries *int `yaml:"retries"`
	// FlushInterval is how often a response with a known length is flushed
	// to the client while it is copied. Server-Sent Events and responses
	// without a Content-Length (chunked) are always flushed after every
	// write. Default 0: a response with a known length is flushed when the
	// write buffer fills and at its end.
	FlushInterval time.Duration `yaml:"flush_interval"`
	// RequestBuffering is how much of a request body is read before the
	// upstream is contacted (nginx proxy_request_buffering, in memory): a
	// body up to this size is read completely first and sent with a
	// Content-Length, so that a client that sends its body slowly or not
	// at all never holds a backend worker; a larger body streams after the
	// buffered prefix. Default 64KiB; 0 turns buffering off.
	RequestBuffering *ByteSize `yaml:"request_buffering"`
	// AllowTrace forwards TRACE requests. Default false: TRACE is answered
	// 405, as it would echo the client's headers (cookies included) back
	// from the backend.
	AllowTrace bool `yaml:"allow_trace"`
	// MaxConcurrentDials bounds the connections being opened to one
	// upstream server at a time; more requests wait for one of those or
	// for a connection to come back to the idle pool. It stops clients
	// that cancel requests en masse (HTTP/2 rapid reset) from making edge
	// open connections to the backend without bound. Default 8.
	MaxConcurrentDials int `yaml:"max_concurrent_dials"`
	// Compress compresses responses on their way to the client (nginx
	// gzip on, gzip_types, gzip_proxied any), with the keys and defaults
	// of static's compress: a response is compressed when the client
	// accepts one of encodings, its Content-Type is in types and its body
	// is at least min_size (a body without Content-Length is held until
	// min_size bytes have come, or its end, before the decision). Never
	// compressed: responses the upstream encoded already, HEAD, Range
	// requests, 204, 206 and 304, Server-Sent Events, upgrades, and
	// responses with Cache-Control no-transform. Default off; writing a
	// compress block turns it on. min_size is at most 1MiB here.
	Compress *Compress `yaml:"compress"`
}

// MaxProxyCompressMinSize bounds proxy.compress.min_size: that many bytes
// of a response without Content-Length are held in memory per request
// before edge decides whether to compress it.
const MaxProxyCompressMinSize = 1 << 20

// Upstream is one server of a proxy pool.
type Upstream struct {
	// URL is "http://host:port", "https://host:port" or "unix:/path.sock";
	// no path, query or credentials.
	URL string `yaml:"url"`
	// Weight for round_robin, least_conn and ip_hash. Default 1.
	Weight int `yaml:"weight"`
	// Backup servers get traffic only when all others are down.
	Backup bool `yaml:"backup"`
	// MaxFails overrides the pool's max_fails for this server.
	MaxFails *int `yaml:"max_fails"`
	// FailTimeout overrides the pool's fail_timeout for this server.
	FailTimeout time.Duration `yaml:"fail_timeout"`
}

func (u *Upstream) setScalar(s string) error {
	if s == "" {
		return fmt.Errorf("empty upstream")
	}
	u.URL = s
	return nil
}

// UnixSocket returns the socket path of a "unix:/path" (or
// "unix:///path") upstream URL, and whether u is one.
func UnixSocket(u string) (string, bool) {
	rest, ok := strings.CutPrefix(u, "unix:")
	if !ok {
		return "", false
	}
	return strings.TrimPrefix(rest, "//"), true
}

// HealthCheck probes each upstream server.
type HealthCheck struct {
	// Path requested with GET. Default "/".
	Path string `yaml:"path"`
	// Interval between probes. Default 10s.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one probe. Default 2s.
	Timeout time.Duration `yaml:"timeout"`
	// Status expected; 0 means any 2xx or 3xx. Default 0.
	Status int `yaml:"status"`
	// Fails consecutive failed probes mark a server down. Default 1.
	Fails int `yaml:"fails"`
	// Passes consecutive good probes bring it back. Default 1.
	Passes int `yaml:"passes"`
}

// UpstreamTLS configures TLS towards https upstreams.
type UpstreamTLS struct {
	// CA is a PEM file of roots to trust instead of the system's.
	CA string `yaml:"ca"`
	// ServerName is the SNI and verified name. Default: the URL's host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns verification off. Never in production.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// maxUnixPath is the longest socket path the kernel takes (sun_path holds
// 108 bytes on Linux, including the terminating NUL).
const maxUnixPath = 107

func (v *validator) proxy(pp string, p *Proxy) {
	if len(p.Upstreams) == 0 {
		v.errf(pp+".upstreams", "no upstreams: add at least one URL such as http://127.0.0.1:9000")
	}
	seen := map[string]string{}
	for i, u := range p.Upstreams {
		up := fmt.Sprintf("%s.upstreams[%d]", pp, i)
		v.upstream(up, u)
		if prev, dup := seen[u.URL]; dup && u.URL != "" {
			v.errf(up, "upstream %q is also %s", u.URL, prev)
		}
		seen[u.URL] = up
	}
	v.poolKeys(pp, p)
	if p.Host != "" && (!httpguts.ValidHostHeader(p.Host) || strings.ContainsAny(p.Host, "/ ")) {
		v.errf(pp+".host", "invalid host %q: want a name or name:port", p.Host)
	}
	if t := p.TLS; t != nil && t.CA != "" {
		v.pemCerts(pp+".tls.ca", t.CA)
	}
	v.compress(pp+".compress", p.Compress)
	if c := p.Compress; c != nil && c.MinSize > MaxProxyCompressMinSize {
		v.errf(pp+".compress.min_size", "%s is more than %s: a body without Content-Length is held in memory up to min_size", c.MinSize, ByteSize(MaxProxyCompressMinSize))
	}
}

// poolKeys checks the keys a proxy shares with a fastcgi route: balance,
// health and limits.
func (v *validator) poolKeys(pp string, p *Proxy) {
	v.oneOf(pp+".balance", p.Balance, "round_robin", "least_conn", "ip_hash", "first")
	if *p.MaxFails < 0 {
		v.errf(pp+".max_fails", "must not be negative")
	}
	if *p.KeepAlive < 0 {
		v.errf(pp+".keepalive", "must not be negative")
	}
	if *p.Retries < 0 {
		v.errf(pp+".retries", "must not be negative")
	}
	if p.MaxConcurrentDials < 0 {
		v.errf(pp+".max_concurrent_dials", "must not be negative")
	}
	if hc := p.HealthCheck; hc != nil {
		if !strings.HasPrefix(hc.Path, "/") {
			v.errf(pp+".health_check.path", "path %q must start with /", hc.Path)
		}
		if hc.Status != 0 && (hc.Status < 100 || hc.Status > 599) {
			v.errf(pp+".health_check.status", "invalid HTTP status %d", hc.Status)
		}
		if hc.Timeout > hc.Interval {
			v.errf(pp+".health_check.timeout", "timeout %s is longer than interval %s", hc.Timeout, hc.Interval)
		}
		if hc.Fails < 0 {
			v.errf(pp+".health_check.fails", "must not be negative")
		}
		if hc.Passes < 0 {
			v.errf(pp+".health_check.passes", "must not be negative")
		}
	}
}

func (v *validator) upstream(path string, u Upstream) {
	if u.Weight < 0 {
		v.errf(path+".weight", "must not be negative")
	}
	if u.MaxFails != nil && *u.MaxFails < 0 {
		v.errf(path+".max_fails", "must not be negative")
	}
	if sock, ok := UnixSocket(u.URL); ok {
		if sock == "" || !strings.HasPrefix(sock, "/") {
			v.errf(path, "unix upstream %q needs an absolute socket path, as unix:/run/app.sock", u.URL)
			return
		}
		if len(sock) > maxUnixPath {
			v.errf(path, "socket path %s is longer than %d bytes", sock, maxUnixPath)
			return
		}
		// The socket may appear after edge starts (the backend starts
		// later), so a missing file is a warning, not an error.
		if st, err := os.Stat(sock); err == nil && st.Mode()&os.ModeSocket == 0 {
			v.errf(path, "%s is not a socket", sock)
		} else if err != nil {
			v.warnf(path, "socket %s does not exist yet", sock)
		}
		return
	}
	pu, err := url.Parse(u.URL)
	switch {
	case err != nil:
		v.errf(path, "invalid URL %q", u.URL)
	case pu.Scheme != "http" && pu.Scheme != "https":
		v.errf(path, "unknown scheme %q in %q: want http://, https:// or unix:/path", pu.Scheme, u.URL)
	case pu.Host == "":
		v.errf(path, "missing host in %q", u.URL)
	case pu.User != nil:
		v.errf(path, "upstream %q must not hold credentials", u.URL)
	case pu.Path != "" && pu.Path != "/" || pu.RawQuery != "" || pu.Fragment != "":
		v.errf(path, "upstream %q must not have a path or query", u.URL)
	}
}

func (p *Proxy) defaults(c *Config) {
	setStr(&p.Balance, "round_robin")
	setInt(&p.MaxFails, 1)
	setDur(&p.FailTimeout, 10*time.Second)
	setDur(&p.DialTimeout, 5*time.Second)
	setDur(&p.TLSHandshakeTimeout, 5*time.Second)
	setDur(&p.ResponseHeaderTimeout, 60*time.Second)
	if p.TunnelIdleTimeout == nil {
		d := time.Hour
		p.TunnelIdleTimeout = &d
	}
	setInt(&p.KeepAlive, 64)
	setInt(&p.Retries, 1)
	if p.RequestBuffering == nil {
		b := ByteSize(64 << 10)
		p.RequestBuffering = &b
	}
	if p.MaxConcurrentDials == 0 {
		p.MaxConcurrentDials = 8
	}
	for i := range p.Upstreams {
		u := &p.Upstreams[i]
		if u.Weight == 0 {
			u.Weight = 1
		}
		setInt(&u.MaxFails, *p.MaxFails)
		setDur(&u.FailTimeout, p.FailTimeout)
	}
	if hc := p.HealthCheck; hc != nil {
		setStr(&hc.Path, "/")
		setDur(&hc.Interval, 10*time.Second)
		setDur(&hc.Timeout, 2*time.Second)
		if hc.Fails == 0 {
			hc.Fails = 1
		}
		if hc.Passes == 0 {
			hc.Passes = 1
		}
	}
	if p.TLS != nil {
		p.TLS.CA = c.resolve(p.TLS.CA)
	}
	p.Compress.defaults()
}
