package config

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// FastCGI runs scripts on FastCGI servers (PHP-FPM): nginx's fastcgi_pass.
// Its servers form a pool with the same balancing, passive and active
// health and retries as a proxy's upstreams; the proxy handler runs it,
// with a FastCGI client in place of its HTTP one.
type FastCGI struct {
	// Upstreams are the FastCGI servers: "unix:/run/php/php8.2-fpm.sock",
	// "127.0.0.1:9000" or "tcp://127.0.0.1:9000", each a scalar or a
	// mapping with url, weight, backup, max_fails and fail_timeout, as a
	// proxy's. Required.
	Upstreams []Upstream `yaml:"upstreams"`
	// Root is the document root (DOCUMENT_ROOT): a request's script is
	// the file its path names under it. Required.
	Root string `yaml:"root"`
	// Index is the script of a request for a directory ("/" runs
	// /index.php) and of a path that names no script (a front controller:
	// "/users/42" runs /index.php, with REQUEST_URI /users/42). Default
	// index.php.
	Index string `yaml:"index"`
	// SplitPath ends the script name in a path: "/index.php/foo" runs
	// /index.php with PATH_INFO /foo (nginx fastcgi_split_path_info).
	// Only files whose name ends in it are ever run. Default .php.
	SplitPath string `yaml:"split_path"`
	// Env adds FastCGI parameters (nginx fastcgi_param), such as APP_ENV;
	// they override the standard CGI ones of the same name.
	Env map[string]string `yaml:"env"`

	// Balance, MaxFails, FailTimeout, HealthCheck, DialTimeout,
	// ResponseHeaderTimeout, Retries and MaxConcurrentDials mean what
	// they mean for a proxy, with its defaults. A health check requests
	// its path as a script.
	Balance               string        `yaml:"balance"`
	MaxFails              *int          `yaml:"max_fails"`
	FailTimeout           time.Duration `yaml:"fail_timeout"`
	HealthCheck           *HealthCheck  `yaml:"health_check"`
	DialTimeout           time.Duration `yaml:"dial_timeout"`
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	Retries               *int          `yaml:"retries"`
	MaxConcurrentDials    int           `yaml:"max_concurrent_dials"`
	// RequestBuffering is read before the server is contacted, as a
	// proxy's, so that a slow client holds no PHP worker. Default 64KiB.
	RequestBuffering *ByteSize `yaml:"request_buffering"`
	// KeepAlive is the number of idle connections kept per server, with
	// FastCGI's keep-conn flag. Default 0 (a connection per request, as
	// nginx without fastcgi_keep_conn): an idle connection holds a
	// php-fpm worker, so keep it below pm.max_children, or requests
	// beyond the pool wait for a worker that never frees.
	KeepAlive *int `yaml:"keepalive"`

	// Pool is the proxy pool the keys above make: the upstreams as
	// "unix:/path" or "tcp://host:port", and the proxy defaults. Set by
	// the defaults; not a configuration key.
	Pool *Proxy `yaml:"-"`
}

// FastCGIAddr returns the address of a "tcp://host:port" pool URL, and
// whether u is one.
func FastCGIAddr(u string) (string, bool) {
	return strings.CutPrefix(u, "tcp://")
}

// fastcgiURL writes a FastCGI upstream the way the pool takes it:
// "host:port" becomes "tcp://host:port"; unix sockets stay.
func fastcgiURL(u string) string {
	if _, ok := UnixSocket(u); ok || strings.HasPrefix(u, "tcp://") || u == "" {
		return u
	}
	return "tcp://" + u
}

func (f *FastCGI) defaults(c *Config) {
	f.Root = c.resolve(f.Root)
	setStr(&f.Index, "index.php")
	setStr(&f.SplitPath, ".php")
	if f.KeepAlive == nil {
		n := 0
		f.KeepAlive = &n
	}
	p := &Proxy{
		Balance: f.Balance, MaxFails: f.MaxFails, FailTimeout: f.FailTimeout,
		HealthCheck: f.HealthCheck, DialTimeout: f.DialTimeout,
		ResponseHeaderTimeout: f.ResponseHeaderTimeout, Retries: f.Retries,
		MaxConcurrentDials: f.MaxConcurrentDials, RequestBuffering: f.RequestBuffering,
		KeepAlive: f.KeepAlive,
	}
	for _, u := range f.Upstreams {
		u.URL = fastcgiURL(u.URL)
		p.Upstreams = append(p.Upstreams, u)
	}
	p.defaults(c)
	f.Pool = p
}

func (v *validator) fastcgi(fp string, f *FastCGI) {
	if len(f.Upstreams) == 0 {
		v.errf(fp+".upstreams", "no upstreams: add at least one, such as unix:/run/php/php8.2-fpm.sock or 127.0.0.1:9000")
	}
	seen := map[string]string{}
	for i, u := range f.Pool.Upstreams {
		up := fmt.Sprintf("%s.upstreams[%d]", fp, i)
		if addr, ok := FastCGIAddr(u.URL); ok {
			host, port, err := net.SplitHostPort(addr)
			if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n <= 0 || n > 65535 {
				v.errf(up, "invalid FastCGI address %q: want unix:/path.sock, host:port or tcp://host:port", f.Upstreams[i].URL)
			}
			if u.Weight < 0 {
				v.errf(up+".weight", "must not be negative")
			}
			if u.MaxFails != nil && *u.MaxFails < 0 {
				v.errf(up+".max_fails", "must not be negative")
			}
		} else {
			v.upstream(up, u) // unix sockets: as a proxy's
		}
		if prev, dup := seen[u.URL]; dup && u.URL != "" {
			v.errf(up, "upstream %q is also %s", f.Upstreams[i].URL, prev)
		}
		seen[u.URL] = up
	}
	if f.Root == "" {
		v.errf(fp+".root", "missing: the document root, such as /srv/app/public")
	} else {
		v.dir(fp+".root", f.Root)
	}
	if strings.ContainsAny(f.Index, "/\\") || strings.HasPrefix(f.Index, ".") {
		v.errf(fp+".index", "index %q must be a plain file name", f.Index)
	} else if !strings.HasSuffix(f.Index, f.SplitPath) {
		v.errf(fp+".index", "index %q does not end in split_path %q, so it would never run", f.Index, f.SplitPath)
	}
	if !strings.HasPrefix(f.SplitPath, ".") || len(f.SplitPath) < 2 || strings.ContainsAny(f.SplitPath, "/\\") {
		v.errf(fp+".split_path", "split_path %q must be a file extension such as .php", f.SplitPath)
	}
	for k, val := range f.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(val, 0) {
			v.errf(fp+".env."+k, "invalid parameter name or value")
		}
	}
	v.poolKeys(fp, f.Pool)
}
