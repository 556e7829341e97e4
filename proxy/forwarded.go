package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// forwarding computes the forwarding headers of one request. From a
// trusted peer (server.trusted_proxies) the incoming X-Forwarded-*,
// X-Real-IP and Forwarded are kept and appended to; from anyone else they
// are replaced, so that a client cannot spoof its address.
type forwarding struct {
	peer    netip.Addr // the TCP peer; invalid when unknown (unix listener)
	client  netip.Addr // the client as far as trusted proxies tell
	trusted bool       // peer is a trusted proxy
}

func (h *Handler) forwardingOf(in *http.Request) forwarding {
	var f forwarding
	if ap, err := netip.ParseAddrPort(in.RemoteAddr); err == nil {
		f.peer = ap.Addr().Unmap()
	} else if host, _, err := net.SplitHostPort(in.RemoteAddr); err == nil {
		f.peer, _ = netip.ParseAddr(host)
		f.peer = f.peer.Unmap()
	}
	f.client = f.peer
	f.trusted = f.peer.IsValid() && h.trusted(f.peer)
	if f.trusted {
		f.client = h.realClient(in.Header, f.peer)
	}
	return f
}

func (h *Handler) trusted(a netip.Addr) bool {
	for _, p := range h.trustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// realClient walks X-Forwarded-For from the right, skipping trusted
// proxies; the first address that is not trusted is the client (nginx
// real_ip_recursive). Without X-Forwarded-For a valid X-Real-IP is used.
func (h *Handler) realClient(hdr http.Header, peer netip.Addr) netip.Addr {
	xff := hdr["X-Forwarded-For"]
	if len(xff) == 0 {
		if a, err := netip.ParseAddr(strings.TrimSpace(hdr.Get("X-Real-IP"))); err == nil {
			return a.Unmap()
		}
		return peer
	}
	client := peer
	for i := len(xff) - 1; i >= 0; i-- {
		parts := strings.Split(xff[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, ok := parseForwardedAddr(parts[j])
			if !ok {
				return client
			}
			client = a
			if !h.trusted(a) {
				return client
			}
		}
	}
	return client
}

// parseForwardedAddr parses an X-Forwarded-For element: an address,
// possibly with a port or in brackets.
func parseForwardedAddr(s string) (netip.Addr, bool) {
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

// setHeaders writes the forwarding headers onto out. ReverseProxy has
// already removed Forwarded and X-Forwarded-* from out (Rewrite semantics);
// X-Real-IP is removed here.
func (f forwarding) setHeaders(in, out *http.Request, rfc7239 bool) {
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	hdr := out.Header
	delete(hdr, "X-Real-Ip")
	peer := ""
	if f.peer.IsValid() {
		peer = f.peer.String()
	}
	xff, xfh, xfp := peer, in.Host, proto
	if f.trusted {
		if prior := in.Header["X-Forwarded-For"]; len(prior) > 0 {
			xff = strings.Join(prior, ", ") + ", " + peer
		}
		if v := in.Header.Get("X-Forwarded-Host"); v != "" {
			xfh = v
		}
		if v := in.Header.Get("X-Forwarded-Proto"); v != "" {
			xfp = v
		}
	}
	// The values share one allocation; the keys are in canonical form.
	vals := make([]string, 4)
	if peer != "" {
		client := peer
		if f.client != f.peer {
			client = f.client.String()
		}
		vals[0], vals[1] = xff, client
		hdr["X-Forwarded-For"] = vals[0:1:1]
		hdr["X-Real-Ip"] = vals[1:2:2]
	}
	vals[2], vals[3] = xfh, xfp
	hdr["X-Forwarded-Host"] = vals[2:3:3]
	hdr["X-Forwarded-Proto"] = vals[3:4:4]
	if rfc7239 {
		elem := "for=" + forwardedNode(f.peer) + ";host=" + forwardedValue(in.Host) + ";proto=" + proto
		if prior := in.Header["Forwarded"]; f.trusted && len(prior) > 0 {
			elem = strings.Join(prior, ", ") + ", " + elem
		}
		hdr.Set("Forwarded", elem)
	}
}

// forwardedNode formats an address as an RFC 7239 node: IPv6 in quoted
// brackets, "unknown" when there is none.
func forwardedNode(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "unknown"
	case a.Is6():
		return `"[` + a.String() + `]"`
	}
	return a.String()
}

// forwardedValue quotes v unless it is an RFC 7230 token.
func forwardedValue(v string) string {
	for i := 0; i < len(v); i++ {
		if !httpguts.IsTokenRune(rune(v[i])) {
			return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
		}
	}
	return v
}
