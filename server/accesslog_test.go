package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

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

// TestEveryRequestLogged: the requests the router answers itself reach
// the access log and the metrics of the site they fell to, as nginx logs
// every request: a 404 for a path no route has (route "none"), a 400 for
// a refused path, the 301 to a route's trailing-slash path and a 413
// (under that route), a host no site has (the default site's log).
// Without a default site, a host no site has is counted under site
// "default".
func TestEveryRequestLogged(t *testing.T) {
	m := NewMetrics(nil)
	t.Cleanup(m.Close)
	rt, lines := logRouter(t, `
listen: { http: "127.0.0.1:0" }
admin: ""
sites:
  - hosts: [a.example.test]
    access_log: { file: "{log}" }
    routes:
      - { path: /static/, static: { root: www } }
      - { path: /upload/, max_body_size: 4, static: { root: www } }
  - access_log: { file: "{log}" }
    routes: [{ path: /only/, static: { root: www } }]
`, echoBuilder, m)
	for _, tc := range []struct {
		method, target string
		code           int
		site, route    string
		line           string
	}{
		{"GET", "http://a.example.test/wp-login.php", 404, "a.example.test", UnmatchedRoute, `"GET /wp-login.php HTTP/1.1" 404 `},
		{"GET", "http://a.example.test/../x", 400, "a.example.test", UnmatchedRoute, `"GET /../x HTTP/1.1" 400 `},
		{"GET", "http://a.example.test/static?v=1", 301, "a.example.test", "/static/", `"GET /static?v=1 HTTP/1.1" 301 `},
		{"POST", "http://a.example.test/upload/", 413, "a.example.test", "/upload/", `"POST /upload/ HTTP/1.1" 413 `},
		{"GET", "http://scanner.test/.env", 404, "default", UnmatchedRoute, `"GET /.env HTTP/1.1" 404 `},
		{"GET", "http://a.example.test/static/x", 200, "a.example.test", "/static/", `"GET /static/x HTTP/1.1" 200 `},
	} {
		w := httptest.NewRecorder()
		req := httptest.NewRequest(tc.method, tc.target, strings.NewReader("0123456789"))
		if tc.method == "GET" {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		if strings.Contains(tc.target, "/../") {
			req.URL.Path = "/../x" // httptest cleans nothing, but be explicit
		}
		before := value(m.requests.WithLabelValues(tc.site, tc.route, strconv.Itoa(tc.code)))
		rt.ServeHTTP(w, req)
		if w.Code != tc.code {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.target, w.Code, tc.code)
		}
		if n := value(m.requests.WithLabelValues(tc.site, tc.route, strconv.Itoa(tc.code))) - before; n != 1 {
			t.Errorf("%s %s: edge_http_requests_total{site=%q,route=%q,code=%d} rose by %v, want 1", tc.method, tc.target, tc.site, tc.route, tc.code, n)
		}
		got := lines()
		if last := got[len(got)-1]; !strings.Contains(last, tc.line) {
			t.Errorf("%s %s: last access log line %q, want it to hold %q", tc.method, tc.target, last, tc.line)
		}
	}

	// No default site: the request is counted, under site "default".
	rt, _ = logRouter(t, `
listen: { http: "127.0.0.1:0" }
admin: ""
sites:
  - hosts: [a.example.test]
    routes: [{ path: /, static: { root: www } }]
`, echoBuilder, m)
	before := value(m.requests.WithLabelValues("default", UnmatchedRoute, "404"))
	w := httptest.NewRecorder()
	rt.ServeHTTP(w, httptest.NewRequest("GET", "http://unknown.test/", nil))
	if w.Code != 404 {
		t.Errorf("unknown host without a default site = %d, want 404", w.Code)
	}
	if n := value(m.requests.WithLabelValues("default", UnmatchedRoute, "404")) - before; n != 1 {
		t.Errorf("unknown host without a default site: counted %v times, want 1", n)
	}
}

// value is the current value of a counter.
func value(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}

// TestRouterCloseReleasesLogs: a router holds its access-log files until
// Close and its last request in flight; a file no router holds any more
// (a path a reload dropped, the files of a reload that failed) is closed,
// one another router still uses stays open.
func TestRouterCloseReleasesLogs(t *testing.T) {
	m := NewMetrics(nil)
	defer m.Close()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "www"), 0o755)
	path := func(name string) string { return filepath.Join(dir, name+".log") }
	cfg := func(logs ...string) *config.Config {
		y := "listen: { http: \"127.0.0.1:0\" }\nadmin: \"\"\nsites:\n"
		for _, l := range logs {
			y += fmt.Sprintf("  - hosts: [%s.test]\n    access_log: { file: %s }\n    routes: [{ path: /, static: { root: www } }]\n", l, path(l))
		}
		c, err := config.Parse(filepath.Join(dir, "edge.yaml"), []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	isOpen := func(name string) bool {
		m.logs.mu.Lock()
		defer m.logs.mu.Unlock()
		_, ok := m.logs.files[path(name)]
		return ok
	}
	entered, release := make(chan struct{}), make(chan struct{})
	build := func(*config.Site, *config.Route) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/block" {
				close(entered)
				<-release
			}
		}), nil
	}
	r1, err := NewRouter(cfg("a", "shared"), build, m)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := NewRouter(cfg("shared", "b"), build, m)
	if err != nil {
		t.Fatal(err)
	}
	// A reload whose router failed to build releases what it opened.
	fail := 0
	_, err = NewRouter(cfg("c", "shared", "d"), func(s *config.Site, r *config.Route) (http.Handler, error) {
		if fail++; fail == 3 {
			return nil, fmt.Errorf("no")
		}
		return build(s, r)
	}, m)
	if err == nil {
		t.Fatal("NewRouter with a failing builder succeeded")
	}
	if isOpen("c") || !isOpen("shared") {
		t.Errorf("after a failed NewRouter: c open %v (want false), shared open %v (want true)", isOpen("c"), isOpen("shared"))
	}

	// r1 retired while a request is in flight through it.
	served := make(chan struct{})
	go func() {
		defer close(served)
		r1.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://a.test/block", nil))
	}()
	<-entered
	r1.Close()
	if !isOpen("a") {
		t.Fatal("a.log closed while a request through the retired router is in flight")
	}
	close(release)
	<-served
	if isOpen("a") {
		t.Error("a.log still open after the retired router's last request")
	}
	if b, _ := os.ReadFile(path("a")); !strings.Contains(string(b), "GET /block") {
		t.Errorf("a.log = %q, want the in-flight request's line", b)
	}
	r1.Close() // idempotent
	if !isOpen("shared") || !isOpen("b") {
		t.Error("files of the serving router closed")
	}
	r2.Close()
	if isOpen("shared") || isOpen("b") {
		t.Error("files open after every router closed")
	}
}
