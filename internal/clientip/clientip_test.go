package clientip

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestResolve(t *testing.T) {
	lb, _ := ParsePrefix("10.0.0.0/8")
	one, _ := ParsePrefix("192.0.2.9")
	res := NewResolver([]netip.Prefix{lb, one})
	cases := []struct {
		name, remote string
		hdr          http.Header
		want         string
		trusted      bool
	}{
		{"untrusted peer keeps its address", "203.0.113.5:4000", http.Header{"X-Forwarded-For": {"1.2.3.4"}}, "203.0.113.5", false},
		{"trusted peer, one hop", "10.1.1.1:4000", http.Header{"X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.7", true},
		{"right-most untrusted hop wins over a spoofed left one", "10.1.1.1:4000", http.Header{"X-Forwarded-For": {"6.6.6.6, 198.51.100.7, 10.2.2.2"}}, "198.51.100.7", true},
		{"several header lines", "10.1.1.1:4000", http.Header{"X-Forwarded-For": {"6.6.6.6", "198.51.100.7"}}, "198.51.100.7", true},
		{"garbage stops the walk", "10.1.1.1:4000", http.Header{"X-Forwarded-For": {"junk, 10.3.3.3"}}, "10.3.3.3", true},
		{"Forwarded for=", "10.1.1.1:4000", http.Header{"Forwarded": {`for="[2001:db8::1]:80";proto=https, for=10.4.4.4`}}, "2001:db8::1", true},
		{"X-Real-IP alone", "192.0.2.9:1", http.Header{"X-Real-Ip": {"198.51.100.8"}}, "198.51.100.8", true},
		{"no header: the peer", "10.1.1.1:4000", http.Header{}, "10.1.1.1", true},
		{"mapped v4 peer", "[::ffff:10.1.1.1]:4000", http.Header{"X-Forwarded-For": {"198.51.100.7"}}, "198.51.100.7", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: c.remote, Header: c.hdr}
			r = r.WithContext(t.Context())
			got := InfoOf(res.Resolve(r))
			if got.Client.String() != c.want || got.Trusted != c.trusted {
				t.Errorf("InfoOf(%s, %v) = %v trusted=%v, want %s trusted=%v", c.remote, c.hdr, got.Client, got.Trusted, c.want, c.trusted)
			}
		})
	}
}

func TestResolveWithoutTrustDoesNotAllocate(t *testing.T) {
	r := &http.Request{RemoteAddr: "203.0.113.5:4000", Header: http.Header{"X-Forwarded-For": {"1.2.3.4"}}}
	var res *Resolver
	if n := testing.AllocsPerRun(100, func() { _ = res.Resolve(r) }); n != 0 {
		t.Errorf("Resolve allocated %v times", n)
	}
	if got := String(&http.Request{RemoteAddr: "@"}); got != "@" {
		t.Errorf("String(unix peer) = %q, want @", got)
	}
}
