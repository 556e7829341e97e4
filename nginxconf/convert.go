package nginxconf

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Result is a converted configuration.
type Result struct {
	// YAML is edge's configuration, with a comment wherever a directive
	// was dropped or could not be translated.
	YAML []byte
	// Warnings are the directives that could not be translated, as
	// "FILE:LINE: directive: why", in file order.
	Warnings []string
}

// Convert turns a parsed nginx configuration into edge's. source names the
// main file in the output's head comment; notes are remarks the parser made
// (skipped well-known includes), as "FILE:LINE: directive: why".
func Convert(tree []*Directive, source string, notes []string) *Result {
	c := &conv{
		upstreams: map[string]*Directive{},
		reqZones:  map[string]zone{},
		connZones: map[string]zone{},
		top:       newMap(),
		seen:      map[string]bool{},
		topNotes:  notes,
	}
	c.run(tree)
	head := "Converted from " + source + " by edge import-nginx.\n" +
		"Comments name the nginx FILE:LINE each setting came from; lines marked\n" +
		"WARNING were not translated and need your attention. Check with: edge validate -config FILE"
	if len(c.topNotes) > 0 {
		head += "\n\n" + strings.Join(c.topNotes, "\n")
	}
	sortWarnings(c.warns)
	return &Result{YAML: render(head, c.top), Warnings: c.warns}
}

type zone struct {
	key  string // edge limit key; "" when not expressible
	rate string // edge rate "10/s"
	d    *Directive
}

type conv struct {
	warns     []string
	seen      map[string]bool // warnings already given (inherited directives repeat)
	topNotes  []string
	upstreams map[string]*Directive
	reqZones  map[string]zone
	connZones map[string]zone
	top       *mapping
	trusted   []string

	httpAddr, httpsAddr string
	proxyProtocol       *Directive
	sites               []*site
	redirected          []string // hosts of HTTP->HTTPS redirect servers
	needEmail           bool
	httpMaxBody         *Directive
}

type site struct {
	m         *mapping
	d         *Directive
	hosts     []string
	ssl       bool
	plain     bool
	cert      bool
	routes    []*mapping
	paths     map[string]*mapping
	named     map[string]*Directive
	php       *Directive // location ~ \.php$
	phpScope  scope
	phpTarget string // try_files … /index.php target path
	errPages  [][2]string
	errPageD  map[string]*Directive
}

// text is a directive as written, shortened for messages.
func text(d *Directive) string {
	s := d.Name
	if len(d.Args) > 0 {
		s += " " + strings.Join(d.Args, " ")
	}
	if len(s) > 70 {
		s = s[:67] + "..."
	}
	return s
}

// warn records a directive that was not translated: on stderr (Warnings)
// and as a WARNING comment on m.
func (c *conv) warn(m *mapping, d *Directive, why string) {
	w := fmt.Sprintf("%s: %s: %s", d.Pos(), d.Name, why)
	if m != nil {
		m.note(fmt.Sprintf("WARNING %s: %s: %s", d.Pos(), text(d), why))
	}
	if !c.seen[w] {
		c.seen[w] = true
		c.warns = append(c.warns, w)
	}
}

// note records a directive edge does not need, as a comment on m.
func (c *conv) note(m *mapping, d *Directive, why string) {
	s := fmt.Sprintf("%s: %s: %s", d.Pos(), text(d), why)
	if m == nil {
		c.topNotes = append(c.topNotes, s)
		return
	}
	m.note(s)
}

// dropped are directives edge makes unnecessary, with the reason.
var dropped = map[string]string{
	"user":                          "edge runs as its systemd unit's user",
	"worker_processes":              "Go uses every core",
	"worker_rlimit_nofile":          "set LimitNOFILE in the systemd unit",
	"worker_connections":            "edge has no per-worker connection table (server.max_connections caps clients)",
	"multi_accept":                  "Go's runtime accepts connections itself",
	"use":                           "Go's runtime uses epoll itself",
	"pid":                           "systemd tracks the process",
	"error_log":                     "edge logs to stderr (journald); log.level sets the level",
	"log_format":                    "edge's access_log format is combined or json",
	"sendfile":                      "edge uses sendfile(2) for large files itself",
	"tcp_nopush":                    "not needed with Go's writes",
	"tcp_nodelay":                   "on by default in Go",
	"types_hash_max_size":           "no hash tables to size",
	"types_hash_bucket_size":        "no hash tables to size",
	"server_names_hash_bucket_size": "no hash tables to size",
	"server_names_hash_max_size":    "no hash tables to size",
	"map_hash_bucket_size":          "no hash tables to size",
	"variables_hash_max_size":       "no hash tables to size",
	"default_type":                  "edge picks media types by file extension",
	"types":                         "edge picks media types by file extension",
	"charset":                       "edge sends text files as UTF-8",
	"server_tokens":                 "edge sends no version",
	"ssl_protocols":                 "edge uses Go's TLS defaults: TLS 1.2 and 1.3 with AEAD ciphers",
	"ssl_ciphers":                   "edge uses Go's TLS defaults: TLS 1.2 and 1.3 with AEAD ciphers",
	"ssl_prefer_server_ciphers":     "edge uses Go's TLS defaults",
	"ssl_ecdh_curve":                "edge uses Go's TLS defaults (X25519, P-256, hybrid post-quantum)",
	"ssl_dhparam":                   "Go offers no finite-field DH",
	"ssl_session_cache":             "Go's session tickets are on",
	"ssl_session_timeout":           "Go's session tickets are on",
	"ssl_session_tickets":           "Go's session tickets are on",
	"ssl_stapling":                  "edge staples OCSP when the certificate names a responder",
	"ssl_stapling_verify":           "edge staples OCSP when the certificate names a responder",
	"ssl_trusted_certificate":       "edge staples OCSP when the certificate names a responder",
	"ssl_buffer_size":               "Go sizes TLS records itself",
	"ssl":                           "listen.https is the TLS listener",
	"http2":                         "HTTP/2 is on for HTTPS by default",
	"resolver":                      "edge uses the system resolver",
	"resolver_timeout":              "edge uses the system resolver",
	"proxy_http_version":            "edge always speaks HTTP/1.1 with keep-alive to upstreams",
	"proxy_buffering":               "edge streams responses as they arrive",
	"proxy_buffers":                 "edge streams responses as they arrive",
	"proxy_buffer_size":             "edge streams responses as they arrive",
	"proxy_busy_buffers_size":       "edge streams responses as they arrive",
	"proxy_request_buffering":       "edge reads bodies up to proxy.request_buffering (64KiB) first and streams larger ones",
	"proxy_send_timeout":            "edge has no upstream write timeout; server.client_body_timeout bounds a stalled body",
	"proxy_next_upstream":           "edge retries connection failures on another server (proxy.retries)",
	"proxy_redirect":                "edge passes Location unchanged (nginx's default rewrites only proxy_pass's own URL)",
	"proxy_cache_bypass":            "edge has no proxy cache",
	"proxy_pass_request_headers":    "edge passes request headers",
	"gzip_comp_level":               "edge picks its compression levels",
	"gzip_vary":                     "edge sends Vary: Accept-Encoding itself",
	"gzip_http_version":             "not needed",
	"gzip_buffers":                  "not needed",
	"gzip_disable":                  "no browser edge serves needs it",
	"gzip_static":                   "edge serves x.br, x.zst and x.gz beside x by default (static.precompressed)",
	"fastcgi_buffers":               "edge streams FastCGI responses",
	"fastcgi_buffer_size":           "edge streams FastCGI responses",
	"fastcgi_buffering":             "edge streams FastCGI responses",
	"fastcgi_keep_conn":             "edge keeps FastCGI connections (fastcgi.keepalive)",
	"real_ip_recursive":             "edge takes the right-most untrusted address, as real_ip_recursive on",
	"client_body_buffer_size":       "edge buffers small bodies in memory (proxy.request_buffering)",
	"client_header_buffer_size":     "server.max_header_bytes bounds headers",
	"open_file_cache":               "edge caches small files in memory (static.cache_max_file_size)",
	"open_file_cache_valid":         "edge caches small files in memory (static.cache_max_file_size)",
	"open_file_cache_min_uses":      "edge caches small files in memory (static.cache_max_file_size)",
	"open_file_cache_errors":        "edge caches small files in memory (static.cache_max_file_size)",
	"reset_timedout_connection":     "edge closes timed-out connections",
	"send_timeout":                  "edge has no global write timeout (it would cut downloads and SSE)",
	"etag":                          "edge sends strong ETags",
	"port_in_redirect":              "edge's redirects keep the request's host",
	"absolute_redirect":             "edge's redirects keep the request's host",
	"server_name_in_redirect":       "edge's redirects keep the request's host",
	"merge_slashes":                 "edge merges // as nginx does",
	"internal":                      "edge has no internal-only routes: the page is reachable directly",
	"autoindex_exact_size":          "not needed",
	"autoindex_localtime":           "not needed",
}

// inheritable directives pass from http to server to location; a level
// that writes one replaces what it inherited (allow and deny are one list,
// as nginx's access rules).
var inheritable = map[string]string{
	"root": "root", "index": "index", "client_max_body_size": "client_max_body_size",
	"add_header": "add_header", "allow": "access", "deny": "access",
	"auth_basic": "auth_basic", "auth_basic_user_file": "auth_basic_user_file",
	"limit_req": "limit_req", "limit_conn": "limit_conn", "limit_req_status": "limit_req_status",
	"limit_conn_status": "limit_conn_status", "expires": "expires",
	"gzip": "gzip", "gzip_types": "gzip_types", "gzip_min_length": "gzip_min_length", "gzip_proxied": "gzip_proxied",
	"proxy_set_header": "proxy_set_header", "proxy_hide_header": "proxy_hide_header", "fastcgi_hide_header": "fastcgi_hide_header",
	"proxy_connect_timeout": "proxy_connect_timeout", "proxy_read_timeout": "proxy_read_timeout",
	"fastcgi_param": "fastcgi_param", "fastcgi_index": "fastcgi_index",
	"fastcgi_read_timeout": "fastcgi_read_timeout", "fastcgi_connect_timeout": "fastcgi_connect_timeout",
	"fastcgi_split_path_info": "fastcgi_split_path_info", "autoindex": "autoindex",
	"error_page": "error_page", "access_log": "access_log",
}

// scope holds the inheritable directives in effect, by inheritance key.
type scope map[string][]*Directive

func (s scope) child(block []*Directive) scope {
	n := make(scope, len(s)+4)
	for k, v := range s {
		n[k] = v
	}
	reset := map[string]bool{}
	for _, d := range block {
		k, ok := inheritable[d.Name]
		if !ok {
			continue
		}
		if !reset[k] {
			reset[k] = true
			n[k] = nil
		}
		n[k] = append(n[k], d)
	}
	return n
}

func (s scope) last(key string) *Directive {
	if l := s[key]; len(l) > 0 {
		return l[len(l)-1]
	}
	return nil
}

// own reports whether block itself writes the inheritance key.
func own(block []*Directive, key string) bool {
	for _, d := range block {
		if inheritable[d.Name] == key {
			return true
		}
	}
	return false
}

func (c *conv) run(tree []*Directive) {
	// A first pass for what servers refer to: upstreams, zones, real IP.
	var http *Directive
	for _, d := range tree {
		switch d.Name {
		case "http":
			http = d
		case "events", "stream", "mail":
			if d.Name == "events" {
				c.note(nil, d, "edge has no event-loop settings (Go's runtime)")
			} else {
				c.warn(nil, d, "edge proxies HTTP only; "+d.Name+" {} is not translated")
			}
		default:
			c.topLevel(d, nil)
		}
	}
	block := tree
	if http != nil {
		block = http.Block
	}
	walk(block, func(d *Directive) {
		switch d.Name {
		case "upstream":
			c.upstreams[d.Arg(0)] = d
		case "limit_req_zone", "limit_conn_zone":
			c.zone(d)
		case "set_real_ip_from":
			c.trusted = append(c.trusted, cidr(d.Arg(0)))
		}
	})
	sc := scope{}.child(block)
	server := newMap()
	for _, d := range block {
		switch d.Name {
		case "server":
			c.server(d, sc)
		case "upstream", "limit_req_zone", "limit_conn_zone":
		case "set_real_ip_from":
		case "real_ip_header":
			c.note(nil, d, "edge believes X-Forwarded-For, X-Real-IP and Forwarded from server.trusted_proxies (and the PROXY header from listen.proxy_protocol.trusted)")
		case "client_max_body_size":
			c.httpMaxBody = d
			server.set("max_body_size", size(d.Arg(0)))
		case "keepalive_timeout":
			server.set("idle_timeout", duration(d.Arg(0)))
		case "keepalive_requests":
			server.set("max_requests_per_connection", atoi(d.Arg(0)))
		case "client_body_timeout":
			server.set("client_body_timeout", duration(d.Arg(0)))
		case "client_header_timeout":
			server.set("read_header_timeout", duration(d.Arg(0)))
		case "map":
			c.mapBlock(d)
		default:
			if _, ok := inheritable[d.Name]; ok {
				continue // applied to every server through sc
			}
			c.topLevel(d, nil)
		}
	}
	if len(c.trusted) > 0 {
		server.set("trusted_proxies", c.trusted)
	}
	listen := c.top.sub("listen")
	listen.set("http", c.httpAddr)
	if c.httpAddr == "" && c.httpsAddr != "" {
		listen.note("nginx had no plain-HTTP listener; edge's would answer ACME HTTP-01 and redirect to HTTPS")
	}
	listen.set("https", c.httpsAddr)
	if c.proxyProtocol != nil {
		if len(c.trusted) == 0 {
			c.warn(listen, c.proxyProtocol, "proxy_protocol: edge takes the PROXY header only from listen.proxy_protocol.trusted; add set_real_ip_from with your load balancer's address")
		} else {
			pp := listen.sub("proxy_protocol")
			pp.set("trusted", c.trusted)
		}
	}
	if len(server.keys) > 0 {
		c.top.set("server", server)
	}
	if c.needEmail && c.httpsAddr != "" {
		t := c.top.sub("tls")
		t.set("email", "you@example.com")
		t.note("WARNING: sites without ssl_certificate get certificates from Let's Encrypt, which needs a contact: put yours here")
		c.warns = append(c.warns, "tls.email: edge gets certificates for sites without ssl_certificate from Let's Encrypt; set tls.email in the output")
	}
	var sites []any
	for _, s := range c.sites {
		sites = append(sites, s.m)
	}
	for _, h := range c.redirected {
		found := false
		for _, s := range c.sites {
			for _, x := range s.hosts {
				found = found || x == h
			}
		}
		if !found {
			c.topNotes = append(c.topNotes, fmt.Sprintf("WARNING: %s was redirected to HTTPS, but no server serves it over HTTPS", h))
		}
	}
	c.top.set("sites", sites)
}

// walk calls fn for every directive in the tree.
func walk(ds []*Directive, fn func(*Directive)) {
	for _, d := range ds {
		fn(d)
		walk(d.Block, fn)
	}
}

// topLevel handles a directive outside server blocks that needs no site.
func (c *conv) topLevel(d *Directive, m *mapping) {
	if why, ok := dropped[d.Name]; ok {
		c.note(m, d, why)
		return
	}
	c.unknown(m, d)
}

// unknown warns about a directive the converter does not translate.
func (c *conv) unknown(m *mapping, d *Directive) {
	switch {
	case d.Name == "if":
		c.warn(m, d, "if is not translated: express the condition as a route, a rewrite or in the backend")
	case d.Name == "set":
		c.warn(m, d, "edge has no variables")
	case d.Name == "map" || d.Name == "geo" || d.Name == "split_clients":
		c.warn(m, d, "edge has no variables; only the WebSocket $connection_upgrade map is understood")
	case strings.Contains(d.Name, "lua"):
		c.warn(m, d, "Lua is not translated")
	case strings.HasPrefix(d.Name, "sub_filter"):
		c.warn(m, d, "edge does not rewrite response bodies")
	case strings.HasPrefix(d.Name, "proxy_cache"):
		c.warn(m, d, "edge has no proxy cache")
	case d.Name == "auth_request":
		c.warn(m, d, "auth_request is available for hub routes only (hub.auth.mode: request)")
	default:
		c.warn(m, d, "not translated")
	}
}

func (c *conv) mapBlock(d *Directive) {
	if d.Arg(0) == "$http_upgrade" && d.Arg(1) == "$connection_upgrade" {
		c.note(nil, d, "edge passes WebSocket upgrades through itself, with Upgrade and Connection")
		return
	}
	c.unknown(nil, d)
}

func (c *conv) zone(d *Directive) {
	z := zone{d: d}
	var name string
	for _, a := range d.Args[1:] {
		if v, ok := strings.CutPrefix(a, "zone="); ok {
			name, _, _ = strings.Cut(v, ":")
		}
		if v, ok := strings.CutPrefix(a, "rate="); ok {
			n, per, _ := strings.Cut(v, "r/")
			z.rate = n + "/" + per
		}
	}
	if d.Name == "limit_conn_zone" {
		name, _, _ = strings.Cut(d.Arg(1), ":")
		name = strings.TrimPrefix(name, "zone=")
	}
	switch k := d.Arg(0); {
	case k == "$binary_remote_addr" || k == "$remote_addr":
		z.key = "client_ip"
	case strings.HasPrefix(k, "$http_"):
		z.key = "header:" + headerName(strings.TrimPrefix(k, "$http_"))
	default:
		c.warn(nil, d, fmt.Sprintf("key %s: edge limits by client_ip or header:NAME only; routes using this zone get no limit", k))
	}
	c.reqZonesOrConn(d.Name)[name] = z
}

func (c *conv) reqZonesOrConn(n string) map[string]zone {
	if n == "limit_req_zone" {
		return c.reqZones
	}
	return c.connZones
}

// headerName turns nginx's $http_x_api_key suffix into X-Api-Key.
func headerName(s string) string {
	parts := strings.Split(s, "_")
	for i, p := range parts {
		if p != "" {
			parts[i] = strings.ToUpper(p[:1]) + p[1:]
		}
	}
	return strings.Join(parts, "-")
}

func cidr(s string) string {
	if strings.Contains(s, "/") {
		return s
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()).String()
	}
	return s
}

// sortWarnings puts warnings in file order (FILE:LINE: …), stable.
func sortWarnings(ws []string) {
	key := func(w string) (string, int) {
		f, rest, _ := strings.Cut(w, ":")
		n, _ := strconv.Atoi(strings.SplitN(rest, ":", 2)[0])
		return f, n
	}
	sort.SliceStable(ws, func(i, j int) bool {
		fi, li := key(ws[i])
		fj, lj := key(ws[j])
		if fi != fj {
			return fi < fj
		}
		return li < lj
	})
}

// Import parses the nginx configuration at path with its includes and
// converts it. A file that does not parse returns a *ParseError.
func Import(path string, opt Options) (*Result, error) {
	var notes []string
	user := opt.Notes
	opt.Notes = func(d *Directive, msg string) {
		notes = append(notes, fmt.Sprintf("%s: include %s: %s", d.Pos(), d.Arg(0), msg))
		if user != nil {
			user(d, msg)
		}
	}
	tree, err := Parse(path, opt)
	if err != nil {
		return nil, err
	}
	return Convert(tree, path, notes), nil
}
