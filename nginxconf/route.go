package nginxconf

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

// fill converts the directives of a location (loc nil: the server's root
// serving what no location covers) into route r and reports whether it has
// a handler.
func (c *conv) fill(s *site, r *mapping, loc *Directive, block []*Directive, sc scope, srvRewrites []*Directive) bool {
	var ret, pp, fcgi, tryFiles, alias *Directive
	rewrites := append([]*Directive(nil), srvRewrites...)
	for _, x := range block {
		switch x.Name {
		case "return":
			ret = x
		case "proxy_pass":
			pp = x
		case "fastcgi_pass":
			fcgi = x
		case "try_files":
			tryFiles = x
		case "alias":
			alias = x
		case "rewrite":
			rewrites = append(rewrites, x)
		case "location":
			c.warn(r, x, "nested locations are not translated: write them as routes of their own")
		case "error_page":
			c.note(r, x, "edge's error_pages are per site: moved there")
			c.errorPage(s, x)
		case "if":
			if len(x.Block) == 1 && isHTTPSRedirect(x.Block[0]) {
				c.note(r, x, "edge redirects HTTP to HTTPS itself (sites[].http_redirect)")
				continue
			}
			c.unknown(r, x)
		case "autoindex", "log_not_found", "proxy_set_header", "proxy_hide_header", "fastcgi_hide_header":
		default:
			if _, ok := inheritable[x.Name]; ok {
				continue
			}
			if x.Name == "add_header" {
				continue
			}
			c.topLevel(x, r)
		}
	}
	path, _ := r.get("path").(string)
	// Body size: only what differs from the http level (server.max_body_size).
	if mb := sc.last("client_max_body_size"); mb != nil && (c.httpMaxBody == nil || mb != c.httpMaxBody) {
		r.set("max_body_size", size(mb.Arg(0)))
	}
	kind := "static"
	switch {
	case ret != nil:
		kind = "return"
	case pp != nil:
		kind = "proxy"
	case fcgi != nil:
		kind = "fastcgi"
	}
	c.headers(r, sc, kind)
	if loc != nil && own(block, "access") {
		if a := c.access(r, sc["access"]); a != nil {
			r.set("access", a)
		}
	}
	if loc != nil && (own(block, "auth_basic") || own(block, "auth_basic_user_file")) {
		if ba := c.basicAuth(r, sc); ba != nil {
			r.set("basic_auth", ba)
		} else if d := sc.last("auth_basic"); d != nil && d.Arg(0) == "off" && s.m.get("basic_auth") != nil {
			c.warn(r, d, "edge cannot turn the site's basic_auth off for one route: move basic_auth to the routes that need it")
		}
	}
	c.limit(r, sc)
	if rw := c.rewrites(r, rewrites); len(rw) > 0 {
		r.set("rewrite", rw)
	}
	switch kind {
	case "return":
		c.ret(r, ret)
		return true
	case "proxy":
		if p := c.proxy(r, pp, path, sc); p != nil {
			r.set("proxy", p)
			return true
		}
		return false
	case "fastcgi":
		r.set("fastcgi", c.fastcgi(r, fcgi, sc))
		return true
	}
	st := newMap()
	switch {
	case alias != nil:
		st.set("alias", alias.Arg(0))
	case sc.last("root") != nil:
		st.set("root", sc.last("root").Arg(0))
	default:
		if own(block, "access") && onlyAccess(block) {
			r.set("respond", newMap().set("status", 403))
			return true
		}
		if loc != nil {
			c.warn(r, loc, "no root, alias, proxy_pass, fastcgi_pass or return: not translated")
		}
		return false
	}
	if idx := sc.last("index"); idx != nil {
		var keep []string
		for _, a := range idx.Args {
			if strings.HasSuffix(a, ".php") {
				continue // PHP runs in the fastcgi route; static would send its source
			}
			keep = append(keep, a)
		}
		if len(keep) > 0 && !(len(keep) == 1 && keep[0] == "index.html") {
			st.set("index", keep)
		}
	}
	if ai := sc.last("autoindex"); ai != nil && ai.Arg(0) == "on" {
		st.set("browse", true)
	}
	if tryFiles != nil {
		c.tryFiles(s, r, st, tryFiles, path)
	}
	c.expires(r, st, sc)
	if cmp := c.compress(sc, false); cmp != nil {
		st.set("compress", cmp)
	}
	r.set("static", st)
	return true
}

func onlyAccess(block []*Directive) bool {
	for _, d := range block {
		if d.Name != "allow" && d.Name != "deny" {
			return false
		}
	}
	return true
}

// headers converts add_header (responses) and, for proxy routes,
// proxy_set_header and proxy_hide_header.
func (c *conv) headers(r *mapping, sc scope, kind string) {
	h := newMap()
	resp, req := newMap(), newMap()
	for _, d := range sc["add_header"] {
		name, val := d.Arg(0), d.Arg(1)
		switch {
		case strings.EqualFold(name, "Strict-Transport-Security"):
			continue // noted at the server; edge's tls.hsts
		case strings.EqualFold(name, "Cache-Control") && kind == "static":
			continue // static.cache_control
		case strings.Contains(val, "$"):
			c.warn(r, d, "edge has no variables in header values")
			continue
		}
		set := resp.sub("set")
		if set.get(name) != nil {
			resp.sub("add").set(name, val)
		} else {
			set.set(name, val)
		}
	}
	if kind == "proxy" {
		for _, d := range sc["proxy_set_header"] {
			name, val := d.Arg(0), d.Arg(1)
			switch strings.ToLower(name) {
			case "host":
				if val == "$host" || val == "$http_host" {
					c.note(r, d, "edge sends the client's Host by default")
					continue
				}
			case "x-real-ip", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port":
				if strings.HasPrefix(val, "$") {
					c.note(r, d, "edge sets X-Forwarded-For/-Proto/-Host and X-Real-IP by default (trusted proxies applied)")
					continue
				}
			case "upgrade", "connection":
				c.note(r, d, "edge passes WebSocket upgrades through by default")
				continue
			}
			if strings.Contains(val, "$") {
				c.warn(r, d, "edge has no variables in header values")
				continue
			}
			if val == "" {
				req.set("remove", append(stringsOf(req.get("remove")), name))
				continue
			}
			req.sub("set").set(name, val)
		}
	}
	if kind == "proxy" || kind == "fastcgi" {
		for _, d := range append(sc["proxy_hide_header"], sc["fastcgi_hide_header"]...) {
			resp.set("remove", append(stringsOf(resp.get("remove")), d.Arg(0)))
		}
	}
	if len(req.keys) > 0 {
		h.set("request", req)
	}
	if len(resp.keys) > 0 {
		h.set("response", resp)
	}
	if len(h.keys) > 0 {
		r.set("headers", h)
	}
}

func stringsOf(v any) []string {
	s, _ := v.([]string)
	return s
}

func (c *conv) access(m *mapping, ds []*Directive) []string {
	var rules []string
	for _, d := range ds {
		rules = append(rules, d.Name+" "+d.Arg(0))
	}
	return rules
}

func (c *conv) basicAuth(m *mapping, sc scope) *mapping {
	realm, file := sc.last("auth_basic"), sc.last("auth_basic_user_file")
	if realm == nil || realm.Arg(0) == "off" {
		return nil
	}
	if file == nil {
		c.warn(m, realm, "auth_basic without auth_basic_user_file")
		return nil
	}
	ba := newMap().set("users_file", file.Arg(0))
	if strings.Contains(realm.Arg(0), "$") {
		c.warn(m, realm, "edge has no variables in the realm")
	} else {
		ba.set("realm", realm.Arg(0))
	}
	ba.note(fmt.Sprintf("%s: edge accepts bcrypt entries only (htpasswd -B); other hashes fail edge validate with their line", file.Pos()))
	return ba
}

// limit converts limit_req and limit_conn through their zones.
func (c *conv) limit(r *mapping, sc scope) {
	l := newMap()
	var key string
	var status *Directive
	if reqs := sc["limit_req"]; len(reqs) > 0 {
		d := reqs[0]
		if len(reqs) > 1 {
			c.warn(r, reqs[1], "edge has one rate limit per route; only the first limit_req is translated")
		}
		var zname, burst string
		nodelay := false
		for _, a := range d.Args {
			switch {
			case strings.HasPrefix(a, "zone="):
				zname = strings.TrimPrefix(a, "zone=")
			case strings.HasPrefix(a, "burst="):
				burst = strings.TrimPrefix(a, "burst=")
			case a == "nodelay":
				nodelay = true
			}
		}
		z, ok := c.reqZones[zname]
		switch {
		case !ok:
			c.warn(r, d, fmt.Sprintf("no limit_req_zone %s", zname))
		case z.key == "":
			c.warn(r, d, fmt.Sprintf("zone %s's key is not translated (%s)", zname, z.d.Pos()))
		default:
			key = z.key
			l.set("rate", z.rate)
			if burst != "" {
				l.set("burst", atoi(burst))
			}
			if !nodelay && burst != "" {
				l.note(fmt.Sprintf("%s: without nodelay nginx delays the burst; edge answers it at once (as nodelay)", d.Pos()))
			}
			status = sc.last("limit_req_status")
		}
	}
	if conns := sc["limit_conn"]; len(conns) > 0 {
		d := conns[0]
		z, ok := c.connZones[d.Arg(0)]
		switch {
		case !ok:
			c.warn(r, d, fmt.Sprintf("no limit_conn_zone %s", d.Arg(0)))
		case z.key == "":
			c.warn(r, d, fmt.Sprintf("zone %s's key is not translated (%s)", d.Arg(0), z.d.Pos()))
		case key != "" && z.key != key:
			c.warn(r, d, fmt.Sprintf("edge limits one key per route: the limit_req key is %s, this zone's %s", key, z.key))
		default:
			key = z.key
			l.set("connections", atoi(d.Arg(1)))
			if status == nil {
				status = sc.last("limit_conn_status")
			}
		}
	}
	if len(l.keys) == 0 {
		return
	}
	if key != "client_ip" {
		l.set("key", key)
	}
	code := 503 // nginx's default, where edge's is 429
	if status != nil {
		code = atoi(status.Arg(0))
	}
	l.set("status", code)
	r.set("limit", l)
}

// rewrites converts rewrite directives into the route's rewrite list.
func (c *conv) rewrites(r *mapping, ds []*Directive) []any {
	var out []any
	for _, d := range ds {
		re, to, flag := d.Arg(0), d.Arg(1), d.Arg(2)
		if _, err := regexp.Compile(re); err != nil {
			c.warn(r, d, fmt.Sprintf("regular expression not supported by RE2: %v", err))
			continue
		}
		if v := varRE.FindString(strings.NewReplacer("$scheme://", "").Replace(to)); v != "" && !groupRE.MatchString(v) {
			c.warn(r, d, fmt.Sprintf("%s: edge's rewrite takes only $1…$9 and ${name} groups", v))
			continue
		}
		rw := newMap().set("match", re)
		rw.flow = true
		status := 0
		switch flag {
		case "redirect":
			status = 302
		case "permanent":
			status = 301
		case "break":
			r.note(fmt.Sprintf("%s: rewrite … break: edge matches routes again after an internal rewrite, as last", d.Pos()))
		}
		if strings.HasPrefix(to, "http://") || strings.HasPrefix(to, "https://") || strings.HasPrefix(to, "$scheme://") {
			if status == 0 {
				status = 302
			}
			if strings.HasPrefix(to, "$scheme://") {
				c.warn(r, d, "$scheme: edge cannot keep the request's scheme in a rewrite: not translated")
				continue
			}
		}
		rw.set("to", to)
		if status != 0 {
			rw.set("redirect", status)
		}
		out = append(out, rw)
	}
	return out
}

var (
	varRE   = regexp.MustCompile(`\$(\{\w+\}|\w+)`)
	groupRE = regexp.MustCompile(`^\$(\d|\{\w+\})$`)
)

// placeholders maps nginx variables in a return target to edge's redirect
// placeholders.
var placeholders = map[string]string{
	"$host": "{host}", "$server_name": "{host}", "$http_host": "{host}",
	"$request_uri": "{uri}", "$uri": "{path}", "$document_uri": "{path}",
	"$args": "{query}", "$query_string": "{query}",
}

// ret converts return: a redirect or a fixed response.
func (c *conv) ret(r *mapping, d *Directive) {
	code, arg := d.Arg(0), d.Arg(1)
	if !isDigits(code) {
		code, arg = "302", d.Arg(0)
	}
	n := atoi(code)
	switch n {
	case 301, 302, 303, 307, 308:
		to := arg
		if strings.HasSuffix(to, "$is_args$args") {
			to = strings.TrimSuffix(to, "$is_args$args") + "?{query}"
		}
		to = varRE.ReplaceAllStringFunc(to, func(v string) string {
			if p, ok := placeholders[v]; ok {
				return p
			}
			return v
		})
		if v := varRE.FindString(to); v != "" {
			c.warn(r, d, fmt.Sprintf("%s has no edge placeholder (edge has {host}, {path}, {query}, {uri})", v))
			r.set("respond", newMap().set("status", 500).set("body", "untranslated nginx return: "+text(d)))
			return
		}
		rd := newMap().set("to", to)
		rd.flow = true
		if n != 308 {
			rd.set("status", n)
		}
		r.set("redirect", rd)
	case 444:
		c.warn(r, d, "444 (close without answering) is not translated; answering 403")
		r.set("respond", newMap().set("status", 403))
	default:
		if n < 200 || n > 599 {
			c.warn(r, d, "status out of range")
			n = 500
		}
		rs := newMap()
		rs.flow = true
		if n != 200 {
			rs.set("status", n)
		}
		if arg != "" {
			if strings.Contains(arg, "$") {
				c.warn(r, d, "edge has no variables in a fixed response body")
			}
			rs.set("body", arg)
		}
		if len(rs.keys) == 0 {
			rs.set("status", 200)
		}
		r.set("respond", rs)
	}
}

// proxy converts proxy_pass and its upstream block.
func (c *conv) proxy(r *mapping, d *Directive, path string, sc scope) *mapping {
	target := d.Arg(0)
	if strings.Contains(target, "$") {
		c.warn(r, d, "proxy_pass with variables is not translated")
		return nil
	}
	if sock, ok := strings.CutPrefix(target, "http://unix:"); ok {
		// nginx's http://unix:/path.sock:/uri form.
		sock, uri, _ := strings.Cut(sock, ":")
		if uri != "" && uri != path {
			c.warn(r, d, fmt.Sprintf("proxy_pass with a URI (%s) replaces the location prefix (%s); edge passes the path unchanged", uri, path))
		}
		return newMap().set("upstreams", []string{"unix:" + sock})
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		c.warn(r, d, "cannot read the URL")
		return nil
	}
	if u.Path != "" && u.Path != path && !(u.Path == "/" && path == "/") {
		c.warn(r, d, fmt.Sprintf("proxy_pass with a URI (%s) replaces the location prefix (%s); edge passes the path unchanged: add a rewrite in the backend or here", u.Path, path))
	}
	p := newMap()
	if up, ok := c.upstreams[u.Host]; ok {
		c.pool(r, p, up, u.Scheme+"://")
	} else if strings.HasPrefix(u.Host, "unix:") {
		p.set("upstreams", []string{strings.TrimSuffix(u.Host, ":")})
	} else {
		p.set("upstreams", []string{u.Scheme + "://" + u.Host})
	}
	if d := sc.last("proxy_connect_timeout"); d != nil {
		p.set("dial_timeout", duration(d.Arg(0)))
	}
	if d := sc.last("proxy_read_timeout"); d != nil {
		secs := seconds(d.Arg(0))
		switch {
		case secs > 3600:
			p.set("tunnel_idle_timeout", duration(d.Arg(0)))
			c.note(p, d, "nginx's read timeout is also the WebSocket idle timeout: kept as tunnel_idle_timeout; edge waits 60s for response headers")
		case secs > 60:
			c.note(p, d, "a long proxy_read_timeout keeps WebSockets open in nginx; edge's tunnel_idle_timeout is 1h by default and response headers are awaited 60s")
		default:
			p.set("response_header_timeout", duration(d.Arg(0)))
		}
	}
	if cmp := c.compress(sc, true); cmp != nil {
		p.set("compress", cmp)
	}
	return p
}

// pool copies an upstream block's servers and balancing into p.
func (c *conv) pool(r, p *mapping, up *Directive, scheme string) {
	var servers []any
	simple := true
	for _, x := range up.Block {
		switch x.Name {
		case "server":
			addr := x.Arg(0)
			if !strings.HasPrefix(addr, "unix:") {
				if !strings.Contains(addr, ":") {
					addr += ":80"
				}
				addr = scheme + addr
			}
			s := newMap().set("url", addr)
			s.flow = true
			down := false
			for _, a := range x.Args[1:] {
				k, v, _ := strings.Cut(a, "=")
				switch k {
				case "weight":
					s.set("weight", atoi(v))
				case "backup":
					s.set("backup", true)
				case "max_fails":
					s.set("max_fails", atoi(v))
				case "fail_timeout":
					s.set("fail_timeout", duration(v))
				case "down":
					down = true
				default:
					c.warn(p, x, fmt.Sprintf("%s is not translated", a))
				}
			}
			if down {
				c.note(p, x, "down: left out")
				continue
			}
			if len(s.keys) > 1 {
				simple = false
			}
			servers = append(servers, s)
		case "least_conn":
			p.set("balance", "least_conn")
		case "ip_hash":
			p.set("balance", "ip_hash")
		case "hash":
			c.warn(p, x, "edge hashes by client IP only (balance: ip_hash)")
		case "keepalive":
			p.set("keepalive", atoi(x.Arg(0)))
		case "keepalive_timeout", "keepalive_requests":
			c.note(p, x, "edge manages idle upstream connections itself")
		default:
			c.unknown(p, x)
		}
	}
	if simple {
		var urls []string
		for _, s := range servers {
			urls = append(urls, s.(*mapping).get("url").(string))
		}
		p.set("upstreams", urls)
	} else {
		p.set("upstreams", servers)
	}
	// upstreams first, as readers expect.
	i := indexOf(p.keys, "upstreams")
	p.keys = append([]string{"upstreams"}, append(p.keys[:i:i], p.keys[i+1:]...)...)
	v := p.vals[i]
	p.vals = append([]any{v}, append(p.vals[:i:i], p.vals[i+1:]...)...)
}

func indexOf(s []string, x string) int {
	for i, v := range s {
		if v == x {
			return i
		}
	}
	return -1
}

// compress converts gzip settings; for proxied routes too, as nginx
// compresses proxied responses with gzip on.
func (c *conv) compress(sc scope, proxied bool) *mapping {
	g := sc.last("gzip")
	if g == nil || g.Arg(0) != "on" {
		return nil
	}
	m := newMap()
	if d := sc.last("gzip_min_length"); d != nil {
		m.set("min_size", size(d.Arg(0)))
	}
	if d := sc.last("gzip_types"); d != nil {
		types := []string{"text/html"} // nginx always compresses text/html
		for _, t := range d.Args {
			if t == "*" {
				types = nil
				break
			}
			if t != "text/html" {
				types = append(types, t)
			}
		}
		if types != nil {
			m.set("types", types)
		}
	} else {
		m.set("types", []string{"text/html"})
	}
	if proxied {
		if d := sc.last("gzip_proxied"); d != nil && d.Arg(0) != "any" {
			m.note(fmt.Sprintf("%s: gzip_proxied: edge compresses responses to requests from proxies too (as any)", d.Pos()))
		}
	}
	m.set("encodings", []string{"gzip"})
	m.note(fmt.Sprintf("%s: gzip on: edge can also send zstd and br: drop encodings to offer them", g.Pos()))
	return m
}

// expires converts expires and add_header Cache-Control on static routes.
func (c *conv) expires(r, st *mapping, sc scope) {
	for _, d := range sc["add_header"] {
		if strings.EqualFold(d.Arg(0), "Cache-Control") && !strings.Contains(d.Arg(1), "$") {
			st.set("cache_control", d.Arg(1))
			return
		}
	}
	d := sc.last("expires")
	if d == nil {
		return
	}
	switch a := d.Arg(0); {
	case a == "off":
	case a == "max":
		st.set("immutable", true)
	case a == "epoch" || strings.HasPrefix(a, "-"):
		st.set("cache_control", "no-cache")
	case strings.HasPrefix(a, "@") || a == "modified" || len(d.Args) > 1:
		c.warn(r, d, "only expires max/off/epoch/DURATION are translated")
	default:
		st.set("cache_control", "max-age="+strconv.Itoa(seconds(a)))
	}
}

// tryFiles converts the try_files idioms edge has.
func (c *conv) tryFiles(s *site, r, st *mapping, d *Directive, path string) {
	files, last := d.Args[:len(d.Args)-1], d.Args[len(d.Args)-1]
	for _, f := range files {
		if f != "$uri" && f != "$uri/" {
			c.warn(r, d, fmt.Sprintf("%s: edge tries the file and the directory's index only", f))
			return
		}
	}
	switch {
	case last == "=404":
	case last == "/index.html" || last == path+"index.html":
		st.set("spa", true)
		r.note(fmt.Sprintf("%s: try_files … %s: spa serves index.html for paths without an extension (or .html); a missing /app.js stays 404", d.Pos(), last))
	case strings.HasPrefix(last, "@"):
		named := s.named[last]
		var pp *Directive
		if named != nil {
			for _, x := range named.Block {
				if x.Name == "proxy_pass" {
					pp = x
				}
			}
		}
		if pp == nil {
			c.warn(r, d, fmt.Sprintf("%s: only a named location with proxy_pass is translated", last))
			return
		}
		nsc := scope{}.child(named.Block)
		if p := c.proxy(r, pp, path, nsc); p != nil {
			c.headers(r, nsc, "proxy")
			st.sub("fallback").set("proxy", p)
		}
	case strings.Contains(last, ".php"):
		target, _, _ := strings.Cut(last, "?")
		s.phpTarget = target
		st.sub("fallback").set("route", target)
		r.note(fmt.Sprintf("%s: try_files … %s: files that do not exist go to the fastcgi route %s; PHP sees the original REQUEST_URI", d.Pos(), last, target))
	default:
		c.warn(r, d, fmt.Sprintf("fallback %s is not translated", last))
	}
}

// fastcgi converts fastcgi_pass and its parameters.
func (c *conv) fastcgi(r *mapping, d *Directive, sc scope) *mapping {
	f := newMap()
	addr := d.Arg(0)
	if up, ok := c.upstreams[addr]; ok {
		c.pool(r, f, up, "")
	} else {
		f.set("upstreams", []string{addr})
	}
	if root := sc.last("root"); root != nil {
		f.set("root", root.Arg(0))
	}
	idx := "index.php"
	if d := sc.last("fastcgi_index"); d != nil {
		idx = d.Arg(0)
	}
	f.set("index", idx)
	if d := sc.last("fastcgi_split_path_info"); d != nil {
		if m := regexp.MustCompile(`\\(\.\w+)`).FindStringSubmatch(d.Arg(0)); m != nil {
			f.set("split_path", m[1])
		} else {
			c.warn(f, d, "edge splits at a file extension (split_path: .php)")
		}
	}
	env := newMap()
	std := 0
	for _, p := range sc["fastcgi_param"] {
		switch {
		case !strings.Contains(p.Arg(1), "$"):
			env.set(p.Arg(0), p.Arg(1))
		case standardParam[p.Arg(0)]:
			std++
		default:
			c.warn(f, p, "edge has no variables in FastCGI parameters")
		}
	}
	if std > 0 {
		f.note("edge sets SCRIPT_FILENAME, PATH_INFO, DOCUMENT_ROOT, REQUEST_URI and the other CGI parameters itself")
	}
	if len(env.keys) > 0 {
		f.set("env", env)
	}
	if d := sc.last("fastcgi_read_timeout"); d != nil {
		f.set("response_header_timeout", duration(d.Arg(0)))
	}
	if d := sc.last("fastcgi_connect_timeout"); d != nil {
		f.set("dial_timeout", duration(d.Arg(0)))
	}
	return f
}

var standardParam = map[string]bool{}

func init() {
	for _, p := range strings.Fields(`SCRIPT_FILENAME SCRIPT_NAME PATH_INFO PATH_TRANSLATED DOCUMENT_ROOT DOCUMENT_URI
		REQUEST_URI QUERY_STRING REQUEST_METHOD CONTENT_TYPE CONTENT_LENGTH SERVER_PROTOCOL SERVER_NAME SERVER_PORT
		SERVER_ADDR SERVER_SOFTWARE GATEWAY_INTERFACE REMOTE_ADDR REMOTE_PORT REMOTE_USER HTTPS REQUEST_SCHEME REDIRECT_STATUS`) {
		standardParam[p] = true
	}
}

// finishPHP adds the fastcgi route try_files sends PHP requests to.
func (c *conv) finishPHP(s *site, sc scope, rewrites []*Directive) {
	if s.php == nil {
		if s.phpTarget != "" {
			c.topNotes = append(c.topNotes, fmt.Sprintf("WARNING: try_files sends requests to %s, but no location ~ \\.php$ runs PHP", s.phpTarget))
			c.warns = append(c.warns, fmt.Sprintf("%s: server: try_files falls back to %s, but no location ~ \\.php$ with fastcgi_pass was found", s.d.Pos(), s.phpTarget))
		}
		return
	}
	target := s.phpTarget
	if target == "" {
		target = "/index.php"
	}
	r := newMap().set("path", target)
	// The static route that falls back here sends every path with a .php
	// segment to this route (file or not), which runs the script the path
	// names: nginx's location ~ \.php$, and no script's source is served.
	r.note(fmt.Sprintf("%s: location %s: every .php path under the static route runs here (the script it names), so no script's source is served", s.php.Pos(), strings.Join(s.php.Args, " ")))
	c.fill(s, r, s.php, s.php.Block, s.phpScope, rewrites)
	c.addRoute(s, r, s.php)
}

// errorPage records error_page CODE… URI for the site.
func (c *conv) errorPage(s *site, d *Directive) {
	if len(d.Args) < 2 {
		return
	}
	uri := d.Args[len(d.Args)-1]
	codes := d.Args[:len(d.Args)-1]
	if !strings.HasPrefix(uri, "/") || strings.HasPrefix(codes[len(codes)-1], "=") {
		c.warn(s.m, d, "only error_page CODE… /path is translated (no =code, @name or URL)")
		return
	}
	for _, code := range codes {
		if n := atoi(code); n < 400 || n > 599 {
			c.warn(s.m, d, fmt.Sprintf("status %s: edge's error pages are for 400–599", code))
			continue
		}
		s.errPages = append(s.errPages, [2]string{code, uri})
		s.errPageD[code] = d
	}
}

// finishErrorPages sets error_pages for the pages a static route serves.
func (c *conv) finishErrorPages(s *site) {
	if len(s.errPages) == 0 {
		return
	}
	ep := newMap()
	for _, e := range s.errPages {
		var best *mapping
		bestLen := -1
		for p, r := range s.paths {
			if routeMatches(p, e[1]) && len(p) > bestLen {
				best, bestLen = r, len(p)
			}
		}
		if best == nil || best.get("static") == nil {
			c.warn(s.m, s.errPageD[e[0]], fmt.Sprintf("%s is not served by a static route of this site", e[1]))
			continue
		}
		ep.set(e[0], e[1])
	}
	if len(ep.keys) > 0 {
		// before routes
		s.m.set("error_pages", ep)
	}
}

// routeMatches is config.RouteMatches (kept here so that nginxconf does
// not depend on config for one function).
func routeMatches(routePath, p string) bool {
	if !strings.HasPrefix(p, routePath) {
		return false
	}
	return len(p) == len(routePath) || strings.HasSuffix(routePath, "/") || p[len(routePath)] == '/'
}

// seconds parses an nginx time ("30s", "1h30m", "90" = seconds, "1y").
func seconds(s string) int {
	units := map[byte]int{'s': 1, 'm': 60, 'h': 3600, 'd': 86400, 'w': 7 * 86400, 'M': 30 * 86400, 'y': 365 * 86400}
	total, n := 0, 0
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= '0' && ch <= '9':
			n = n*10 + int(ch-'0')
		case ch == 'm' && i+1 < len(s) && s[i+1] == 's':
			i++
			n = 0 // milliseconds: rounded away
		default:
			total += n * units[ch]
			n = 0
		}
	}
	return total + n
}

// duration is an nginx time as an edge duration.
func duration(s string) string {
	if strings.HasSuffix(s, "ms") && isDigits(strings.TrimSuffix(s, "ms")) {
		return s
	}
	n := seconds(s)
	switch {
	case n > 0 && n%86400 == 0:
		return strconv.Itoa(n/86400) + "d"
	case n > 0 && n%3600 == 0:
		return strconv.Itoa(n/3600) + "h"
	case n > 0 && n%60 == 0:
		return strconv.Itoa(n/60) + "m"
	}
	return strconv.Itoa(n) + "s"
}

// size keeps an nginx size ("10m", "512k", "0"), which edge reads too.
func size(s string) string { return s }

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
