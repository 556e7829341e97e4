package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"edge/config"
)

// BenchmarkRouter measures what routing, limits and metrics add to a
// request, with a handler that writes 1 KiB.
func BenchmarkRouter(b *testing.B) {
	cfg, err := config.Parse("bench.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - hosts: [a.example.test, "*.b.example.test"]
    routes:
      - { path: /, proxy: { upstreams: ["http://127.0.0.1:1"] } }
      - { path: /static/, proxy: { upstreams: ["http://127.0.0.1:1"] } }
      - { path: /socket/, proxy: { upstreams: ["http://127.0.0.1:1"] } }
`))
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 1024)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	build := func(*config.Site, *config.Route) (http.Handler, error) { return h, nil }
	for _, tc := range []struct {
		name string
		m    *Metrics
	}{{"bare", nil}, {"metrics", NewMetrics(prometheus.NewRegistry())}} {
		rt, err := NewRouter(cfg, build, tc.m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "http://a.example.test/static/app.js", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				w.Body.Reset()
				rt.ServeHTTP(w, req)
			}
		})
	}
	b.Run("handler-only", func(b *testing.B) {
		req := httptest.NewRequest("GET", "http://a.example.test/static/app.js", nil)
		w := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			w.Body.Reset()
			h.ServeHTTP(w, req)
		}
	})
}
