package main

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"edge/internal/httperr"
)

// adminGuard is the one gate in front of everything the admin listener
// serves (issue 10, "a safe admin surface"). In order:
//
//   - Host must name the admin listener itself: its configured host, the
//     address the connection arrived on, or localhost / a loopback IP, with
//     the listener's port or none. Anything else is 421: a page on
//     rebind.evil.example whose name was re-pointed at 127.0.0.1 (DNS
//     rebinding) must not reach /-/reload or anything else.
//   - A request that may change something (not GET or HEAD) from a browser
//     page of another origin is 403: its Origin, when present, must be the
//     admin origin, and Sec-Fetch-Site must not be cross-site or same-site.
//     Otherwise any web page could POST /publish/orders with a text/plain
//     body (a "simple" request that needs no CORS preflight).
//   - With a key, every path but the probes (/healthz, /readyz, /metrics)
//     needs "Authorization: Bearer KEY" (scheme in any case), compared in
//     constant time. pprof, /hub/stats, /publish and /-/reload included.
//     The dashboard page at / is no exception: without the key a browser
//     gets 401 with loginPage, a page holding no data that asks for the
//     key and sends it as a bearer on its own requests. (Not a cookie:
//     cookies ignore the port, so one set here would travel to every site
//     on the same host and on to their backends.)
//
// Static after construction; safe for concurrent use.
type adminGuard struct {
	host string // configured host in lower case; "" when it binds every address
	port string // configured port
	// keySum is the SHA-256 of the key; nil without a key. Comparing sums
	// keeps the comparison constant-time whatever the length of the guess.
	keySum []byte
	log    *slog.Logger
	next   http.Handler
	// loginPage is the body of a 401 to GET / (the dashboard asking for
	// the key); nil: the generic error page.
	loginPage []byte
}

// openWithKey are the paths a key does not cover: probes and scrapers that
// cannot send a bearer key easily, and that reveal nothing worth guarding.
var openWithKey = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// newAdminGuard guards next for the admin listener at addr with key ("":
// no key).
func newAdminGuard(addr, key string, log *slog.Logger, next http.Handler) *adminGuard {
	g := &adminGuard{log: log, next: next}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		g.host, g.port = normalHost(host), port
	}
	if g.host == "0.0.0.0" || g.host == "::" {
		g.host = ""
	}
	if key != "" {
		sum := sha256.Sum256([]byte(key))
		g.keySum = sum[:]
	}
	return g
}

func (g *adminGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.ownHost(r, r.Host) {
		g.log.Debug("admin request refused: foreign Host", "host", r.Host, "remote_addr", r.RemoteAddr)
		httperr.Error(w, http.StatusMisdirectedRequest)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead && g.crossSite(r) {
		g.log.Debug("admin request refused: cross-site", "origin", r.Header.Get("Origin"),
			"sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "remote_addr", r.RemoteAddr)
		httperr.Error(w, http.StatusForbidden)
		return
	}
	if g.keySum != nil && !openWithKey[r.URL.Path] && !g.keyOK(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="edge admin"`)
		if r.URL.Path == "/" && r.Method == http.MethodGet && g.loginPage != nil {
			writePage(w, http.StatusUnauthorized, g.loginPage)
			return
		}
		httperr.Error(w, http.StatusUnauthorized)
		return
	}
	g.next.ServeHTTP(w, r)
}

// ownHost reports whether hostport (a Host header or an origin's host)
// names this listener.
func (g *adminGuard) ownHost(r *http.Request, hostport string) bool {
	host, port := hostport, ""
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	}
	host = normalHost(host)
	if hostport == "" && r.Host == "" {
		// HTTP/1.0 without Host: not a browser, so not DNS rebinding.
		return true
	}
	local := localAddr(r)
	if port != "" && port != g.port && (!local.IsValid() || port != strconv.Itoa(int(local.Port()))) {
		return false
	}
	switch {
	case host == "":
		return false
	case host == "localhost" || (g.host != "" && host == g.host):
		return true
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false // a name that is not ours: the rebinding case
	}
	a = a.Unmap()
	// An address literal cannot be re-pointed by DNS: loopback, or the
	// address the client reached us on (a scraper on another machine).
	return a.IsLoopback() || (local.IsValid() && a == local.Addr())
}

// crossSite reports whether a browser sent r from a page that is not the
// admin listener's own.
func (g *adminGuard) crossSite(r *http.Request) bool {
	switch strings.ToLower(r.Header.Get("Sec-Fetch-Site")) {
	case "cross-site", "same-site":
		return true
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return false // not a browser, or a same-origin request of an old one
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return true // "null" (sandboxed pages, file:) and the like
	}
	return !g.ownHost(r, u.Host)
}

// keyOK reports whether r carries the admin key as a bearer token. The
// scheme is case-insensitive (RFC 9110 §11.1).
func (g *adminGuard) keyOK(r *http.Request) bool {
	scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(sum[:], g.keySum) == 1
}

// normalHost lower-cases a host name and drops brackets and a trailing dot.
func normalHost(h string) string {
	return strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
}

// localAddr is the address the request's connection arrived on; invalid
// when unknown.
func localAddr(r *http.Request) netip.AddrPort {
	a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if !ok {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
