// Package config loads edge's YAML configuration: it decodes strictly
// (unknown keys are errors), applies defaults in one place and validates,
// reporting every problem as FILE:LINE:COL: key.path: message.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file. The key names are a contract with
// users, docs and tests: add keys, never rename them.
type Config struct {
	// Listen holds the public listener addresses.
	Listen Listen `yaml:"listen"`
	// Admin is the address of the admin listener: metrics, health and
	// readiness, the hub's publish and admin API, reload (POST /-/reload)
	// and, with server.pprof, pprof. Loopback only by default:
	// "127.0.0.1:9180". "" turns it off.
	Admin string `yaml:"admin"`
	// AdminKeyFile, when set, names a file holding a bearer key that every
	// admin endpoint except /healthz, /readyz and /metrics requires
	// ("Authorization: Bearer KEY"): /publish/…, /hub/…, POST /-/reload and
	// pprof.
	// With or without it, the admin listener answers 421 to a Host that is
	// not its own address, localhost or a loopback IP (DNS rebinding), and
	// 403 to cross-site browser requests other than GET and HEAD. Default
	// none.
	AdminKeyFile string `yaml:"admin_key_file"`
	// Server holds connection limits and timeouts shared by every listener.
	Server Server `yaml:"server"`
	// Log selects the process log format and level.
	Log Log `yaml:"log"`
	// TLS configures certificates for every site served over HTTPS.
	TLS TLS `yaml:"tls"`
	// Redis, when set, connects the hub to Redis for fan-out across nodes.
	// Without it the hub runs in memory on this node.
	Redis *Redis `yaml:"redis"`
	// Sites are virtual hosts, chosen by the request's Host.
	Sites []Site `yaml:"sites"`
	// Include names files whose sites are appended to Sites (nginx
	// "include sites-enabled/*"): paths relative to this file's directory,
	// globs matched in name order. A glob that matches nothing is a
	// warning, a missing plain path an error. An included file holds only
	// sites and include (nested includes; a cycle is an error). A reload
	// reads them again.
	Include []string `yaml:"include"`

	// File is the path the configuration was loaded from.
	File string `yaml:"-"`
	// Warnings are problems that do not stop edge from running.
	Warnings Problems `yaml:"-"`

	pos map[string]Pos
	// files maps "sites[N]" to the included file site N came from; the
	// main file's sites are not in it.
	files map[string]string
}

// Listen holds the addresses of the public listeners. An empty address turns
// that listener off.
type Listen struct {
	// HTTP serves plain HTTP. With HTTPS on, it answers ACME HTTP-01
	// challenges and redirects everything else to HTTPS. Default ":80".
	HTTP string `yaml:"http"`
	// HTTPS serves TLS with automatic certificates. Default ":443" when any
	// site has a public host name or a manual certificate, or with tls.ca
	// internal or tls.on_demand; otherwise off.
	HTTPS string `yaml:"https"`
	// ProxyProtocol, when set, reads a PROXY protocol header (v1 or v2)
	// from load balancers on the http and https listeners (not admin):
	// nginx's "listen … proxy_protocol" with set_real_ip_from. Default off.
	ProxyProtocol *ProxyProtocol `yaml:"proxy_protocol"`
	// HTTP3 also serves HTTP/3 (QUIC) on the https address over UDP, and
	// announces it with Alt-Svc on HTTPS responses. It needs listen.https.
	// WebSocket upgrades stay on HTTP/1.1. Default false.
	HTTP3 bool `yaml:"http3"`
}

// ProxyProtocol accepts HAProxy's PROXY protocol header from trusted load
// balancers. The address in the header becomes the connection's client
// address: the access log, per-IP connection caps, rate limits, access
// rules and the X-Forwarded-For sent upstream all see it. A connection
// from a peer outside Trusted that starts with a PROXY header is closed
// (a client cannot claim an address). A reload changes the settings for
// new connections.
type ProxyProtocol struct {
	// Trusted lists the CIDRs (or single addresses) of the load balancers
	// allowed to send the header. Required: at least one.
	Trusted []string `yaml:"trusted"`
	// Timeout bounds the wait for the header from a trusted peer; a peer
	// that sends nothing in time is closed. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// Required makes the header mandatory from trusted peers: a trusted
	// connection without one is closed, as nginx does on a proxy_protocol
	// listener. false lets trusted peers connect with or without it (a
	// load balancer being switched over). Default true.
	Required *bool `yaml:"required"`
}

// Server holds limits and timeouts for the HTTP servers.
type Server struct {
	// ReadHeaderTimeout bounds how long a client may take to send request
	// headers (slowloris). Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle keep-alive connections (nginx
	// keepalive_timeout). Default 75s, as nginx.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds request line plus headers. Default 64KiB.
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes"`
	// MaxBodySize is the default request body limit for every route (nginx
	// client_max_body_size); larger bodies get 413. Default 1MiB, as nginx;
	// "0" in a route means unlimited.
	MaxBodySize ByteSize `yaml:"max_body_size"`
	// ShutdownTimeout is how long in-flight requests may finish after
	// SIGTERM before connections are closed. Default 30s.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// MaxConnections caps open client connections across the http and
	// https listeners (not admin); further connections wait in the kernel
	// backlog. 0 means unlimited. Default 0. A reload changes it for new
	// connections.
	MaxConnections int `yaml:"max_connections"`
	// MaxConnectionsPerIP caps open connections from one client address
	// across the http and https listeners; further ones are closed at
	// once. 0 means unlimited. Default 0.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// TrustedProxies lists CIDRs whose X-Forwarded-For and X-Real-IP are
	// believed. Default none: the peer address is the client. The client
	// address found is the one the access log, per-IP limits and the
	// upstream's X-Forwarded-For use.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ClientBodyTimeout is the longest wait between two reads of a request
	// body (nginx client_body_timeout); past it the read fails and the
	// client gets 408. Default 60s, as nginx.
	ClientBodyTimeout time.Duration `yaml:"client_body_timeout"`
	// MaxRequestsPerConnection is how many requests one client connection
	// may carry, HTTP/1.1 and HTTP/2 alike (nginx keepalive_requests); the
	// last response closes it (HTTP/2: GOAWAY once its streams are done).
	// Default 1000, as nginx; 0 means unlimited.
	MaxRequestsPerConnection int `yaml:"max_requests_per_connection"`
	// Pprof serves net/http/pprof on the admin listener. Default false.
	Pprof bool `yaml:"pprof"`
}

// Log selects the process log (not the access log).
type Log struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is text or json. Default text.
	Format string `yaml:"format"`
}

// Redis connects the hub to Redis.
type Redis struct {
	// URL is a redis:// or rediss:// URL, or unix:///path.sock.
	URL string `yaml:"url"`
	// Prefix is put before channel names in Redis. Default "edge:".
	Prefix string `yaml:"prefix"`
	// Sentinel, instead of URL, finds the master through Redis Sentinel
	// and follows it across failovers. Redis Cluster is not supported.
	Sentinel *RedisSentinel `yaml:"sentinel"`
}

// RedisSentinel names a master monitored by Redis Sentinel.
type RedisSentinel struct {
	// Master is the master's name in the sentinels' configuration
	// ("sentinel monitor NAME …").
	Master string `yaml:"master"`
	// Addrs are the sentinels, host:port each.
	Addrs []string `yaml:"addrs"`
	// PasswordFile holds the password of the master and replicas (and of
	// the sentinels when they require one), on its first line. Optional.
	PasswordFile string `yaml:"password_file"`
}

// Site is a virtual host: a set of host names and the routes under them.
type Site struct {
	// Hosts are exact names, IP addresses or "*.example.com" wildcards
	// (one or more labels before example.com, not example.com itself),
	// case-insensitive; SiteIndex matches them. A site without hosts is the
	// default site: it answers every host no other site has.
	Hosts []string `yaml:"hosts"`
	// TLS is an optional manual certificate, as nginx ssl_certificate.
	TLS *SiteTLS `yaml:"tls"`
	// HTTPRedirect sends plain-HTTP requests for this site to HTTPS with 308.
	// Default true when the HTTPS listener is on.
	HTTPRedirect *bool `yaml:"http_redirect"`
	// HSTS overrides tls.hsts for this site.
	HSTS *HSTS `yaml:"hsts"`
	// AccessLog writes one line per request the site answers, as nginx
	// does: those no route matches (404) and the redirects to a route's
	// trailing-slash path included; the default site's log also holds the
	// requests for hosts no site has. Default off.
	AccessLog *AccessLog `yaml:"access_log"`
	// ErrorPages answers edge's own error responses (a 502 when every
	// upstream is down, a 404 of no route, a 403 of an access rule…) with a
	// file of the site's static routes, keeping the status: nginx's
	// error_page. An upstream's own error responses pass through, as
	// nginx without proxy_intercept_errors.
	// Keys are statuses ("502"), values paths.
	ErrorPages map[string]string `yaml:"error_pages"`
	// Access and BasicAuth guard every route of the site that has none of
	// its own (nginx allow/deny and auth_basic at server level).
	Access    Access     `yaml:"access"`
	BasicAuth *BasicAuth `yaml:"basic_auth"`
	// Routes are matched by longest path prefix, as nginx locations.
	Routes []Route `yaml:"routes"`
}

// AccessLog configures a site's request log.
type AccessLog struct {
	// File is the path to append to; "" or "stderr" logs to stderr
	// (journald under systemd). Files are reopened on SIGUSR1.
	File string `yaml:"file"`
	// Format is combined (nginx/Apache) or json. Default combined.
	Format string `yaml:"format"`
}

// Route maps a path prefix to exactly one handler.
type Route struct {
	// Path is the prefix, starting with "/". "/static/" matches
	// "/static/x", not "/staticx"; a request for "/static" is redirected to
	// "/static/" with 301, as nginx does.
	Path string `yaml:"path"`
	// MaxBodySize overrides server.max_body_size for this route; 0 means
	// unlimited.
	MaxBodySize *ByteSize `yaml:"max_body_size"`
	// Headers adds or removes request and response headers.
	Headers *Headers `yaml:"headers"`
	// Access (allow/deny rules, 403) and BasicAuth (401) guard the route;
	// each replaces the site's.
	Access    Access     `yaml:"access"`
	BasicAuth *BasicAuth `yaml:"basic_auth"`
	// Limit caps each client's request rate and requests in progress.
	Limit *Limit `yaml:"limit"`
	// Rewrite changes the path (or redirects) before the handler runs.
	Rewrite []Rewrite `yaml:"rewrite"`

	// Static serves files; Proxy passes requests to upstreams; FastCGI
	// runs scripts on FastCGI servers (PHP-FPM); Hub is a WebSocket
	// broadcast endpoint; Redirect and Respond answer with a redirect or a
	// fixed response. Exactly one is set.
	Static   *Static   `yaml:"static"`
	Proxy    *Proxy    `yaml:"proxy"`
	Hub      *Hub      `yaml:"hub"`
	Redirect *Redirect `yaml:"redirect"`
	Respond  *Respond  `yaml:"respond"`
	FastCGI  *FastCGI  `yaml:"fastcgi"`
}

// Headers edits request headers (before the handler) and response headers.
type Headers struct {
	Request  HeaderOps `yaml:"request"`
	Response HeaderOps `yaml:"response"`
}

// HeaderOps sets, adds and removes header fields.
type HeaderOps struct {
	// Set replaces a field's values.
	Set map[string]string `yaml:"set"`
	// Add appends a value.
	Add map[string]string `yaml:"add"`
	// Remove deletes fields.
	Remove []string `yaml:"remove"`
}

// Problem is one configuration error or warning.
type Problem struct {
	File      string
	Line, Col int
	// Path is the key path, such as "sites[0].routes[2].static.root".
	Path    string
	Msg     string
	Warning bool
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Line, max(p.Col, 1))
	}
	b.WriteString(": ")
	if p.Warning {
		b.WriteString("warning: ")
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is a list of configuration problems; as an error it prints one
// per line.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func (ps Problems) sort() {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].File != ps[j].File {
			return ps[i].File < ps[j].File
		}
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Col < ps[j].Col
	})
}

// Load reads, decodes, defaults and validates the file at path. On failure
// the error is a Problems listing every problem found. Warnings of a valid
// configuration are in Config.Warnings.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, Problems{{File: path, Msg: "configuration file not found"}}
		}
		return nil, Problems{{File: path, Msg: err.Error()}}
	}
	return Parse(path, data)
}

// Parse decodes data as the configuration file named file. Relative paths in
// the configuration are resolved against file's directory.
func Parse(file string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Problems{syntaxProblem(file, err)}
	}
	c := &Config{File: file}
	d := &decoder{file: file, pos: map[string]Pos{}}
	if root.Kind != 0 {
		d.decode(&root, reflectValue(c), "")
	}
	c.pos = d.pos
	c.files = map[string]string{}
	in := &includer{c: c, seen: map[string]bool{}}
	mainAbs, err := filepath.Abs(file)
	if err != nil {
		mainAbs = file
	}
	in.seen[mainAbs] = true
	in.includes(file, c.Include, c.pos, []string{mainAbs})
	// Validate even after decoding problems, so that one run reports
	// everything; a key that failed to decode is left at its default.
	c.applyDefaults()
	v := &validator{c: c}
	v.validate()
	errs := d.probs
	for _, p := range append(in.probs, v.probs...) {
		if p.Warning {
			c.Warnings = append(c.Warnings, p)
		} else {
			errs = append(errs, p)
		}
	}
	errs.sort()
	c.Warnings.sort()
	if len(errs) > 0 {
		return nil, errs
	}
	return c, nil
}

// syntaxProblem turns a yaml.v3 syntax error ("yaml: line 3: …") into a
// Problem with a line number.
func syntaxProblem(file string, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	p := Problem{File: file, Msg: "invalid YAML: " + msg}
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		p.Line, p.Col = line, 1
		_, rest, _ := strings.Cut(msg, ":")
		p.Msg = "invalid YAML:" + rest
	}
	return p
}

// Pos returns where the key path was written, or the nearest enclosing key
// that was; the zero Pos if none was.
func (c *Config) Pos(path string) Pos {
	for {
		if p, ok := c.pos[path]; ok {
			return p
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			return Pos{}
		}
		path = path[:i]
	}
}

// resolve makes a relative path relative to the configuration file.
func (c *Config) resolve(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(c.File), p)
}

func reflectValue(c *Config) reflect.Value { return reflect.ValueOf(c).Elem() }
