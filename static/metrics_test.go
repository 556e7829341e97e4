package static

import (
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestMetrics(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.txt": "aaaa"})
	cfg := staticConfig(t, "/s/", fmt.Sprintf("{alias: %q}", dir))
	reg := prometheus.NewRegistry()
	h, err := New("/s/", cfg, nil, nil, WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	// A reload builds a second handler on the same registry.
	if _, err := New("/s/", cfg, nil, nil, WithRegisterer(reg)); err != nil {
		t.Fatalf("second handler: %v", err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	for range 3 {
		resp, err := client.Get(srv.URL + "/s/a.txt")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != "/s/" {
				t.Errorf("%s: labels %v", mf.GetName(), m.GetLabel())
			}
			got[mf.GetName()] = m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	for name, want := range map[string]float64{
		"edge_static_cache_hits_total":   2,
		"edge_static_cache_misses_total": 1,
		"edge_static_cache_entries":      1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if got["edge_static_cache_bytes"] < 4 {
		t.Errorf("edge_static_cache_bytes = %v, want at least the file", got["edge_static_cache_bytes"])
	}
}
