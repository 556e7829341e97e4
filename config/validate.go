package config

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// validator collects every problem of a decoded, defaulted Config.
type validator struct {
	c     *Config
	probs Problems
}

func (v *validator) add(warn bool, path, format string, args ...any) {
	p := v.c.Pos(path)
	v.probs = append(v.probs, Problem{
		File: v.c.fileOf(path), Line: p.Line, Col: p.Col, Path: path,
		Msg: fmt.Sprintf(format, args...), Warning: warn,
	})
}

func (v *validator) errf(path, format string, args ...any) { v.add(false, path, format, args...) }

func (v *validator) warnf(path, format string, args ...any) { v.add(true, path, format, args...) }

func (v *validator) validate() {
	c := v.c
	v.addr("listen.http", c.Listen.HTTP)
	v.addr("listen.https", c.Listen.HTTPS)
	v.addr("admin", c.Admin)
	if c.Listen.HTTP == "" && c.Listen.HTTPS == "" {
		v.errf("listen", "no listener: set listen.http or listen.https")
	}
	if pp := c.Listen.ProxyProtocol; pp != nil {
		if len(pp.Trusted) == 0 {
			v.errf("listen.proxy_protocol.trusted", "missing: list the load balancers' CIDRs that send the PROXY header")
		}
		for i, cidr := range pp.Trusted {
			v.cidr(fmt.Sprintf("listen.proxy_protocol.trusted[%d]", i), cidr)
		}
	}
	if c.Listen.HTTP3 && c.Listen.HTTPS == "" {
		v.errf("listen.http3", "HTTP/3 runs on the https address over UDP: set listen.https (or turn http3 off)")
	}
	if c.AdminKeyFile != "" {
		v.readable("admin_key_file", c.AdminKeyFile)
	}
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	for i, cidr := range c.Server.TrustedProxies {
		v.cidr(fmt.Sprintf("server.trusted_proxies[%d]", i), cidr)
	}
	if c.Server.MaxConnections < 0 {
		v.errf("server.max_connections", "must not be negative")
	}
	if c.Server.MaxConnectionsPerIP < 0 {
		v.errf("server.max_connections_per_ip", "must not be negative")
	}
	if c.Server.MaxRequestsPerConnection < 0 {
		v.errf("server.max_requests_per_connection", "must not be negative")
	}
	if c.Server.ClientBodyTimeout < 0 {
		v.errf("server.client_body_timeout", "must not be negative")
	}
	v.tls()
	if c.Redis != nil {
		v.redis()
	}
	if len(c.Sites) == 0 {
		v.errf("sites", "no sites: add at least one site with a route")
	}
	v.sites()
}

func (v *validator) addr(path, a string) {
	if a == "" {
		return
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		v.errf(path, "invalid address %q: want host:port or :port", a)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.errf(path, "invalid port %q", port)
	}
	if host != "" && host != "localhost" {
		if _, err := netip.ParseAddr(host); err != nil {
			v.errf(path, "listen host %q must be an IP address or localhost", host)
		}
	}
}

func (v *validator) oneOf(path, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.errf(path, "%q is not one of %s", val, strings.Join(allowed, ", "))
}

func (v *validator) cidr(path, s string) {
	if _, err := netip.ParsePrefix(s); err == nil {
		return
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return
	}
	v.errf(path, "invalid CIDR %q", s)
}

func (v *validator) readable(path, file string) {
	f, err := os.Open(file)
	if err != nil {
		v.errf(path, "cannot read %s: %v", file, unwrapPathErr(err))
		return
	}
	f.Close()
}

func (v *validator) dir(path, dir string) {
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		v.errf(path, "directory %s: %v", dir, unwrapPathErr(err))
	case !st.IsDir():
		v.errf(path, "%s is not a directory", dir)
	}
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (v *validator) hasPublicHosts() bool {
	for _, s := range v.c.Sites {
		if s.TLS != nil {
			continue
		}
		for _, h := range s.Hosts {
			if isPublicName(h) {
				return true
			}
		}
	}
	return false
}

// isPublicName reports whether a public ACME CA could issue for h: not an
// IP address, not localhost, and with a dot and a public-looking suffix.
func isPublicName(h string) bool {
	h = strings.ToLower(strings.TrimPrefix(h, "*."))
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	if !strings.Contains(h, ".") || h == "localhost" {
		return false
	}
	for _, suf := range []string{".localhost", ".local", ".internal", ".test", ".example", ".invalid", ".lan", ".home.arpa"} {
		if strings.HasSuffix(h, suf) {
			return false
		}
	}
	return true
}

func (v *validator) pemCerts(path, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		v.errf(path, "cannot read %s: %v", file, unwrapPathErr(err))
		return
	}
	if !x509.NewCertPool().AppendCertsFromPEM(data) {
		v.errf(path, "%s holds no PEM certificate", file)
	}
}

func (v *validator) redis() {
	r := v.c.Redis
	if r.Sentinel != nil {
		v.sentinel(r)
		return
	}
	u, err := url.Parse(r.URL)
	switch {
	case r.URL == "":
		v.errf("redis.url", "missing: redis://host:6379/0, rediss://… or unix:///path.sock")
	case err != nil:
		v.errf("redis.url", "invalid URL: %v", err)
	case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
		v.errf("redis.url", "unknown scheme %q: want redis, rediss or unix", u.Scheme)
	case u.Scheme != "unix" && u.Host == "":
		v.errf("redis.url", "missing host in %q", r.URL)
	case u.Scheme == "unix" && u.Path == "":
		v.errf("redis.url", "missing socket path in %q", r.URL)
	}
	if u != nil && u.Scheme != "unix" && strings.Trim(u.Path, "/") != "" {
		if _, err := strconv.Atoi(strings.Trim(u.Path, "/")); err != nil {
			v.errf("redis.url", "database %q is not a number", strings.Trim(u.Path, "/"))
		}
	}
}

// sentinel checks redis.sentinel, which replaces redis.url.
func (v *validator) sentinel(r *Redis) {
	s := r.Sentinel
	if r.URL != "" {
		v.errf("redis.url", "set redis.url or redis.sentinel, not both")
	}
	if s.Master == "" {
		v.errf("redis.sentinel.master", "missing: the master's name in the sentinels' configuration (sentinel monitor NAME …)")
	}
	if len(s.Addrs) == 0 {
		v.errf("redis.sentinel.addrs", "missing: at least one sentinel, host:port")
	}
	for i, a := range s.Addrs {
		path := fmt.Sprintf("redis.sentinel.addrs[%d]", i)
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			v.errf(path, "%q is not host:port", a)
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			v.errf(path, "invalid port %q", port)
		}
	}
	if s.PasswordFile != "" {
		v.readable("redis.sentinel.password_file", s.PasswordFile)
	}
}

var hostLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func (v *validator) hostName(path, h string) {
	name := strings.ToLower(h)
	if _, err := netip.ParseAddr(name); err == nil {
		return
	}
	if name == "*" || name == "_" {
		// nginx's "server_name _" and catch-all habits.
		v.errf(path, "invalid host name %q: a site without hosts is the default site, leave hosts out", h)
		return
	}
	name = strings.TrimPrefix(name, "*.")
	if name == "" || len(name) > 253 || strings.Contains(name, "*") {
		v.errf(path, "invalid host name %q (wildcards only as a leading \"*.\")", h)
		return
	}
	for _, label := range strings.Split(name, ".") {
		if !hostLabel.MatchString(label) && label != "_acme-challenge" {
			v.errf(path, "invalid host name %q", h)
			return
		}
	}
}

func (v *validator) sites() {
	hosts := map[string]string{}
	hubs := map[string]*Hub{} // hub routes are node-wide, keyed by path
	hubAt := map[string]string{}
	defaultSite := ""
	for i, s := range v.c.Sites {
		sp := fmt.Sprintf("sites[%d]", i)
		if len(s.Hosts) == 0 {
			if defaultSite != "" {
				v.errf(sp+".hosts", "a second default site (no hosts); the first is %s", v.c.where(defaultSite, sp))
			}
			defaultSite = sp
		}
		for j, h := range s.Hosts {
			hp := fmt.Sprintf("%s.hosts[%d]", sp, j)
			v.hostName(hp, h)
			key := strings.ToLower(h)
			if prev, dup := hosts[key]; dup {
				v.errf(hp, "host %q is also in %s", h, v.c.where(prev, hp))
			}
			hosts[key] = hp
		}
		if s.TLS != nil {
			v.siteCert(sp+".tls", s.TLS)
		}
		if s.AccessLog != nil {
			v.oneOf(sp+".access_log.format", s.AccessLog.Format, "combined", "json")
		}
		if s.HSTS != nil && s.HSTS.MaxAge < 0 {
			v.errf(sp+".hsts.max_age", "must not be negative")
		}
		if len(s.Routes) == 0 {
			v.errf(sp+".routes", "a site needs at least one route")
		}
		v.errorPages(sp+".error_pages", s)
		v.access(sp+".access", s.Access)
		if s.BasicAuth != nil {
			v.basicAuth(sp+".basic_auth", s.BasicAuth)
		}
		paths := map[string]string{}
		for j := range s.Routes {
			rp := fmt.Sprintf("%s.routes[%d]", sp, j)
			r := &s.Routes[j]
			if prev, dup := paths[r.Path]; dup {
				v.errf(rp+".path", "path %q is also %s", r.Path, prev)
			}
			paths[r.Path] = rp
			v.route(rp, r, s)
			if r.Hub != nil {
				if prev, ok := hubs[r.Path]; ok && !reflect.DeepEqual(prev, r.Hub) {
					v.errf(rp+".hub", "hub path %q is also %s with different settings: sites sharing a hub path share one hub, so give them the same settings or different paths", r.Path, v.c.where(hubAt[r.Path], rp))
				} else if !ok {
					hubs[r.Path], hubAt[r.Path] = r.Hub, rp
				}
			}
		}
	}
}

func (v *validator) route(rp string, r *Route, s Site) {
	if !strings.HasPrefix(r.Path, "/") {
		v.errf(rp+".path", "path %q must start with /", r.Path)
	} else if path.Clean(r.Path) != strings.TrimSuffix(r.Path, "/") && r.Path != "/" {
		v.errf(rp+".path", "path %q is not clean (no //, . or .. segments)", r.Path)
	}
	n := 0
	for _, set := range []bool{r.Static != nil, r.Proxy != nil, r.Hub != nil, r.Redirect != nil, r.Respond != nil, r.FastCGI != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		v.errf(rp, "a route needs exactly one handler of static, proxy, fastcgi, hub, redirect or respond (found %d)", n)
	}
	if r.MaxBodySize != nil && *r.MaxBodySize < 0 {
		v.errf(rp+".max_body_size", "must not be negative")
	}
	if r.Static != nil {
		v.static(rp+".static", r.Static, s)
	}
	if r.Proxy != nil {
		v.proxy(rp+".proxy", r.Proxy)
	}
	if r.Hub != nil {
		v.hub(rp+".hub", r.Hub)
	}
	if r.FastCGI != nil {
		v.fastcgi(rp+".fastcgi", r.FastCGI)
	}
	v.access(rp+".access", r.Access)
	if r.Limit != nil {
		v.limit(rp+".limit", r.Limit)
	}
	v.rewrites(rp+".rewrite", r.Rewrite)
	if r.BasicAuth != nil {
		v.basicAuth(rp+".basic_auth", r.BasicAuth)
	}
	if r.Redirect != nil {
		v.redirect(rp+".redirect", r.Redirect)
	}
	if r.Respond != nil {
		v.respond(rp+".respond", r.Respond)
	}
}

func (v *validator) httpURL(path, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.errf(path, "invalid URL %q: want http:// or https://", s)
	}
}

// errorPages checks that each page is an error status and a path one of
// the site's static routes serves.
func (v *validator) errorPages(p string, s Site) {
	for key, page := range s.ErrorPages {
		cp := p + "." + key
		if code, err := strconv.Atoi(key); err != nil || code < 400 || code > 599 {
			v.errf(cp, "status %q: want 400–599", key)
		}
		r := s.RouteFor(page)
		switch {
		case !strings.HasPrefix(page, "/"):
			v.errf(cp, "page %q must be a path starting with /", page)
		case r == nil || r.Static == nil:
			v.errf(cp, "page %q is not under a static route of this site", page)
		default:
			file := filepath.Join(r.Static.Root, filepath.FromSlash(page))
			if r.Static.Alias != "" {
				file = filepath.Join(r.Static.Alias, filepath.FromSlash(strings.TrimPrefix(page, r.Path)))
			}
			if _, err := os.Stat(file); err != nil {
				v.warnf(cp, "page file %s: %v; until it exists, edge's own error text is sent (with the status)", file, unwrapPathErr(err))
			}
		}
	}
}
