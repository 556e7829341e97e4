package server

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"edge/config"
	"edge/internal/httperr"
)

// loadConfig parses yaml with a www directory next to it.
func loadConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "www"), 0o755)
	p := filepath.Join(dir, "edge.yaml")
	os.WriteFile(p, []byte(yaml), 0o644)
	c, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// echoBuilder builds handlers that answer "<first host> <route path> <request path>"
// and, on POST, the body size they could read.
func echoBuilder(site *config.Site, r *config.Route) (http.Handler, error) {
	name := site.Name()
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodPost {
			n, err := io.Copy(io.Discard, req.Body)
			if mb := (*http.MaxBytesError)(nil); errors.As(err, &mb) {
				httperr.Error(w, http.StatusRequestEntityTooLarge)
				return
			}
			fmt.Fprintf(w, "read %d", n)
			return
		}
		fmt.Fprintf(w, "%s %s %s", name, r.Path, req.URL.Path)
	}), nil
}

const routingYAML = `
listen: { http: "127.0.0.1:0" }
admin: ""
sites:
  - hosts: [dash.example.test, "*.apps.example.test"]
    routes:
      - { path: /, static: { root: www } }
      - { path: /static/, static: { root: www } }
      - { path: /static/img/, static: { root: www } }
      - { path: /api, static: { root: www } }
      - { path: /upload/, max_body_size: 1KiB, static: { root: www } }
  - hosts: ["*.example.test"]
    routes:
      - { path: /, static: { root: www } }
  - routes:
      - { path: /, static: { root: www } }
`

func newRoutingServer(t *testing.T) *httptest.Server {
	t.Helper()
	rt, err := NewRouter(loadConfig(t, routingYAML), echoBuilder, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	return srv
}

// rawRequest sends a request line as written, so that paths reach the
// server without client-side cleaning.
func rawRequest(t *testing.T, srv *httptest.Server, method, target, host string) (int, http.Header, string) {
	t.Helper()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, target, host)
	resp, err := http.ReadResponse(bufioReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestRouting(t *testing.T) {
	srv := newRoutingServer(t)
	for _, tc := range []struct {
		host, target string
		code         int
		body         string // prefix of the body, or Location for redirects
	}{
		{"dash.example.test", "/", 200, "dash.example.test / /"},
		{"DASH.Example.Test:8080", "/x", 200, "dash.example.test / /x"},
		{"dash.example.test.", "/x", 200, "dash.example.test / /x"},
		{"dash.example.test", "/static/app.js", 200, "dash.example.test /static/ /static/app.js"},
		{"dash.example.test", "/static/img/a.png", 200, "dash.example.test /static/img/ /static/img/a.png"},
		{"dash.example.test", "/staticx", 200, "dash.example.test / /staticx"},
		{"dash.example.test", "/static", 301, "/static/"},
		{"dash.example.test", "/static?v=1", 301, "/static/?v=1"},
		{"dash.example.test", "/static/img", 301, "/static/img/"},
		{"dash.example.test", "/api", 200, "dash.example.test /api /api"},
		{"dash.example.test", "/api/v1", 200, "dash.example.test /api /api/v1"},
		{"dash.example.test", "/apix", 200, "dash.example.test / /apix"},
		// Dot segments are resolved before routing, as nginx does.
		{"dash.example.test", "/static/../api/v1", 200, "dash.example.test /api /api/v1"},
		{"dash.example.test", "/static//img/./a.png", 200, "dash.example.test /static/img/ /static/img/a.png"},
		{"dash.example.test", "/../etc/passwd", 400, "400 Bad Request"},
		{"dash.example.test", "/static/%2e%2e/%2e%2e/etc/passwd", 400, "400 Bad Request"},
		{"dash.example.test", "/a%00b", 400, "400 Bad Request"},
		// A backslash is a byte of a segment, as in nginx on Unix.
		{"dash.example.test", "/static/%5C..%5Capi", 200, "dash.example.test /static/ /static/\\..\\api"},
		{"x.apps.example.test", "/", 200, "dash.example.test / /"},
		{"a.b.apps.example.test", "/", 200, "dash.example.test / /"},
		{"other.example.test", "/", 200, "*.example.test / /"},
		{"example.test", "/", 200, "default / /"},
		{"127.0.0.1", "/", 200, "default / /"},
		{"[::1]:80", "/", 200, "default / /"},
	} {
		t.Run(tc.host+tc.target, func(t *testing.T) {
			code, h, body := rawRequest(t, srv, "GET", tc.target, tc.host)
			if code != tc.code {
				t.Fatalf("GET %s Host %s = %d %q, want %d", tc.target, tc.host, code, body, tc.code)
			}
			got := body
			if code == 301 {
				got = h.Get("Location")
			}
			if !strings.HasPrefix(got, tc.body) {
				t.Errorf("GET %s Host %s: got %q, want %q", tc.target, tc.host, got, tc.body)
			}
		})
	}
}

func TestNoDefaultSite(t *testing.T) {
	cfg := loadConfig(t, `
listen: { http: "127.0.0.1:0" }
sites:
  - hosts: [only.example.test]
    routes: [{ path: /app/, static: { root: www } }]
`)
	rt, err := NewRouter(cfg, echoBuilder, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	defer srv.Close()
	if code, _, body := rawRequest(t, srv, "GET", "/app/", "unknown.example.test"); code != 404 || body != "404 Not Found\n" {
		t.Errorf("unknown host: %d %q, want a plain 404", code, body)
	}
	if code, h, _ := rawRequest(t, srv, "GET", "/nothing", "only.example.test"); code != 404 || h.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("no route: %d %v, want a plain-text 404", code, h)
	}
}

func TestMaxBodySize(t *testing.T) {
	srv := newRoutingServer(t)
	post := func(path string, body io.Reader, size int64) (int, string) {
		req, _ := http.NewRequest("POST", srv.URL+path, body)
		req.Host = "dash.example.test"
		req.ContentLength = size
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/upload/", strings.NewReader(strings.Repeat("x", 1024)), 1024); code != 200 || body != "read 1024" {
		t.Errorf("1 KiB upload: %d %q, want 200", code, body)
	}
	if code, _ := post("/upload/", strings.NewReader(strings.Repeat("x", 1025)), 1025); code != 413 {
		t.Errorf("declared 1025 bytes: %d, want 413 before reading", code)
	}
	// Chunked (no Content-Length): the limit trips while reading.
	if code, _ := post("/upload/", io.MultiReader(strings.NewReader(strings.Repeat("x", 4096))), -1); code != 413 {
		t.Errorf("chunked 4 KiB: %d, want 413", code)
	}
	// The default route limit is 1 MiB.
	if code, _ := post("/", strings.NewReader(strings.Repeat("x", 2<<20)), 2<<20); code != 413 {
		t.Errorf("2 MiB to default route: %d, want 413", code)
	}
}

func TestHeaderOps(t *testing.T) {
	cfg := loadConfig(t, `
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        static: { root: www }
        headers:
          request: { set: { X-From-Edge: "1" }, remove: [X-Secret] }
          response: { set: { X-Frame-Options: DENY }, add: { X-Extra: a }, remove: [Server] }
`)
	rt, err := NewRouter(cfg, func(*config.Site, *config.Route) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Server", "backend/1.0")
			fmt.Fprintf(w, "from=%s secret=%q", r.Header.Get("X-From-Edge"), r.Header.Get("X-Secret"))
		}), nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(rt)
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	req.Header.Set("X-Secret", "s3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != `from=1 secret=""` {
		t.Errorf("handler saw %q, want request headers edited", b)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("X-Extra") != "a" || resp.Header.Get("Server") != "" {
		t.Errorf("response headers = %v, want edited", resp.Header)
	}
}

func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/../x", "//a//b/", "/a/./b/.", "/%2e%2e", "/a\\..\\b", "/a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if p != "" && isClean(p) {
			// The fast path must agree with path.Clean.
			ref := path.Clean(p)
			if strings.HasSuffix(p, "/") && ref != "/" {
				ref += "/"
			}
			if ref != p {
				t.Fatalf("isClean(%q) but path.Clean gives %q", p, ref)
			}
		}
		c, ok := cleanPath(p)
		if !ok {
			return
		}
		if !strings.HasPrefix(c, "/") || strings.Contains(c, "//") || strings.Contains(c, "\x00") {
			t.Fatalf("cleanPath(%q) = %q: not clean", p, c)
		}
		for _, seg := range strings.Split(c, "/") {
			if seg == ".." || seg == "." {
				t.Fatalf("cleanPath(%q) = %q keeps a dot segment", p, c)
			}
		}
		if again, _ := cleanPath(c); again != c {
			t.Fatalf("cleanPath not idempotent: %q -> %q -> %q", p, c, again)
		}
	})
}

// FuzzSiteMatch checks the router's Host -> site choice, which is
// config.SiteIndex: a Host matches as its canonical form (config.HostName)
// does, that form is a fixed point, and the matches are the documented
// ones (exact name, a wildcard with at least one label before its suffix,
// an IP literal in any spelling).
func FuzzSiteMatch(f *testing.F) {
	for _, s := range []string{"dash.example.test", "X.APPS.example.test:443", "[::1]:80", "", ".", "*.example.test",
		"example.test.", ".apps.example.test", "a.b.apps.example.test.:8443", "[0:0::1]", "::ffff:127.0.0.2",
		"xn--bcher-kva.apps.example.test", "BÜCHER.apps.example.test", "[dash.example.test]:80", "dash.example.test..", "a:b:c"} {
		f.Add(s)
	}
	cfg, err := config.Parse("fuzz.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - hosts: [dash.example.test, "*.apps.example.test", "::1", 127.0.0.2]
    routes: [{ path: /, proxy: { upstreams: ["http://127.0.0.1:1"] } }]
`))
	if err != nil {
		f.Fatal(err)
	}
	rt, err := NewRouter(cfg, echoBuilder, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host string) {
		s := rt.site(host)
		h := config.HostName(host)
		if again := config.HostName(h); again != h {
			t.Fatalf("HostName not idempotent: %q -> %q -> %q", host, h, again)
		}
		if rt.site(h) != s {
			t.Fatalf("site(%q) differs from site of its canonical form %q", host, h)
		}
		want := h == "dash.example.test" || h == "::1" || h == "127.0.0.2" ||
			(strings.HasSuffix(h, ".apps.example.test") && len(h) > len(".apps.example.test"))
		if (s != nil) != want {
			t.Fatalf("site(%q) (canonical %q) matched=%v, want %v", host, h, s != nil, want)
		}
	})
}
