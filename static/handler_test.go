package static

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"edge/config"
)

func TestRootAndAlias(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"www/static/app.js":  "root app",
		"www/app.js":         "not under the route",
		"build/app.js":       "alias app",
		"build/css/site.css": "alias css",
	})
	root := newSite(t, "/static/", fmt.Sprintf("{root: %q}", filepath.Join(dir, "www")), nil)
	alias := newSite(t, "/assets/", fmt.Sprintf("{alias: %q}", filepath.Join(dir, "build")), nil)
	aliasNoSlash := newSite(t, "/assets", fmt.Sprintf("{alias: %q}", filepath.Join(dir, "build")), nil)

	tests := []struct {
		name string
		s    *site
		path string
		code int
		body string
	}{
		{"root appends the whole path", root, "/static/app.js", 200, "root app"},
		{"root outside the route prefix", root, "/app.js", 404, ""},
		{"alias strips the prefix", alias, "/assets/app.js", 200, "alias app"},
		{"alias subdirectory", alias, "/assets/css/site.css", 200, "alias css"},
		{"alias without trailing slash", aliasNoSlash, "/assets/app.js", 200, "alias app"},
		{"alias prefix is a segment", aliasNoSlash, "/assetsapp.js", 404, ""},
		{"alias missing", alias, "/assets/nope.js", 404, "404 Not Found\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := tt.s.get(t, tt.path)
			wantStatus(t, tt.path, resp, tt.code)
			if tt.body != "" && body != tt.body {
				t.Errorf("GET %s body = %q, want %q", tt.path, body, tt.body)
			}
			wantHeader(t, tt.path, resp, "X-Content-Type-Options", "nosniff")
		})
	}
}

// TestNothingOutsideRoot sends hostile request targets byte for byte and
// checks that nothing outside the directory is ever served.
func TestNothingOutsideRoot(t *testing.T) {
	dir := t.TempDir()
	const secret = "TOPSECRET"
	writeFiles(t, dir, map[string]string{
		"secret.txt":                   secret,
		"www/static/app.js":            "inside",
		"www/static/.env":              secret,
		"www/static/.git/config":       secret,
		"www/.well-known/security.txt": "contact",
		"www/static/.well-known/x":     secret,
	})
	www := filepath.Join(dir, "www")
	mustSymlink(t, "../../secret.txt", filepath.Join(www, "static", "out"))
	mustSymlink(t, "../..", filepath.Join(www, "static", "outdir"))
	mustSymlink(t, filepath.Join(dir, "secret.txt"), filepath.Join(www, "static", "abs"))
	mustSymlink(t, "app.js", filepath.Join(www, "static", "in"))
	mustSymlink(t, "../static", filepath.Join(www, "static", "loopdir"))

	s := newSite(t, "/", fmt.Sprintf("{root: %q}", www), nil)
	addr := s.srv.Listener.Addr().String()
	tests := []struct {
		target string
		code   int
	}{
		{"/static/../secret.txt", 400},
		{"/static/../../secret.txt", 400},
		{"/%2e%2e/secret.txt", 400},
		{"/static/%2e%2e/%2e%2e/secret.txt", 400},
		{"/static/..%2f..%2fsecret.txt", 400},
		{"/static/..%2F..%2Fsecret.txt", 400},
		{"/static/..%5c..%5csecret.txt", 400},
		{"/static/..\\..\\secret.txt", 400},
		{"/static/app.js%00.png", 400},
		{"/static//app.js", 400},
		{"/static/./app.js", 400},
		{"/static/out", 404},
		{"/static/outdir/secret.txt", 404},
		{"/static/abs", 404},
		{"/static/.env", 404},
		{"/static/%2eenv", 404}, // decodes to /static/.env
		{"/static/.git/config", 404},
		{"/static/.well-known/x", 404},
		{"/.well-known/security.txt", 200},
		{"/static/in", 200},
		{"/static/loopdir/app.js", 200},
	}
	for _, tt := range tests {
		resp, body := rawGet(t, addr, tt.target)
		wantStatus(t, tt.target, resp, tt.code)
		if strings.Contains(body, secret) {
			t.Errorf("GET %s served the secret", tt.target)
		}
		wantHeader(t, tt.target, resp, "X-Content-Type-Options", "nosniff")
		if resp.StatusCode >= 400 && len(body) > 40 {
			t.Errorf("GET %s: error body %q is not small and plain", tt.target, body)
		}
	}
}

func mustSymlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
}

func TestMethods(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.txt": "hello"})
	s := newSite(t, "/", fmt.Sprintf("{root: %q}", dir), nil)

	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "PROPFIND"} {
		resp, _ := s.do(t, m, "/a.txt")
		wantStatus(t, m, resp, 405)
		wantHeader(t, m, resp, "Allow", "GET, HEAD")
		wantHeader(t, m, resp, "X-Content-Type-Options", "nosniff")
	}
	resp, body := s.do(t, "OPTIONS", "/a.txt")
	wantStatus(t, "OPTIONS", resp, 204)
	wantHeader(t, "OPTIONS", resp, "Allow", "GET, HEAD")
	if body != "" {
		t.Errorf("OPTIONS body = %q", body)
	}
	resp, body = s.do(t, "HEAD", "/a.txt")
	wantStatus(t, "HEAD", resp, 200)
	wantHeader(t, "HEAD", resp, "Content-Length", "5")
	if body != "" || resp.Header.Get("Etag") == "" {
		t.Errorf("HEAD: body %q, ETag %q; want no body and an ETag", body, resp.Header.Get("Etag"))
	}
}

func TestIndexRedirectAndBrowse(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"docs/index.html":                        "<h1>docs</h1>",
		"pref/index.htm":                         "htm wins",
		"pref/index.html":                        "html",
		"empty/file.txt":                         "x",
		"files/a&b.txt":                          "1",
		"files/\"q\".txt":                        "2",
		"files/<img src=x onerror=alert(1)>.txt": "3",
		"files/.hidden":                          "4",
		"files/sub/x.txt":                        "5",
		"files/a:b.txt":                          "6",
		"files/space y.txt":                      "7",
	})
	s := newSite(t, "/", fmt.Sprintf("{root: %q, index: [index.htm, index.html]}", dir), nil)
	browse := newSite(t, "/b/", fmt.Sprintf("{alias: %q, browse: true}", dir), nil)

	resp, _ := s.get(t, "/docs?x=1&y=2")
	wantStatus(t, "dir without slash", resp, 301)
	wantHeader(t, "dir without slash", resp, "Location", "/docs/?x=1&y=2")

	resp, body := s.get(t, "/docs/")
	wantStatus(t, "dir index", resp, 200)
	wantHeader(t, "dir index", resp, "Content-Type", "text/html; charset=utf-8")
	if body != "<h1>docs</h1>" {
		t.Errorf("index body = %q", body)
	}
	if _, body := s.get(t, "/pref/"); body != "htm wins" {
		t.Errorf("index order: body = %q, want the first index name", body)
	}
	resp, _ = s.get(t, "/empty/")
	wantStatus(t, "dir without index, browse off", resp, 404)
	resp, _ = s.get(t, "/docs/index.html/")
	wantStatus(t, "file with trailing slash", resp, 404)

	resp, body = browse.get(t, "/b/files/")
	wantStatus(t, "listing", resp, 200)
	wantHeader(t, "listing", resp, "Content-Type", "text/html; charset=utf-8")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("listing CSP = %q", csp)
	}
	for _, want := range []string{
		`&lt;img src=x onerror=alert(1)&gt;.txt`,
		`href="./%3Cimg%20src=x%20onerror=alert%281%29%3E.txt"`,
		`a&amp;b.txt`,
		`&#34;q&#34;.txt`,
		`href="./sub/"`,
		`href="./a:b.txt"`,
		`href="./space%20y.txt"`,
		`href="../"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("listing lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<img") || strings.Contains(body, ".hidden") {
		t.Errorf("listing has raw markup or a dotfile:\n%s", body)
	}
	if i, j := strings.Index(body, "sub/"), strings.Index(body, "a&amp;b.txt"); i < 0 || j < 0 || i > j {
		t.Errorf("listing: directories should come first")
	}
	_, body = browse.get(t, "/b/")
	if strings.Contains(body, `href="../"`) {
		t.Errorf("top of the route links to its parent")
	}
}

func TestSPA(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"app/index.html":  "<app>",
		"app/main.js":     "js",
		"app/about/x.txt": "x",
	})
	s := newSite(t, "/app/", fmt.Sprintf("{root: %q, spa: true}", dir), nil)
	tests := []struct {
		path string
		code int
		body string
	}{
		{"/app/users/42", 200, "<app>"},
		{"/app/settings", 200, "<app>"},
		{"/app/old-page.html", 200, "<app>"},
		{"/app/deep/route/", 200, "<app>"},
		{"/app/about/", 200, "<app>"}, // a directory without an index
		{"/app/main.js", 200, "js"},
		{"/app/missing.js", 404, ""},
		{"/app/missing.css", 404, ""},
		{"/app/logo.png", 404, ""},
		{"/app/", 200, "<app>"},
	}
	for _, tt := range tests {
		resp, body := s.get(t, tt.path)
		wantStatus(t, tt.path, resp, tt.code)
		if tt.body != "" && body != tt.body {
			t.Errorf("GET %s = %q, want %q", tt.path, body, tt.body)
		}
	}
	resp, _ := s.get(t, "/app/users/42")
	wantHeader(t, "SPA route", resp, "Cache-Control", "no-cache")
	wantHeader(t, "SPA route", resp, "Content-Type", "text/html; charset=utf-8")
	resp, _ = s.get(t, "/app/")
	wantHeader(t, "the index itself", resp, "Cache-Control", "public, max-age=3600")
	resp, _ = s.do(t, "POST", "/app/users/42")
	wantStatus(t, "POST to an SPA route", resp, 405)

	// Without its index the SPA answers 404, not a loop or a 500.
	os.Remove(filepath.Join(dir, "app", "index.html"))
	s.clock.advance(2 * time.Second)
	resp, _ = s.get(t, "/app/users/42")
	wantStatus(t, "SPA without index", resp, 404)
}

func TestFallback(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"static/app.js": "js"})
	backend := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Backend", "yes")
		fmt.Fprintf(w, "backend %s %s", r.Method, r.URL.Path)
	})
	s := newSite(t, "/static/", fmt.Sprintf("{root: %q}", dir), backend)

	resp, body := s.get(t, "/static/app.js")
	if body != "js" || resp.Header.Get("X-Backend") != "" {
		t.Errorf("existing file: %q from backend %q", body, resp.Header.Get("X-Backend"))
	}
	resp, body = s.get(t, "/static/missing.js?v=1")
	if body != "backend GET /static/missing.js" {
		t.Errorf("missing file: body %q, want the backend's", body)
	}
	resp, body = s.do(t, "POST", "/static/upload")
	if body != "backend POST /static/upload" {
		t.Errorf("POST to a missing file: body %q, want the backend's", body)
	}
	resp, _ = s.do(t, "POST", "/static/app.js")
	wantStatus(t, "POST to an existing file", resp, 405)
	resp, body = s.get(t, "/static/.env")
	wantStatus(t, "dotfile with fallback", resp, 404)
	if strings.Contains(body, "backend") {
		t.Errorf("a dotfile request reached the backend")
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.txt": "a", "locked.txt": "l", "gone.txt": "g"})
	s := newSite(t, "/", fmt.Sprintf("{root: %q}", dir), nil)

	resp, body := s.get(t, "/missing.txt")
	wantStatus(t, "missing", resp, 404)
	wantHeader(t, "missing", resp, "Content-Type", "text/plain; charset=utf-8")
	if body != "404 Not Found\n" {
		t.Errorf("404 body = %q", body)
	}

	// Permission denied: a real chmod when not root (root reads anything),
	// and the same error injected for the hook in every case.
	os.Chmod(filepath.Join(dir, "locked.txt"), 0)
	if os.Geteuid() != 0 {
		resp, _ = s.get(t, "/locked.txt")
		wantStatus(t, "chmod 0", resp, 403)
	}
	s.setHook(func(op, name string) error {
		if name == "locked.txt" {
			return syscall.EACCES
		}
		return nil
	})
	resp, body = s.get(t, "/locked.txt")
	wantStatus(t, "permission denied", resp, 403)
	if body != "403 Forbidden\n" {
		t.Errorf("403 body = %q", body)
	}

	// Server trouble is a 500 that tells nothing.
	s.setHook(func(op, name string) error {
		if name == "a.txt" {
			return syscall.EMFILE
		}
		return nil
	})
	resp, body = s.get(t, "/a.txt")
	wantStatus(t, "EMFILE", resp, 500)
	if body != "500 Internal Server Error\n" {
		t.Errorf("500 body = %q", body)
	}
	s.setHook(nil)

	// A file that disappears between the stat that finds it changed and
	// the open that reloads it: 404.
	resp, _ = s.get(t, "/gone.txt")
	wantStatus(t, "gone.txt cached", resp, 200)
	if err := os.WriteFile(filepath.Join(dir, "gone.txt"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	s.setHook(func(op, name string) error {
		if op == "open" && name == "gone.txt" {
			os.Remove(filepath.Join(dir, "gone.txt"))
		}
		return nil
	})
	s.clock.advance(2 * time.Second)
	resp, _ = s.get(t, "/gone.txt")
	wantStatus(t, "disappeared between stat and open", resp, 404)
	s.setHook(nil)

	// A FIFO must not block the request.
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	resp, _ = s.get(t, "/pipe")
	wantStatus(t, "fifo", resp, 404)
}

func TestErrorStatus(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{fs.ErrNotExist, 404},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.ENOENT}, 404},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.ENOTDIR}, 404},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.ELOOP}, 404},
		{&fs.PathError{Op: "openat", Path: "x", Err: errors.New("path escapes from parent")}, 404},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.EACCES}, 403},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.EPERM}, 403},
		{&fs.PathError{Op: "openat", Path: "x", Err: syscall.EMFILE}, 500},
		{&fs.PathError{Op: "read", Path: "x", Err: syscall.EIO}, 500},
	}
	for _, tt := range tests {
		if got := errorStatus(tt.err); got != tt.code {
			t.Errorf("errorStatus(%v) = %d, want %d", tt.err, got, tt.code)
		}
	}
}

func TestContentTypes(t *testing.T) {
	dir := t.TempDir()
	want := map[string]string{
		"a.html":        "text/html; charset=utf-8",
		"a.js":          "text/javascript; charset=utf-8",
		"a.mjs":         "text/javascript; charset=utf-8",
		"a.css":         "text/css; charset=utf-8",
		"a.json":        "application/json",
		"a.svg":         "image/svg+xml",
		"a.wasm":        "application/wasm",
		"a.woff2":       "font/woff2",
		"a.woff":        "font/woff",
		"a.png":         "image/png",
		"a.webp":        "image/webp",
		"a.avif":        "image/avif",
		"a.ico":         "image/x-icon",
		"a.map":         "application/json",
		"a.webmanifest": "application/manifest+json",
		"a.txt":         "text/plain; charset=utf-8",
		"a.mp4":         "video/mp4",
		"UPPER.JS":      "text/javascript; charset=utf-8",
		"noext":         "application/octet-stream",
		"a.unknownext":  "application/octet-stream",
	}
	files := map[string]string{}
	for name := range want {
		files[name] = "<html><script>x</script>" // must not be sniffed
	}
	writeFiles(t, dir, files)
	s := newSite(t, "/", fmt.Sprintf("{root: %q}", dir), nil)
	for name, ct := range want {
		resp, _ := s.get(t, "/"+name)
		wantHeader(t, name, resp, "Content-Type", ct)
	}
}

func TestCacheControl(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.js": "x"})
	for _, tt := range []struct{ body, want string }{
		{fmt.Sprintf("{root: %q}", dir), "public, max-age=3600"},
		{fmt.Sprintf("{root: %q, immutable: true}", dir), "public, max-age=31536000, immutable"},
		{fmt.Sprintf("{root: %q, cache_control: \"no-store\"}", dir), "no-store"},
	} {
		s := newSite(t, "/", tt.body, nil)
		resp, _ := s.get(t, "/a.js")
		wantHeader(t, tt.body, resp, "Cache-Control", tt.want)
	}
}

func TestFileName(t *testing.T) {
	root := &Handler{prefix: "/static"}
	alias := &Handler{prefix: "/assets", alias: true}
	top := &Handler{prefix: ""}
	tests := []struct {
		h    *Handler
		path string
		name string
		code int
	}{
		{root, "/static/a.js", "static/a.js", 0},
		{root, "/static/", "static/", 0},
		{root, "/static", "static", 0},
		{root, "/staticx", "", 404},
		{root, "/other/a.js", "", 404},
		{alias, "/assets/a.js", "a.js", 0},
		{alias, "/assets/", "", 0},
		{alias, "/assets", "", 0},
		{alias, "/assets/d/", "d/", 0},
		{alias, "/assets//a.js", "", 400},
		{top, "/", "", 0},
		{top, "/.well-known/acme-challenge/t", ".well-known/acme-challenge/t", 0},
		{top, "/x/.well-known/t", "", 404},
		{top, "/.well-known/.git", "", 404},
		{top, "/a/../b", "", 400},
		{top, "/a/./b", "", 400},
		{top, "/a\\b", "", 400},
		{top, "/a\x00b", "", 400},
		{top, "", "", 400},
		{top, "a", "", 400},
		{top, "/.env", "", 404},
		{top, "/..", "", 400},
		{top, "/...", "", 404},
	}
	for _, tt := range tests {
		name, code := tt.h.fileName(tt.path)
		if name != tt.name || code != tt.code {
			t.Errorf("fileName(%q) with prefix %q = %q, %d; want %q, %d", tt.path, tt.h.prefix, name, code, tt.name, tt.code)
		}
	}
}

func TestLooksLikePage(t *testing.T) {
	for name, want := range map[string]bool{
		"users/42": true, "settings": true, "a/b/": true, "": true,
		"page.html": true, "x/Page.HTM": true, "v1.2/users": true,
		"app.js": false, "a/style.css": false, "logo.png": false, "data.json": false,
	} {
		if got := looksLikePage(name); got != want {
			t.Errorf("looksLikePage(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestNewTakesDefaultedConfig: the defaults live in package config only.
// New used to re-apply some of its own and read the zero value of others
// differently from config: an undefaulted "compress: {}" block compressed
// nothing (config: a compress block turns compression on) and a nil
// cache_max_file_size turned the cache off (config: 64KiB). New now refuses
// a block that config has not defaulted rather than guess.
func TestNewTakesDefaultedConfig(t *testing.T) {
	dir := t.TempDir()
	css := strings.Repeat("body { color: #123456; margin: 0 auto; }\n", 50) // 2 KiB
	writeFiles(t, dir, map[string]string{"site.css": css})

	raw := &config.Static{Root: dir, Compress: &config.Compress{}}
	if _, err := New("/", raw, nil, nil); !errors.Is(err, errNotDefaulted) {
		t.Errorf("New(undefaulted block) error = %v, want errNotDefaulted", err)
	}

	// The same block through config: compressed on the fly, then cached.
	s := newSite(t, "/", fmt.Sprintf("{root: %q, compress: {}}", dir), nil)
	resp, _ := s.get(t, "/site.css", "Accept-Encoding: gzip")
	wantHeader(t, "compress: {}", resp, "Content-Encoding", "gzip")
	ops := s.ops.Load()
	resp, _ = s.get(t, "/site.css", "Accept-Encoding: gzip")
	wantHeader(t, "cached", resp, "Content-Encoding", "gzip")
	if n := s.ops.Load() - ops; n != 0 {
		t.Errorf("second GET: %d filesystem operations, want 0 (served from the cache)", n)
	}
}

// TestErrorPage: static answers errors with the shared page of
// internal/httperr. Its own copy sent no Cache-Control at all, while the
// server, proxy and hub pages said "no-store": a shared cache could keep a
// 404 or 500 of a file that appears or recovers a moment later.
func TestErrorPage(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.txt": "hello world", "a.txt.gz": "not really gzip", "b.txt": "b"})
	s := newSite(t, "/", fmt.Sprintf("{root: %q}", dir), nil)
	s.setHook(func(op, name string) error {
		if name == "b.txt" {
			return syscall.EMFILE
		}
		return nil
	})
	for _, tt := range []struct {
		name, method, path string
		headers            []string
		code               int
	}{
		{"missing", "GET", "/nope.txt", nil, 404},
		{"dotfile", "GET", "/.env", nil, 404},
		{"dot segment", "GET", "/x/%2e%2e/a.txt", nil, 400},
		{"method", "POST", "/a.txt", nil, 405},
		// Validators, Accept-Ranges and Vary were set for the file before
		// the precondition failed.
		{"precondition", "GET", "/a.txt", []string{`If-Match: "other"`, "Accept-Encoding: gzip"}, 412},
		{"server trouble", "GET", "/b.txt", nil, 500},
	} {
		resp, body := s.do(t, tt.method, tt.path, tt.headers...)
		wantStatus(t, tt.name, resp, tt.code)
		if want := fmt.Sprintf("%d %s\n", tt.code, http.StatusText(tt.code)); body != want {
			t.Errorf("%s: body %q, want %q", tt.name, body, want)
		}
		wantHeader(t, tt.name, resp, "Cache-Control", "no-store")
		wantHeader(t, tt.name, resp, "Content-Type", "text/plain; charset=utf-8")
		wantHeader(t, tt.name, resp, "X-Content-Type-Options", "nosniff")
		for _, k := range []string{"Etag", "Last-Modified", "Accept-Ranges", "Vary", "Content-Encoding"} {
			wantHeader(t, tt.name, resp, k, "")
		}
		if tt.code == 405 {
			wantHeader(t, tt.name, resp, "Allow", "GET, HEAD")
		}
	}
}
