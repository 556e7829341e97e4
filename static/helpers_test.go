package static

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"edge/config"
)

// staticConfig parses a one-route configuration through package config, so
// tests run with the real defaults. body is the YAML flow mapping of the
// static block, such as `{root: "/srv", spa: true}`.
func staticConfig(t testing.TB, route, body string) *config.Static {
	t.Helper()
	y := fmt.Sprintf("listen: {http: \"127.0.0.1:0\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: %s\n        static: %s\n", route, body)
	c, err := config.Parse(filepath.Join(t.TempDir(), "edge.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%v", err)
	}
	return c.Sites[0].Routes[0].Static
}

// writeFiles creates files (name → content) under dir, with parents.
func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeClock drives revalidation in tests; safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// site is a static handler on a real loopback HTTP server.
type site struct {
	h     *Handler
	srv   *httptest.Server
	clock *fakeClock
	ops   atomic.Int64 // filesystem operations seen by the test hook

	mu   sync.Mutex
	hook func(op, name string) error // extra behaviour; guarded by mu
}

// newSite serves a handler for route and the static block body. The
// handler's clock is fake and its filesystem operations are counted.
func newSite(t testing.TB, route, body string, fallback http.Handler) *site {
	t.Helper()
	cfg := staticConfig(t, route, body)
	h, err := New(route, cfg, fallback, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &site{h: h, clock: &fakeClock{t: h.epoch}}
	h.now = s.clock.now
	h.testHook = func(op, name string) error {
		s.ops.Add(1)
		s.mu.Lock()
		hook := s.hook
		s.mu.Unlock()
		if hook != nil {
			return hook(op, name)
		}
		return nil
	}
	s.srv = httptest.NewServer(h)
	t.Cleanup(s.srv.Close)
	return s
}

func (s *site) setHook(hook func(op, name string) error) {
	s.mu.Lock()
	s.hook = hook
	s.mu.Unlock()
}

// client sends requests exactly as written: no transparent gzip.
var client = &http.Client{
	Transport: &http.Transport{DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
	Timeout: 10 * time.Second,
}

// do sends method path with headers given as "Key: value" strings and
// returns the response with its body read.
func (s *site) do(t testing.TB, method, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range headers {
		k, v, _ := strings.Cut(kv, ":")
		req.Header.Add(k, strings.TrimSpace(v))
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func (s *site) get(t testing.TB, path string, headers ...string) (*http.Response, string) {
	t.Helper()
	return s.do(t, http.MethodGet, path, headers...)
}

// rawGet sends a request line with target exactly as given (no client
// cleaning or escaping) and returns the response and body.
func rawGet(t testing.TB, addr, target string) (*http.Response, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n", target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("GET %q: %v", target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func wantStatus(t testing.TB, what string, resp *http.Response, code int) {
	t.Helper()
	if resp.StatusCode != code {
		t.Errorf("%s: status %d, want %d", what, resp.StatusCode, code)
	}
}

func wantHeader(t testing.TB, what string, resp *http.Response, key, want string) {
	t.Helper()
	if got := resp.Header.Get(key); got != want {
		t.Errorf("%s: %s = %q, want %q", what, key, got, want)
	}
}
