package proxy

import (
	"net/http"
	"net/netip"
	"strings"

	"golang.org/x/net/http/httpguts"

	"edge/internal/clientip"
)

// setForwarding writes the forwarding headers onto out from the request's
// one client identity (clientip, resolved by the server's router): from a
// trusted proxy the incoming X-Forwarded-*, Forwarded are appended to, from
// anyone else they are replaced, so that a client cannot spoof its address.
// ReverseProxy has already removed Forwarded and X-Forwarded-* from out
// (Rewrite semantics); X-Real-IP is removed here. They are set after
// ReverseProxy removed the headers named in the client's Connection list,
// so a client cannot strip them that way.
func setForwarding(f clientip.Info, in, out *http.Request, rfc7239 bool) {
	proto := "http"
	if in.TLS != nil {
		proto = "https"
	}
	hdr := out.Header
	delete(hdr, "X-Real-Ip")
	peer := ""
	if f.Peer.IsValid() {
		peer = f.Peer.String()
	}
	xff, xfh, xfp := peer, in.Host, proto
	if f.Trusted {
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
		if f.Client != f.Peer {
			client = f.Client.String()
		}
		vals[0], vals[1] = xff, client
		hdr["X-Forwarded-For"] = vals[0:1:1]
		hdr["X-Real-Ip"] = vals[1:2:2]
	}
	vals[2], vals[3] = xfh, xfp
	hdr["X-Forwarded-Host"] = vals[2:3:3]
	hdr["X-Forwarded-Proto"] = vals[3:4:4]
	if rfc7239 {
		elem := "for=" + forwardedNode(f.Peer) + ";host=" + forwardedValue(in.Host) + ";proto=" + proto
		if prior := in.Header["Forwarded"]; f.Trusted && len(prior) > 0 {
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
