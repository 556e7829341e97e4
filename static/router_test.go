package static

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"edge/config"
	"edge/server"
)

// TestBehindRouter runs static routes behind edge's router, built from a
// configuration file the way cmd/edge does, with a try_files fallback to
// another route of the site.
func TestBehindRouter(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"secret.txt":         "TOPSECRET",
		"www/static/app.js":  "app",
		"www/static/d/x.txt": "x",
		"build/logo.svg":     "<svg/>",
	})
	yaml := fmt.Sprintf(`
listen: {http: "127.0.0.1:0"}
admin: ""
sites:
  - routes:
      - path: /static/
        static: {root: %q, fallback: {route: /}}
      - path: /assets/
        static: {alias: %q}
      - path: /
        proxy: {upstreams: ["http://127.0.0.1:9"]}
`, filepath.Join(dir, "www"), filepath.Join(dir, "build"))
	cfg, err := config.Parse(filepath.Join(dir, "edge.yaml"), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend %s", r.URL.Path)
	})
	// What cmd/edge does: proxy routes get the proxy, static routes get
	// static.New with their fallback route's handler.
	build := func(s *config.Site, r *config.Route) (http.Handler, error) {
		if r.Static == nil {
			return backend, nil
		}
		var fallback http.Handler
		if f := r.Static.Fallback; f != nil {
			fallback = backend // the handler of route f.Route (or f.Proxy)
		}
		return New(r.Path, r.Static, fallback, nil)
	}
	rt, err := server.NewRouter(cfg, build, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	tests := []struct {
		target   string
		code     int
		body     string
		location string
	}{
		{"/static/app.js", 200, "app", ""},
		{"/assets/logo.svg", 200, "<svg/>", ""},
		{"/static", 301, "", "/static/"},
		{"/static/d?x=1", 301, "", "/static/d/?x=1"},
		{"/static/missing.js", 200, "backend /static/missing.js", ""},
		{"/static/../secret.txt", 200, "backend /secret.txt", ""}, // cleaned, then routed to /
		{"/static/%2e%2e/%2e%2e/secret.txt", 400, "", ""},
		{"/assets/..%2f..%2fsecret.txt", 400, "", ""},
		{"/assets/.env", 404, "", ""},
	}
	for _, tt := range tests {
		resp, body := rawGet(t, addr, tt.target)
		wantStatus(t, tt.target, resp, tt.code)
		if tt.body != "" && body != tt.body {
			t.Errorf("GET %s = %q, want %q", tt.target, body, tt.body)
		}
		if tt.location != "" {
			wantHeader(t, tt.target, resp, "Location", tt.location)
		}
		if strings.Contains(body, "TOPSECRET") {
			t.Errorf("GET %s served the secret", tt.target)
		}
	}
}
