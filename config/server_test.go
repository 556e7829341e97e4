package config

import (
	"testing"
	"time"
)

// TestServerRequestLimits checks the defaults of the body timeout and the
// per-connection request cap, that both can be set, that 0 turns the cap
// off, and that negative values are refused.
func TestServerRequestLimits(t *testing.T) {
	const site = "\nsites: [{ routes: [{ path: /, proxy: { upstreams: [\"http://127.0.0.1:1\"] } }] }]\n"
	for _, tc := range []struct {
		name    string
		server  string
		timeout time.Duration
		maxReqs int
		bad     string
	}{
		{name: "defaults", server: "", timeout: DefaultClientBodyTimeout, maxReqs: DefaultMaxRequestsPerConnection},
		{name: "set", server: "server: { client_body_timeout: 5s, max_requests_per_connection: 20 }", timeout: 5 * time.Second, maxReqs: 20},
		{name: "unlimited", server: "server: { max_requests_per_connection: 0 }", timeout: DefaultClientBodyTimeout, maxReqs: 0},
		{name: "negative", server: "server: { max_requests_per_connection: -1 }", bad: "server.max_requests_per_connection"},
		{name: "negative timeout", server: "server: { client_body_timeout: -1s }", bad: "server.client_body_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("edge.yaml", []byte("listen: { http: \"127.0.0.1:0\" }\n"+tc.server+site))
			if tc.bad != "" {
				ps := problemsOf(t, err)
				if len(ps) != 1 || ps[0].Path != tc.bad {
					t.Fatalf("problems = %v, want one at %s", ps, tc.bad)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Server.ClientBodyTimeout; got != tc.timeout {
				t.Errorf("client_body_timeout = %v, want %v", got, tc.timeout)
			}
			if got := c.Server.MaxRequestsPerConnection; got != tc.maxReqs {
				t.Errorf("max_requests_per_connection = %d, want %d", got, tc.maxReqs)
			}
		})
	}
}
