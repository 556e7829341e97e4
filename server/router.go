// Package server owns edge's listeners and request routing: Host → site →
// longest path prefix → route handler, with the request limits every route
// shares, atomic handler swaps on reload and graceful shutdown.
package server

import (
	"fmt"
	"net/http"
	"net/netip"
	"path"
	"sort"
	"strings"
	"time"

	"edge/config"
	"edge/internal/clientip"
	"edge/internal/httperr"
)

// Builder makes the handler of one route. It is supplied by cmd/edge, which
// knows the handler packages; server knows none of them.
type Builder func(site *config.Site, route *config.Route) (http.Handler, error)

// Router picks a site by Host and a route by longest path prefix. It is
// immutable after NewRouter and safe for concurrent use; a reload builds a
// new Router and swaps it in.
type Router struct {
	hosts *config.SiteIndex // Host -> position in sites
	sites []*site           // as cfg.Sites
	// nowhere records the requests for a host no site has when there is
	// no default site (site label "default", no access log); nil without
	// Metrics.
	nowhere *observer
	// logs holds the access-log files of the sites until Close.
	logs *logHold
	// clients finds the client behind trusted proxies, once per request.
	clients *clientip.Resolver
	// bodyTimeout is server.client_body_timeout; 0: none.
	bodyTimeout time.Duration
}

type site struct {
	routes []*route // longest path first
	pages  *pages   // error_pages; nil without
	// unmatched records the requests the site answers without a route:
	// no route matches (404) or the path is refused (400). Route label
	// UnmatchedRoute; nil without Metrics.
	unmatched *observer
}

// UnmatchedRoute is the route label of the requests a site answers
// without a route (a 404 for a path no route has, a 400 for a path
// refused), in metrics: route paths start with "/".
const UnmatchedRoute = "none"

type route struct {
	path     string
	handler  http.Handler
	rewrites []rewriteRule // applied before handler; the route a rewrite lands on applies none
	maxBody  int64         // 0: unlimited
	obs      *observer     // metrics and access log; nil without Metrics
}

// NewRouter builds the routing table of cfg, calling build for each route.
// m, when non-nil, counts requests and writes access logs; the router then
// holds its access-log files open until Close.
func NewRouter(cfg *config.Config, build Builder, m *Metrics) (rt *Router, err error) {
	rt = &Router{hosts: config.NewSiteIndex(cfg.Sites), bodyTimeout: cfg.Server.ClientBodyTimeout}
	if m != nil {
		hold := &logHold{files: &m.logs}
		rt.logs = hold
		defer func() {
			if err != nil {
				hold.close() // what this router opened, unless another holds it
			}
		}()
	}
	var trusted []netip.Prefix
	for _, s := range cfg.Server.TrustedProxies {
		if p, ok := clientip.ParsePrefix(s); ok { // config validated it
			trusted = append(trusted, p)
		}
	}
	rt.clients = clientip.NewResolver(trusted)
	for i := range cfg.Sites {
		cs := &cfg.Sites[i]
		s := &site{}
		if m != nil {
			var err error
			if s.unmatched, err = m.observer(cs, UnmatchedRoute, rt.logs); err != nil {
				return nil, err
			}
		}
		for j := range cs.Routes {
			cr := &cs.Routes[j]
			h, err := build(cs, cr)
			if err != nil {
				return nil, fmt.Errorf("sites[%d].routes[%d] (%s): %w", i, j, cr.Path, err)
			}
			r := &route{path: cr.Path, handler: withHeaders(h, cr.Headers), rewrites: compileRewrites(cr.Rewrite)}
			if m != nil {
				if r.obs, err = m.observer(cs, cr.Path, rt.logs); err != nil {
					return nil, err
				}
			}
			if cr.MaxBodySize != nil {
				r.maxBody = int64(*cr.MaxBodySize)
			}
			s.routes = append(s.routes, r)
		}
		sort.SliceStable(s.routes, func(a, b int) bool { return len(s.routes[a].path) > len(s.routes[b].path) })
		s.pages = newPages(cs, s.routes)
		rt.sites = append(rt.sites, s)
	}
	if m != nil {
		var err error
		if rt.nowhere, err = m.observer(&config.Site{}, UnmatchedRoute, rt.logs); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// Close lets go of the router's access-log files once the requests in
// flight through it are done; a file no other router uses is then closed.
// Call it when the router is no longer served: its generation retired, or
// the reload that built it failed. Close is idempotent and does not wait;
// without Metrics it does nothing.
func (rt *Router) Close() {
	if rt.logs != nil {
		rt.logs.close()
	}
}

// site returns the site for a Host header value (config.SiteIndex: exact
// name, longest wildcard, the default site), or nil.
func (rt *Router) site(hostport string) *site {
	if i, ok := rt.hosts.Lookup(hostport); ok {
		return rt.sites[i]
	}
	return nil
}

// match returns the route for a clean path. A route path ending in "/"
// matches everything below it; one without matches itself and what lies
// below it as a path segment ("/api" matches "/api" and "/api/x", not
// "/apix").
func (s *site) match(p string) *route {
	for _, r := range s.routes {
		if config.RouteMatches(r.path, p) {
			return r
		}
	}
	return nil
}

// redirectTarget returns the route whose path is p with a trailing slash
// ("/static/" for "/static"), which nginx answers with a 301, or nil.
func (s *site) redirectTarget(p string) *route {
	if strings.HasSuffix(p, "/") {
		return nil
	}
	for _, r := range s.routes {
		if len(r.path) == len(p)+1 && strings.HasSuffix(r.path, "/") && strings.HasPrefix(r.path, p) {
			return r
		}
	}
	return nil
}

// ServeHTTP routes the request, enforcing the path and body rules every
// route shares. It resolves the client's address once (clientip) and
// passes the resolved request on, so that every handler and the access log
// see the same client. Every request is counted and logged, also those
// the router answers itself: under the route it belongs to (a 301 to the
// route's path, a 413), else under the site's UnmatchedRoute.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r = rt.clients.Resolve(r)
	s := rt.site(r.Host)
	if s == nil {
		rt.nowhere.observe(answer(http.StatusNotFound), w, r)
		return
	}
	if s.pages != nil {
		w = &pageWriter{ResponseWriter: w, p: s.pages, r: r}
	}
	p, ok := cleanPath(r.URL.Path)
	if !ok {
		s.unmatched.observe(answer(http.StatusBadRequest), w, r)
		return
	}
	if p != r.URL.Path {
		// Route and serve the normalised path, as nginx does, so that
		// "/static/../admin" is handled by the route for "/admin".
		u := *r.URL
		u.Path, u.RawPath = p, ""
		r2 := *r
		r2.URL = &u
		r = &r2
	}
	rtt := s.match(p)
	if rtt == nil || rtt.path != p {
		if to := s.redirectTarget(p); to != nil {
			to.obs.observe(slashRedirect{}, w, r)
			return
		}
	}
	if rtt != nil && len(rtt.rewrites) > 0 {
		np, q, code, ok := rewrite(rtt.rewrites, p, r.URL.RawQuery)
		switch {
		case ok && code != 0:
			rtt.obs.observe(rewriteRedirect{target: np, query: q, code: code}, w, r)
			return
		case ok:
			// Internal: route the new path once more (nginx's last); the
			// route it lands on applies no rewrites, so rules cannot loop.
			cp, clean := cleanPath(np)
			if !clean {
				s.unmatched.observe(answer(http.StatusBadRequest), w, r)
				return
			}
			u := *r.URL
			u.Path, u.RawPath, u.RawQuery = cp, "", q
			r2 := *r
			r2.URL = &u
			r, p = &r2, cp
			rtt = s.match(p)
		}
	}
	if rtt == nil {
		s.unmatched.observe(answer(http.StatusNotFound), w, r)
		return
	}
	// ContentLength 0: no body (HTTP/2 gives even a GET without DATA frames
	// a Body, which enforces the length itself).
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		if rtt.maxBody > 0 && r.ContentLength > rtt.maxBody {
			// Say no before reading anything (nginx client_max_body_size).
			w.Header().Set("Connection", "close")
			rtt.obs.observe(answer(http.StatusRequestEntityTooLarge), w, r)
			return
		}
		if rt.bodyTimeout > 0 {
			r.Body = newTimedBody(w, r.Body, rt.bodyTimeout)
		}
		if rtt.maxBody > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, rtt.maxBody)
		}
	}
	rtt.obs.observe(rtt.handler, w, r)
}

// answer is a response the router gives itself: the error page of its
// status code.
type answer int

func (a answer) ServeHTTP(w http.ResponseWriter, _ *http.Request) { httperr.Error(w, int(a)) }

// slashRedirect answers a route's path without its trailing slash with a
// 301 to the path with it, the query kept.
type slashRedirect struct{}

func (slashRedirect) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.URL.Path + "/"
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	http.Redirect(w, r, target, http.StatusMovedPermanently)
}

// cleanPath normalises a decoded URL path: it resolves "." and ".."
// segments and merges slashes, keeping a trailing slash. It refuses paths
// that do not start with "/", that climb above the root, or that hold a
// NUL. A backslash is an ordinary byte, as in nginx on Unix (only its
// Windows build treats "\" as a separator): "/a\..\b" is one segment,
// a file name that the static handler's os.Root keeps inside the root.
func cleanPath(p string) (string, bool) {
	if p == "" {
		return "/", true
	}
	if isClean(p) {
		return p, true // the common case: no allocation
	}
	if p[0] != '/' || strings.IndexByte(p, 0) >= 0 {
		return "", false
	}
	depth := 0
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return "", false
			}
		default:
			depth++
		}
	}
	c := path.Clean(p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c, true
}

// isClean reports whether p starts with "/" and has no empty, "." or ".."
// segment and no NUL, so that cleanPath would return it unchanged.
func isClean(p string) bool {
	if p[0] != '/' {
		return false
	}
	for i := 1; i < len(p); i++ {
		switch p[i] {
		case 0:
			return false
		case '/':
			if p[i-1] == '/' {
				return false
			}
		case '.':
			if p[i-1] == '/' && (i+1 == len(p) || p[i+1] == '/' || (p[i+1] == '.' && (i+2 == len(p) || p[i+2] == '/'))) {
				return false
			}
		}
	}
	return true
}
