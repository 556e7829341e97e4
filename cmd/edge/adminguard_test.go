package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestAdminGuardHosts: which Host and Origin values name the admin
// listener, for a loopback bind and for a wildcard bind reached on a LAN
// address (a scraper on another machine uses the IP).
func TestAdminGuardHosts(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	cases := []struct {
		name, addr, local, method, host, origin string
		want                                    int
	}{
		{"own address", "127.0.0.1:9180", "127.0.0.1:9180", "GET", "127.0.0.1:9180", "", 200},
		{"localhost no port", "127.0.0.1:9180", "127.0.0.1:9180", "GET", "localhost", "", 200},
		{"ipv6 loopback", "[::1]:9180", "[::1]:9180", "GET", "[::1]:9180", "", 200},
		{"no Host (HTTP/1.0)", "127.0.0.1:9180", "127.0.0.1:9180", "GET", "", "", 200},
		{"rebinding", "127.0.0.1:9180", "127.0.0.1:9180", "GET", "evil.example:9180", "", 421},
		{"wrong port", "127.0.0.1:9180", "127.0.0.1:9180", "GET", "localhost:80", "", 421},
		{"configured name", "admin.internal:9180", "10.0.0.5:9180", "GET", "admin.internal:9180", "", 200},
		{"wildcard, LAN IP", ":9180", "10.0.0.5:9180", "GET", "10.0.0.5:9180", "", 200},
		{"wildcard, other IP", ":9180", "10.0.0.5:9180", "GET", "10.0.0.6:9180", "", 421},
		{"wildcard, a name", "0.0.0.0:9180", "10.0.0.5:9180", "GET", "edge.example:9180", "", 421},
		{"port 0 bind", "127.0.0.1:0", "127.0.0.1:41234", "GET", "127.0.0.1:41234", "", 200},
		{"same origin post", "127.0.0.1:9180", "127.0.0.1:9180", "POST", "127.0.0.1:9180", "http://localhost:9180", 200},
		{"cross origin post", "127.0.0.1:9180", "127.0.0.1:9180", "POST", "127.0.0.1:9180", "http://evil.example", 403},
		{"cross origin delete", "127.0.0.1:9180", "127.0.0.1:9180", "DELETE", "127.0.0.1:9180", "https://evil.example", 403},
		{"cross origin get", "127.0.0.1:9180", "127.0.0.1:9180", "GET", "127.0.0.1:9180", "http://evil.example", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := newAdminGuard(tc.addr, "", slog.New(slog.DiscardHandler), ok)
			r := httptest.NewRequest(tc.method, "/hub/stats", nil)
			r.Host = tc.host
			if tc.origin != "" {
				r.Header.Set("Origin", tc.origin)
			}
			local, _ := net.ResolveTCPAddr("tcp", tc.local)
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
			w := httptest.NewRecorder()
			g.ServeHTTP(w, r)
			if w.Code != tc.want {
				t.Errorf("%s Host %q Origin %q on %s = %d, want %d", tc.method, tc.host, tc.origin, tc.addr, w.Code, tc.want)
			}
		})
	}
}
