package static

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzPath calls the handler directly, as if the router had been bypassed,
// with arbitrary decoded paths. Nothing outside the root may be served,
// nothing may panic, and no path may cause a 500. Run with
// go test -fuzz FuzzPath ./static/.
func FuzzPath(f *testing.F) {
	for _, p := range []string{
		"/static/app.js", "/static/", "/static", "/", "", "static",
		"/static/../secret.txt", "/static/..", "/static/%2e%2e/secret.txt",
		"/static/..\\secret.txt", "/static/app.js\x00.png", "/static//app.js",
		"/static/out", "/static/outdir/secret.txt", "/static/abs",
		"/static/.env", "/.well-known/x", "/static/in", "/static/sub/",
		"/static/loop/loop/loop/app.js", "//secret.txt", "/static/./app.js",
		"/static/app.js/", "/static/sub", "/static/missing", "/static/sub/../../secret.txt",
	} {
		f.Add(p)
	}
	dir := f.TempDir()
	const secret = "TOPSECRET"
	inside := map[string]string{
		"www/static/app.js":     "inside app",
		"www/static/sub/x.txt":  "inside x",
		"www/static/index.html": "inside index",
	}
	writeFiles(f, dir, inside)
	writeFiles(f, dir, map[string]string{"secret.txt": secret, "www/static/.env": secret})
	www := filepath.Join(dir, "www")
	for link, target := range map[string]string{
		"static/out":    "../../secret.txt",
		"static/outdir": "../..",
		"static/abs":    filepath.Join(dir, "secret.txt"),
		"static/in":     "app.js",
		"static/loop":   ".",
	} {
		if err := os.Symlink(target, filepath.Join(www, link)); err != nil {
			f.Fatal(err)
		}
	}
	var handlers []*Handler
	for _, body := range []string{
		fmt.Sprintf("{root: %q, browse: true}", www),
		fmt.Sprintf("{alias: %q, spa: true, compress: {}}", filepath.Join(www, "static")),
	} {
		h, err := New("/static/", staticConfig(f, "/static/", body), nil, nil)
		if err != nil {
			f.Fatal(err)
		}
		handlers = append(handlers, h)
	}

	f.Fuzz(func(t *testing.T, p string) {
		for _, h := range handlers {
			if name, code := h.fileName(p); code == 0 {
				if n := openName(name); !filepath.IsLocal(n) && n != "." {
					t.Fatalf("fileName(%q) = %q, not local", p, name)
				}
			}
			r := &http.Request{Method: "GET", URL: &url.URL{Path: p}, Header: http.Header{"Accept-Encoding": {"gzip"}}}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			body := w.Body.String()
			if strings.Contains(body, secret) {
				t.Fatalf("GET %q served the secret", p)
			}
			if w.Code >= 500 {
				t.Fatalf("GET %q: %d", p, w.Code)
			}
			if w.Header().Get("X-Content-Type-Options") != "nosniff" {
				t.Fatalf("GET %q: no nosniff", p)
			}
		}
	})
}
