package static

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// gather returns the value of every series on reg by "name{site,route}".
func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if len(labels) != 2 || labels["site"] == "" || labels["route"] == "" {
				t.Errorf("%s: labels %v, want site and route", mf.GetName(), m.GetLabel())
			}
			key := fmt.Sprintf("%s{%s,%s}", mf.GetName(), labels["site"], labels["route"])
			got[key] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return got
}

func getN(t *testing.T, url string, n int) {
	t.Helper()
	for range n {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
}

func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.txt": "aaaa"})
	cfg := staticConfig(t, "/s/", fmt.Sprintf("{alias: %q}", dir))
	reg := prometheus.NewRegistry()
	h, err := New("/s/", cfg, nil, nil, WithRegisterer(reg, "default"))
	if err != nil {
		t.Fatal(err)
	}
	// A reload builds a second handler on the same registry.
	if _, err := New("/s/", cfg, nil, nil, WithRegisterer(reg, "default")); err != nil {
		t.Fatalf("second handler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	getN(t, srv.URL+"/s/a.txt", 3)
	got := gather(t, reg)
	for name, want := range map[string]float64{
		"edge_static_cache_hits_total{default,/s/}":   2,
		"edge_static_cache_misses_total{default,/s/}": 1,
		"edge_static_cache_entries{default,/s/}":      1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if b := got["edge_static_cache_bytes{default,/s/}"]; b < 4 {
		t.Errorf("edge_static_cache_bytes = %v, want at least the file", b)
	}
}

// TestMetricsPerSite: two sites' /static/ routes used to share one series
// per metric (labelled by route path only), so each overwrote the other's
// cache gauges.
func TestMetricsPerSite(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a/static/1.txt": "one",
		"b/static/1.txt": "one",
		"b/static/2.txt": "two",
	})
	reg := prometheus.NewRegistry()
	serve := func(site, root string) string {
		cfg := staticConfig(t, "/static/", fmt.Sprintf("{root: %q}", root))
		h, err := New("/static/", cfg, nil, nil, WithRegisterer(reg, site))
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv.URL
	}
	a := serve("a.example", dir+"/a")
	b := serve("b.example", dir+"/b")
	getN(t, b+"/static/1.txt", 1)
	getN(t, b+"/static/2.txt", 1)
	getN(t, a+"/static/1.txt", 2) // last: would overwrite b's gauges
	got := gather(t, reg)
	for name, want := range map[string]float64{
		"edge_static_cache_entries{a.example,/static/}":      1,
		"edge_static_cache_entries{b.example,/static/}":      2,
		"edge_static_cache_hits_total{a.example,/static/}":   1,
		"edge_static_cache_hits_total{b.example,/static/}":   0,
		"edge_static_cache_misses_total{b.example,/static/}": 2,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
}
