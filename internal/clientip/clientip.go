// Package clientip is the one place that decides who the client of a
// request is. Behind a load balancer the TCP peer is the balancer; when that
// peer is in server.trusted_proxies, the client is the right-most address of
// X-Forwarded-For (or Forwarded, or X-Real-IP) that is not itself a trusted
// proxy, as nginx's real_ip_recursive does. The server resolves it once per
// request (Resolver.Resolve); every handler, the access log, rate limits and
// the hub's per-IP budgets read it with Of or InfoOf.
package clientip

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Info is what is known of a request's origin.
type Info struct {
	// Peer is the TCP peer; invalid when unknown (a unix listener).
	Peer netip.Addr
	// Client is the client as far as trusted proxies tell; Peer when the
	// peer is not trusted.
	Client netip.Addr
	// Trusted reports whether Peer is a trusted proxy, whose forwarding
	// headers are kept and appended to rather than replaced.
	Trusted bool
}

type ctxKey struct{}

// Resolver finds the client of requests from its list of trusted proxies.
// The zero Resolver trusts nobody. Immutable; safe for concurrent use.
type Resolver struct {
	trusted []netip.Prefix
}

// NewResolver returns a Resolver trusting the given prefixes.
func NewResolver(trusted []netip.Prefix) *Resolver {
	return &Resolver{trusted: trusted}
}

// ParsePrefix accepts a CIDR or a single address, as server.trusted_proxies
// does; ok is false for anything else.
func ParsePrefix(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

// Trusts reports whether a is a trusted proxy.
func (res *Resolver) Trusts(a netip.Addr) bool {
	if res == nil {
		return false
	}
	for _, p := range res.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Resolve returns r with its Info attached when the peer is a trusted
// proxy; otherwise it returns r itself, unchanged and without allocating,
// and Of and InfoOf fall back to the peer address.
func (res *Resolver) Resolve(r *http.Request) *http.Request {
	if res == nil || len(res.trusted) == 0 {
		return r
	}
	peer := Peer(r)
	if !peer.IsValid() || !res.Trusts(peer) {
		return r
	}
	info := Info{Peer: peer, Client: res.realClient(r.Header, peer), Trusted: true}
	return r.WithContext(context.WithValue(r.Context(), ctxKey{}, info))
}

// InfoOf returns what Resolve found for r, or the peer as the client.
func InfoOf(r *http.Request) Info {
	if info, ok := r.Context().Value(ctxKey{}).(Info); ok {
		return info
	}
	p := Peer(r)
	return Info{Peer: p, Client: p}
}

// Of returns the client address of r; invalid when unknown.
func Of(r *http.Request) netip.Addr {
	return InfoOf(r).Client
}

// String returns the client address of r as text, or the raw RemoteAddr
// when it holds no IP address (a unix listener: "@").
func String(r *http.Request) string {
	if a := Of(r); a.IsValid() {
		return a.String()
	}
	return r.RemoteAddr
}

// Peer parses r.RemoteAddr.
func Peer(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap()
	}
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		host = h
	}
	a, _ := netip.ParseAddr(host)
	return a.Unmap()
}

// realClient walks X-Forwarded-For (else Forwarded's for= elements) from
// the right, skipping trusted proxies; the first address that is not
// trusted is the client. An element that does not parse stops the walk at
// the last good address. Without either header a valid X-Real-IP is used.
func (res *Resolver) realClient(hdr http.Header, peer netip.Addr) netip.Addr {
	hops := hdr["X-Forwarded-For"]
	parse := ParseForwardedFor
	if len(hops) == 0 {
		if hops = hdr["Forwarded"]; len(hops) == 0 {
			if a, err := netip.ParseAddr(strings.TrimSpace(hdr.Get("X-Real-IP"))); err == nil {
				return a.Unmap()
			}
			return peer
		}
		parse = parseForwardedElement
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, ok := parse(parts[j])
			if !ok {
				return client
			}
			client = a
			if !res.Trusts(a) {
				return client
			}
		}
	}
	return client
}

// ParseForwardedFor parses an X-Forwarded-For element: an address,
// possibly with a port or in brackets.
func ParseForwardedFor(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	if a, err := netip.ParseAddr(strings.Trim(s, "[]")); err == nil {
		return a.Unmap(), true
	}
	return netip.Addr{}, false
}

// parseForwardedElement takes the for= parameter of one RFC 7239
// forwarded-element (`for=192.0.2.1;proto=https`, `for="[2001:db8::1]:80"`).
func parseForwardedElement(elem string) (netip.Addr, bool) {
	for _, pair := range strings.Split(elem, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
		if !ok || !strings.EqualFold(k, "for") {
			continue
		}
		return ParseForwardedFor(strings.Trim(v, `"`))
	}
	return netip.Addr{}, false
}
