package nginxconf

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
)

// listenAddr parses a listen directive into an edge address and its flags.
func listenAddr(d *Directive) (addr string, ssl, pp bool) {
	a := d.Arg(0)
	for _, f := range d.Args[1:] {
		switch f {
		case "ssl":
			ssl = true
		case "proxy_protocol":
			pp = true
		}
	}
	if strings.HasPrefix(a, "unix:") {
		return "", ssl, pp
	}
	if !strings.Contains(a, ":") || (strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]")) {
		if isDigits(a) {
			return ":" + a, ssl, pp
		}
		return net.JoinHostPort(strings.Trim(a, "[]"), "80"), ssl, pp
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return a, ssl, pp
	}
	if host == "*" || host == "0.0.0.0" || host == "::" {
		host = ""
	}
	return net.JoinHostPort(host, port), ssl, pp
}

func isDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return s != ""
}

// isHTTPSRedirect reports whether d is nginx's HTTP→HTTPS idiom, which
// edge does by itself (sites[].http_redirect).
func isHTTPSRedirect(d *Directive) bool {
	if d.Name != "return" || len(d.Args) != 2 {
		return false
	}
	switch d.Args[0] {
	case "301", "302", "307", "308":
	default:
		return false
	}
	switch d.Args[1] {
	case "https://$host$request_uri", "https://$server_name$request_uri", "https://$http_host$request_uri":
		return true
	}
	return false
}

// redirectOnly reports whether a plain-HTTP server does nothing but the
// HTTP→HTTPS redirect (at server level, in `location /`, or certbot's
// `if ($host = …) { return 301 https://$host$request_uri; }` + return 404).
func redirectOnly(block []*Directive) bool {
	found := false
	for _, d := range block {
		switch {
		case isHTTPSRedirect(d):
			found = true
		case d.Name == "location" && d.Arg(0) == "/" && len(d.Block) == 1 && isHTTPSRedirect(d.Block[0]):
			found = true
		case d.Name == "if" && len(d.Block) == 1 && isHTTPSRedirect(d.Block[0]):
			found = true
		case d.Name == "location" && strings.HasPrefix(d.Arg(0), "/.well-known/acme-challenge"):
			// certbot's webroot: edge answers ACME challenges itself.
		case d.Name == "location":
			return false
		}
	}
	return found
}

func (c *conv) server(d *Directive, parent scope) {
	sc := parent.child(d.Block)
	var hosts []string
	var plain, ssl bool
	var listens []*Directive
	for _, x := range d.Block {
		switch x.Name {
		case "listen":
			listens = append(listens, x)
			_, s, _ := listenAddr(x)
			ssl = ssl || s
			plain = plain || !s
		case "server_name":
			hosts = append(hosts, x.Args...)
		}
	}
	if len(listens) == 0 {
		plain = true
	}
	s := &site{m: newMap(), d: d, ssl: ssl, plain: plain, paths: map[string]*mapping{}, named: map[string]*Directive{}, errPageD: map[string]*Directive{}}
	// Hosts.
	for _, h := range hosts {
		switch {
		case h == "" || h == "_" || h == "localhost" && len(hosts) == 1:
		case strings.HasPrefix(h, "~"):
			c.warn(s.m, d, fmt.Sprintf("server_name %s: edge matches exact names and *.suffix wildcards, not regular expressions", h))
		case strings.HasPrefix(h, "."):
			s.hosts = append(s.hosts, h[1:], "*"+h)
		case strings.HasSuffix(h, ".*"):
			c.warn(s.m, d, fmt.Sprintf("server_name %s: edge has no trailing wildcards", h))
		default:
			s.hosts = append(s.hosts, strings.ToLower(h))
		}
	}
	// An HTTP→HTTPS redirect server.
	if !ssl && redirectOnly(d.Block) {
		c.redirected = append(c.redirected, s.hosts...)
		for _, l := range listens {
			c.listen(l, nil)
		}
		c.topNotes = append(c.topNotes, fmt.Sprintf("%s: server {} for %s: it only redirects HTTP to HTTPS, which edge does itself for every HTTPS site (sites[].http_redirect)",
			d.Pos(), orDefault(strings.Join(s.hosts, " "))))
		return
	}
	// A site with the same hosts as an earlier one (the :80 and :443
	// servers of one name): edge has one site per name.
	for _, o := range c.sites {
		if sameHosts(o.hosts, s.hosts) {
			c.warn(o.m, d, fmt.Sprintf("a second server {} for %s: edge serves one site per name on both listeners; this one's directives are not translated", orDefault(strings.Join(s.hosts, " "))))
			return
		}
	}
	if len(s.hosts) > 0 {
		s.m.set("hosts", s.hosts)
	}
	for _, l := range listens {
		c.listen(l, s)
	}
	for _, x := range d.Block {
		if x.Name == "location" && strings.HasPrefix(x.Arg(0), "@") {
			s.named[x.Arg(0)] = x
		}
	}
	// The body.
	var locs []*Directive
	var srvReturn *Directive
	var rewrites []*Directive
	for _, x := range d.Block {
		switch x.Name {
		case "listen", "server_name":
		case "ssl_certificate":
			s.cert = true
			s.m.sub("tls").set("cert", x.Arg(0))
		case "ssl_certificate_key":
			s.m.sub("tls").set("key", x.Arg(0))
		case "location":
			locs = append(locs, x)
		case "return":
			srvReturn = x
		case "rewrite":
			rewrites = append(rewrites, x)
		case "if":
			if len(x.Block) == 1 && isHTTPSRedirect(x.Block[0]) {
				c.note(s.m, x, "edge redirects HTTP to HTTPS itself (sites[].http_redirect)")
				continue
			}
			c.unknown(s.m, x)
		case "add_header":
			if strings.EqualFold(x.Arg(0), "Strict-Transport-Security") {
				c.note(s.m, x, "edge sends HSTS on HTTPS by default (tls.hsts, sites[].hsts)")
			}
		case "error_page":
			c.errorPage(s, x)
		case "access_log":
			if x.Arg(0) == "off" {
				continue
			}
			al := s.m.sub("access_log")
			al.set("file", x.Arg(0))
			if f := x.Arg(1); f != "" && f != "combined" && f != "main" {
				c.note(s.m, x, "edge's access_log format is combined or json")
			}
		case "keepalive_timeout", "client_body_timeout", "client_header_timeout", "keepalive_requests":
			c.note(s.m, x, "edge has this per listener, not per site: set it under server: in the output")
		default:
			if _, ok := inheritable[x.Name]; ok {
				continue
			}
			c.topLevel(x, s.m)
		}
	}
	if ssl && plain {
		s.m.set("http_redirect", false)
		s.m.note("nginx served this site over plain HTTP too; remove http_redirect: false to redirect it to HTTPS")
	}
	if !ssl && c.anySSL() {
		s.m.set("http_redirect", false)
	}
	if !s.cert && len(s.hosts) > 0 {
		c.needEmail = true
	}
	// Site-wide access rules, basic auth.
	if own(d.Block, "access") || len(parent["access"]) > 0 {
		if a := c.access(s.m, sc["access"]); a != nil {
			s.m.set("access", a)
		}
	}
	if ba := c.basicAuth(s.m, sc); ba != nil {
		s.m.set("basic_auth", ba)
	}
	// Routes.
	if srvReturn != nil {
		r := newMap().set("path", "/")
		c.ret(r, srvReturn)
		if len(locs) > 0 {
			c.note(r, srvReturn, "return at server level answers every request: the locations of this server are not translated")
		}
		c.addRoute(s, r, srvReturn)
	} else {
		for _, l := range locs {
			c.location(s, l, sc, rewrites)
		}
		// nginx serves the root for paths no location covers.
		if s.paths["/"] == nil && sc.last("root") != nil {
			r := newMap().set("path", "/")
			c.fill(s, r, nil, nil, sc, rewrites)
			c.addRoute(s, r, d)
		}
		c.finishPHP(s, sc, rewrites)
	}
	c.finishErrorPages(s)
	var routes []any
	for _, r := range s.routes {
		routes = append(routes, r)
	}
	s.m.set("routes", routes)
	c.sites = append(c.sites, s)
}

func orDefault(s string) string {
	if s == "" {
		return "the default server"
	}
	return s
}

func sameHosts(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := append([]string(nil), a...), append([]string(nil), b...)
	sort.Strings(x)
	sort.Strings(y)
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

func (c *conv) anySSL() bool { return c.httpsAddr != "" }

// listen sets the edge listener for a listen directive; edge has one plain
// and one TLS listener.
func (c *conv) listen(d *Directive, s *site) {
	addr, ssl, pp := listenAddr(d)
	var m *mapping
	if s != nil {
		m = s.m
	}
	if addr == "" {
		c.warn(m, d, "edge listens on TCP addresses only")
		return
	}
	if pp {
		c.proxyProtocol = d
	}
	for _, f := range d.Args[1:] {
		if f == "default_server" && s != nil && len(s.hosts) > 0 {
			c.note(m, d, "default_server: edge's default site is the one without hosts; this one answers only its names")
		}
	}
	target := &c.httpAddr
	if ssl {
		target = &c.httpsAddr
	}
	switch {
	case *target == "":
		*target = addr
	case *target == addr:
	case strings.HasPrefix(d.Arg(0), "[") && portOf(addr) == portOf(*target):
		// [::]:80 beside 80: edge's ":80" listens on both.
	default:
		c.warn(m, d, fmt.Sprintf("edge has one %s listener (%s); this server is served there, not on %s", map[bool]string{true: "HTTPS", false: "HTTP"}[ssl], *target, addr))
	}
}

func portOf(a string) string {
	_, p, _ := net.SplitHostPort(a)
	return p
}

func (c *conv) addRoute(s *site, r *mapping, d *Directive) {
	p, _ := r.get("path").(string)
	if s.paths[p] != nil {
		c.warn(s.paths[p], d, fmt.Sprintf("a second location for %s: edge has one route per path (an = exact match and a prefix of the same path are one route); not translated", p))
		return
	}
	s.paths[p] = r
	s.routes = append(s.routes, r)
}

var (
	phpLocRE  = regexp.MustCompile(`\\\.php`)
	dotLocRE  = regexp.MustCompile(`^(~\*?) +/?\\\.`)
	dotLocRE2 = regexp.MustCompile(`^/\\\.`)
)

// location converts one location block into a route.
func (c *conv) location(s *site, d *Directive, parent scope, srvRewrites []*Directive) {
	mod, path := "", d.Arg(0)
	if len(d.Args) == 2 {
		mod, path = d.Args[0], d.Args[1]
	}
	sc := parent.child(d.Block)
	switch {
	case strings.HasPrefix(path, "@"):
		s.named[path] = d
		return
	case mod == "~" || mod == "~*":
		switch {
		case phpLocRE.MatchString(path) && hasDirective(d.Block, "fastcgi_pass"):
			if s.php == nil {
				s.php, s.phpScope = d, sc
				return
			}
		case dotLocRE2.MatchString(path) && onlyDeny(d.Block):
			c.note(s.m, d, "edge answers 404 for dotfiles (.htaccess, .git) by itself")
			return
		}
		c.warn(s.m, d, fmt.Sprintf("regular-expression location %s %s: edge routes are path prefixes; not translated", mod, path))
		return
	case !strings.HasPrefix(path, "/"):
		c.warn(s.m, d, "location path must start with /; not translated")
		return
	}
	r := newMap().set("path", path)
	switch mod {
	case "=":
		if path == "/" {
			c.warn(r, d, "exact match of / cannot be expressed: edge's route for / serves every path")
		} else {
			r.note(fmt.Sprintf("%s: location = %s: edge has no exact match; this route also serves what lies below %s", d.Pos(), path, path))
		}
	case "^~":
		r.note(fmt.Sprintf("%s: ^~: edge has no regular-expression routes, so a prefix always wins", d.Pos()))
	}
	if !c.fill(s, r, d, d.Block, sc, srvRewrites) {
		s.m.notes = append(s.m.notes, r.notes...) // no route: its comments go to the site
		return
	}
	c.addRoute(s, r, d)
}

func hasDirective(block []*Directive, name string) bool {
	for _, d := range block {
		if d.Name == name {
			return true
		}
	}
	return false
}

func onlyDeny(block []*Directive) bool {
	for _, d := range block {
		if d.Name != "deny" && d.Name != "access_log" && d.Name != "log_not_found" {
			return false
		}
	}
	return len(block) > 0
}
