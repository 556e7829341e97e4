package config

import (
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// Name is the site's name in metrics labels ({site, route}) and logs: its
// first host as configured, or "default" for the site without hosts. Every
// package that labels by site uses it, so that one site has one name.
func (s *Site) Name() string {
	if len(s.Hosts) == 0 {
		return "default"
	}
	return s.Hosts[0]
}

// SiteIndex finds the site that answers a request host. It is the one
// host → site matcher: the router picks the routes with it, the TLS layer
// the HTTPS redirect and HSTS of the same site. Immutable after
// NewSiteIndex and safe for concurrent use.
//
// A host matches, in order: a site's exact name; the site with the
// longest "*.suffix" wildcard that it ends in with at least one label
// before it (as nginx's "*.example.com": any number of labels, never
// example.com itself); the site without hosts. Hosts are compared in the
// canonical form of HostName.
type SiteIndex struct {
	names map[string]int     // canonical exact name -> site index
	addrs map[netip.Addr]int // IP address hosts -> site index
	wild  []wildHost         // longest suffix first
	def   int                // the site without hosts; -1: none
}

type wildHost struct {
	suffix string // ".example.com"
	site   int
}

// NewSiteIndex indexes the hosts of sites; the indexes Lookup returns are
// positions in sites.
func NewSiteIndex(sites []Site) *SiteIndex {
	x := &SiteIndex{names: map[string]int{}, addrs: map[netip.Addr]int{}, def: -1}
	for i := range sites {
		if len(sites[i].Hosts) == 0 && x.def < 0 {
			x.def = i
		}
		for _, h := range sites[i].Hosts {
			name, addr := canonicalHost(h)
			if addr.IsValid() {
				x.addrs[addr] = i
			} else if suffix, ok := strings.CutPrefix(name, "*"); ok {
				x.wild = append(x.wild, wildHost{suffix: suffix, site: i})
			} else {
				x.names[name] = i
			}
		}
	}
	sort.SliceStable(x.wild, func(a, b int) bool { return len(x.wild[a].suffix) > len(x.wild[b].suffix) })
	return x
}

// Lookup returns the position of the site for host, a Host header value
// (with or without port) or a TLS server name; ok is false when no site
// matches and there is no default site. It does not allocate for a host
// already in canonical form, with or without a port.
func (x *SiteIndex) Lookup(host string) (site int, ok bool) {
	name, addr := canonicalHost(host)
	if addr.IsValid() {
		if i, ok := x.addrs[addr]; ok {
			return i, true
		}
	} else if name != "" {
		if i, ok := x.names[name]; ok {
			return i, true
		}
		for _, w := range x.wild {
			if len(name) > len(w.suffix) && strings.HasSuffix(name, w.suffix) {
				return w.site, true
			}
		}
	}
	return x.def, x.def >= 0
}

// HostName returns the canonical form of a Host header value, a TLS
// server name or a configured host, as sites and certificates are matched
// by it: without port and IPv6 brackets, without trailing dots, lower
// case, internationalised names as punycode (A-labels), IP addresses in
// their canonical form ("::1", IPv4-mapped IPv6 as IPv4).
func HostName(host string) string {
	name, addr := canonicalHost(host)
	if addr.IsValid() {
		return addr.String()
	}
	return name
}

// canonicalHost is HostName without formatting an IP address: name is the
// canonical name, or addr is valid for an IP address. It runs on every
// request and handshake, and allocates nothing for a name already in
// canonical form.
func canonicalHost(h string) (name string, addr netip.Addr) {
	colon := false // h holds a colon after the port is cut: maybe IPv6
	if strings.HasPrefix(h, "[") {
		// "[v6]" or "[v6]:port"
		if end := strings.IndexByte(h, ']'); end > 0 {
			if a, err := netip.ParseAddr(h[1:end]); err == nil {
				return "", a.Unmap()
			}
			// Not an address: kept bracketed, it matches no site's host.
			return strings.ToLower(h[:end+1]), netip.Addr{}
		}
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		if strings.IndexByte(h[i+1:], ':') < 0 {
			h = h[:i] // "name:port"
		} else {
			colon = true // more than one: a bare IPv6 address
		}
	}
	for len(h) > 0 && h[len(h)-1] == '.' {
		h = h[:len(h)-1]
	}
	upper := false
	for i := 0; i < len(h); i++ { // one pass, as strings.ToLower's own check
		c := h[i]
		if c >= 0x80 {
			return unicodeHost(h), netip.Addr{}
		}
		upper = upper || ('A' <= c && c <= 'Z')
	}
	if upper {
		h = strings.ToLower(h)
	}
	if colon || digitsAndDots(h) {
		if a, err := netip.ParseAddr(h); err == nil {
			return "", a.Unmap()
		}
	}
	return h, netip.Addr{}
}

// unicodeHost is the canonical form of a name with non-ASCII bytes. RFC
// 5891: internationalised names compare as their A-labels. A name idna
// refuses is compared lower-cased: it matches nothing a valid
// configuration holds. Lower-casing comes first, so that the result is a
// fixed point (idna refuses some upper-case letters whose lower case it
// takes).
func unicodeHost(h string) string {
	h = strings.ToLower(h)
	if a, err := idna.Lookup.ToASCII(h); err == nil {
		return strings.ToLower(strings.TrimRight(a, ".")) // idna maps "。" to "."
	}
	return h
}

// digitsAndDots reports whether h has only the characters of an IPv4
// address, so that names skip the parse.
func digitsAndDots(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c != '.' && (c < '0' || c > '9') {
			return false
		}
	}
	return h != ""
}

// RouteFor returns the route that serves path in s, by longest prefix as
// the router matches (RouteMatches), or nil.
func (s *Site) RouteFor(path string) *Route {
	var best *Route
	for i := range s.Routes {
		r := &s.Routes[i]
		if RouteMatches(r.Path, path) && (best == nil || len(r.Path) > len(best.Path)) {
			best = r
		}
	}
	return best
}

// RouteMatches reports whether a route of path routePath serves p, as
// nginx prefix locations: "/static/" serves "/static/x"; "/api" serves
// "/api" and "/api/v1", not "/apix".
func RouteMatches(routePath, p string) bool {
	if !strings.HasPrefix(p, routePath) {
		return false
	}
	return len(p) == len(routePath) || strings.HasSuffix(routePath, "/") || p[len(routePath)] == '/'
}

// ErrorPagesByCode returns ErrorPages keyed by status (config.Parse has
// checked the keys).
func (s *Site) ErrorPagesByCode() map[int]string {
	m := make(map[int]string, len(s.ErrorPages))
	for k, v := range s.ErrorPages {
		if code, err := strconv.Atoi(k); err == nil {
			m[code] = v
		}
	}
	return m
}
