package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"edge/config"
	"edge/internal/httperr"
)

// logRouter builds a Router for yaml, where {log} is an access log file in
// a temporary directory, with handlers from build; it returns the router
// and a function that reads the log's lines.
func logRouter(t *testing.T, yaml string, build Builder, m *Metrics) (*Router, func() []string) {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "www"), 0o755)
	file := filepath.Join(dir, "access.log")
	cfg, err := config.Parse(filepath.Join(dir, "edge.yaml"), []byte(strings.ReplaceAll(yaml, "{log}", file)))
	if err != nil {
		t.Fatal(err)
	}
	if m == nil {
		m = NewMetrics(nil)
		t.Cleanup(m.Close)
	}
	rt, err := NewRouter(cfg, build, m)
	if err != nil {
		t.Fatal(err)
	}
	return rt, func() []string {
		b, _ := os.ReadFile(file)
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
}

// jsonLine decodes one line of the json access log.
func jsonLine(t *testing.T, line string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatalf("access log line %q: %v", line, err)
	}
	return v
}

// TestAccessLogUpstream: a handler that names the upstream that served
// (httperr.NoteUpstream, as the proxy does) gets it into the json access
// log, also through a route's response header edits; a response header
// named X-Edge-Upstream does not.
func TestAccessLogUpstream(t *testing.T) {
	rt, lines := logRouter(t, `
listen: { http: "127.0.0.1:0" }
admin: ""
sites:
  - access_log: { file: "{log}", format: json }
    routes:
      - { path: /app/, proxy: { upstreams: ["http://127.0.0.1:1"] } }
      - path: /edited/
        headers: { response: { set: { X-Frame-Options: DENY } } }
        proxy: { upstreams: ["http://127.0.0.1:1"] }
      - { path: /header/, proxy: { upstreams: ["http://127.0.0.1:1"] } }
`, func(_ *config.Site, r *config.Route) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if r.Path == "/header/" {
				w.Header().Set("X-Edge-Upstream", "10.9.9.9:80")
			} else {
				httperr.NoteUpstream(w, "10.0.0.1:9000")
				httperr.NoteUpstream(w, "10.0.0.2:9000") // a retry moved on
			}
			w.Write([]byte("ok"))
		}), nil
	}, nil)
	for _, p := range []string{"/app/x", "/edited/x", "/header/x"} {
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, httptest.NewRequest("GET", "http://x"+p, nil))
		if w.Code != 200 {
			t.Fatalf("GET %s = %d", p, w.Code)
		}
	}
	got := lines()
	if len(got) != 3 {
		t.Fatalf("access log %q, want 3 lines", got)
	}
	for i, want := range []any{"10.0.0.2:9000", "10.0.0.2:9000", nil} {
		if up := jsonLine(t, got[i])["upstream"]; up != want {
			t.Errorf("line %q: upstream %v, want %v", got[i], up, want)
		}
	}
}
