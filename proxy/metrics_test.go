package proxy

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsSeparateSitesWithSameRoute: two sites with the same route
// path, even proxying to the same server, get separate series in every
// proxy metric ({site, route}, as the server's and the static handler's),
// so that one site's traffic and health never show as the other's.
func TestMetricsSeparateSitesWithSameRoute(t *testing.T) {
	b := newNamed(t, "app")
	dead := "http://" + deadAddr(t)
	reg := prometheus.NewRegistry()
	sites := map[string]int{"a.example": 2, "b.example": 3} // requests per site
	for site, n := range sites {
		cfg := proxyConfig(t, "upstreams: ["+b.URL+", "+dead+"]\nbalance: first")
		h := newHandler(t, cfg, Options{Registerer: reg, Site: site, Route: "/api/"})
		base := front(t, h, nil)
		for range n {
			if code, _, _ := get(t, http.DefaultClient, base+"/api/x", nil); code != http.StatusOK {
				t.Fatalf("%s: status %d, want 200", site, code)
			}
		}
		if site == "a.example" {
			h.upstreams.fail(h.upstreams.list[1]) // marks a.example's dead server down
		}
	}
	for site, n := range sites {
		if v := metricValue(t, reg, "edge_proxy_requests_total", site, "/api/", b.URL, "200"); v != float64(n) {
			t.Errorf("edge_proxy_requests_total{site=%q,route=/api/} = %v, want %d", site, v, n)
		}
		if v := upGauge(t, reg, site, "/api/", b.URL); v != 1 {
			t.Errorf("edge_proxy_upstream_up{site=%q,route=/api/,upstream=live} = %v, want 1", site, v)
		}
		want := 1.0 // never tried: balance first, and the live server answers
		if site == "a.example" {
			want = 0
		}
		if v := upGauge(t, reg, site, "/api/", dead); v != want {
			t.Errorf("edge_proxy_upstream_up{site=%q,route=/api/,upstream=dead} = %v, want %v", site, v, want)
		}
	}
}
