package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"edge/config"
)

// TestProxyMetricsLabelledBySiteAndRoute: proxy routes are labelled
// {site, route} as the server labels them: two sites with the same route
// path (and the default site) get separate series, with the same label
// values as the server's edge_http_requests_total for the same requests.
func TestProxyMetricsLabelledBySiteAndRoute(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok"))
	}))
	defer backend.Close()
	route := fmt.Sprintf("    routes: [{path: /api/, proxy: {upstreams: [%q]}}]\n", backend.URL)
	yaml := "listen: {http: \"127.0.0.1:0\", https: \"\"}\nadmin: \"\"\nsites:\n" +
		"  - hosts: [a.test]\n" + route +
		"  - hosts: [b.test, www.b.test]\n" + route +
		"  - hosts: []\n" + route
	cfg, err := config.Parse("edge.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	a := newApp("edge.yaml", slog.New(slog.DiscardHandler), new(slog.LevelVar))
	gen, specs, err := a.build(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer gen.retire()
	requests := map[string]int{"a.test": 1, "www.b.test": 2, "other.test": 3}
	for host, n := range requests {
		for range n {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "http://"+host+"/api/x", nil)
			specs[0].Handler.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("GET %s/api/x: %d, want 200", host, rec.Code)
			}
		}
	}
	want := map[[2]string]float64{{"a.test", "/api/"}: 1, {"b.test", "/api/"}: 2, {"default", "/api/"}: 3}
	for _, name := range []string{"edge_proxy_requests_total", "edge_http_requests_total"} {
		got := map[[2]string]float64{}
		mfs, err := a.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				got[[2]string{labels["site"], labels["route"]}] += m.GetCounter().GetValue()
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s by {site, route} = %v, want %v", name, got, want)
		}
	}
}
