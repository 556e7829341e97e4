package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// TestRedirectAndRespondRoutes runs edge with nginx's `return` idioms as
// routes: a moved tree, a fixed health answer, a catch-all 404, and checks
// what a client gets (the redirect is not followed).
func TestRedirectAndRespondRoutes(t *testing.T) {
	httpAddr := serveSites(t, "", `
  - routes:
      - path: /old/
        redirect: { to: "https://{host}/new{path}?{query}", status: 301 }
      - path: /up
        respond: { body: "ok" }
      - path: /
        respond: { status: 404, body: "nothing here" }
`)
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	resp, err := c.Get("http://" + httpAddr + "/old/a%20b?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	host := strings.Split(httpAddr, ":")[0]
	if want := "https://" + host + "/new/old/a%20b?x=1"; resp.StatusCode != 301 || resp.Header.Get("Location") != want {
		t.Errorf("GET /old/a%%20b?x=1 = %d Location %q, want 301 %q", resp.StatusCode, resp.Header.Get("Location"), want)
	}
	if code, body := httpGet(t, c, "http://"+httpAddr+"/up"); code != 200 || body != "ok" {
		t.Errorf("GET /up = %d %q, want 200 ok", code, body)
	}
	if code, body := httpGet(t, c, "http://"+httpAddr+"/wp-login.php"); code != 404 || body != "nothing here" {
		t.Errorf("GET /wp-login.php = %d %q, want 404 \"nothing here\"", code, body)
	}
}

// TestValidateRedirect: `edge validate` names the file, line and key of a
// redirect with an unknown placeholder.
func TestValidateRedirect(t *testing.T) {
	dir := t.TempDir()
	bad := writeFile(t, dir, "bad.yaml", `listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        redirect: { to: "https://$host$request_uri" }
      - path: /x
        redirect: { to: "https://{server_name}/" }
`)
	_, errOut, code := runEdge(t, "validate", "-config", bad)
	if code == 0 {
		t.Fatal("validate accepted a bad redirect")
	}
	for _, want := range []string{
		"bad.yaml:5:21: sites[0].routes[0].redirect.to: nginx variable $host is not expanded here: use {host}",
		"bad.yaml:7:21: sites[0].routes[1].redirect.to: unknown placeholder {server_name}",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
}

// TestAccessAndBasicAuthRoutes: nginx's allow/deny and auth_basic in front
// of a backend. A denied or unauthenticated request gets 403 or 401 and
// never reaches the backend; the right password does.
func TestAccessAndBasicAuthRoutes(t *testing.T) {
	var reached atomic.Int64
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		io.WriteString(w, "admin page")
	}))
	defer backend.Close()
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("open sesame"), bcrypt.MinCost)
	writeFile(t, dir, "users", "ops:"+string(hash)+"\n")
	httpAddr := serveSites(t, dir, fmt.Sprintf(`
  - routes:
      - path: /admin/
        proxy: { upstreams: ["%s"] }
        basic_auth: { users_file: users, realm: Ops }
      - path: /internal/
        proxy: { upstreams: ["%s"] }
        access: ["allow 192.0.2.0/24", "deny all"]
      - path: /
        respond: { body: public }
`, backend.URL, backend.URL))

	get := func(path string, auth bool, pass string) (int, string, http.Header) {
		req, _ := http.NewRequest("GET", "http://"+httpAddr+path, nil)
		if auth {
			req.SetBasicAuth("ops", pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	if code, _, h := get("/admin/", false, ""); code != 401 || h.Get("WWW-Authenticate") != `Basic realm="Ops", charset="UTF-8"` {
		t.Errorf("no credentials: %d %q", code, h.Get("WWW-Authenticate"))
	}
	if code, _, _ := get("/admin/", true, "wrong"); code != 401 {
		t.Errorf("wrong password: %d", code)
	}
	if code, _, _ := get("/internal/", false, ""); code != 403 {
		t.Errorf("127.0.0.1 on a route for 192.0.2.0/24: %d, want 403", code)
	}
	if n := reached.Load(); n != 0 {
		t.Fatalf("the backend saw %d refused requests", n)
	}
	if code, body, _ := get("/admin/", true, "open sesame"); code != 200 || body != "admin page" {
		t.Errorf("right password: %d %q", code, body)
	}
	if code, body, _ := get("/", false, ""); code != 200 || body != "public" {
		t.Errorf("public route: %d %q", code, body)
	}
}

// TestLimitRoute: nginx's limit_req on an API route: the burst passes,
// then 429 with Retry-After, and other routes are not limited.
func TestLimitRoute(t *testing.T) {
	httpAddr := serveSites(t, "", `
  - routes:
      - path: /api/
        respond: { body: data }
        limit: { rate: 1/m, burst: 2 }
      - path: /
        respond: { body: page }
`)
	c := &http.Client{Timeout: 10 * time.Second}
	for i := range 3 {
		if code, _ := httpGet(t, c, "http://"+httpAddr+"/api/x"); code != 200 {
			t.Fatalf("request %d of the burst: %d", i+1, code)
		}
	}
	resp, err := c.Get("http://" + httpAddr + "/api/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("over the burst: %d Retry-After %q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if code, body := httpGet(t, c, "http://"+httpAddr+"/"); code != 200 || body != "page" {
		t.Errorf("unlimited route: %d %q", code, body)
	}
}

// TestErrorPages: nginx's error_page. edge's own errors (a dead upstream's
// 502, a 404 of no route, an access rule's 403) are answered with the
// site's files and their original status, never cached; an upstream's own
// error response passes through; a page whose file is gone still keeps
// the status.
func TestErrorPages(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(404)
		io.WriteString(w, "the app's own 404")
	}))
	defer backend.Close()
	dir := t.TempDir()
	writeFile(t, dir, "www/errors/50x.html", "<h1>We'll be right back</h1>")
	writeFile(t, dir, "www/errors/404.html", "<h1>Not here</h1>")
	dead := freePort(t)
	httpAddr := serveSites(t, dir, fmt.Sprintf(`
  - error_pages: { 502: /errors/50x.html, 404: /errors/404.html, 403: /errors/403.html, 429: /errors/50x.html }
    routes:
      - path: /errors/
        static: { root: www }
      - path: /api/
        proxy: { upstreams: ["http://%s"], max_fails: 0 }
      - path: /app/
        proxy: { upstreams: ["%s"] }
      - path: /admin/
        respond: { body: x }
        access: ["deny all"]
      - path: /limited/
        respond: { body: x }
        limit: { rate: 1/m }
`, dead, backend.URL))

	do := func(method, path string, hdr map[string]string) (int, string, http.Header) {
		req, _ := http.NewRequest(method, "http://"+httpAddr+path, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, body, h := do("GET", "/api/orders", nil)
	if code != 502 || body != "<h1>We'll be right back</h1>" {
		t.Errorf("dead upstream: %d %q, want 502 with the site's page", code, body)
	}
	if h.Get("Cache-Control") != "no-store" || h.Get("Etag") != "" || !strings.HasPrefix(h.Get("Content-Type"), "text/html") {
		t.Errorf("page headers: Cache-Control %q, ETag %q, Content-Type %q", h.Get("Cache-Control"), h.Get("Etag"), h.Get("Content-Type"))
	}
	if code, body, _ := do("HEAD", "/api/orders", nil); code != 502 || body != "" {
		t.Errorf("HEAD: %d %q", code, body)
	}
	// The page's own validators must not turn the error into a 304.
	if code, _, _ := do("GET", "/nowhere", map[string]string{"If-None-Match": "*", "Range": "bytes=0-3"}); code != 404 {
		t.Errorf("conditional request for a missing path: %d, want 404", code)
	}
	if code, body, _ := do("GET", "/nowhere", nil); code != 404 || body != "<h1>Not here</h1>" {
		t.Errorf("no route: %d %q", code, body)
	}
	if code, body, _ := do("GET", "/app/x", nil); code != 404 || body != "the app's own 404" {
		t.Errorf("upstream's own 404: %d %q, want it passed through", code, body)
	}
	if code, body, _ := do("GET", "/admin/", nil); code != 403 || strings.Contains(body, "<h1>") {
		t.Errorf("403 whose page file is gone: %d %q, want 403 with edge's text", code, body)
	}
	do("GET", "/limited/", nil)
	if code, body, h := do("GET", "/limited/", nil); code != 429 || body != "<h1>We'll be right back</h1>" || h.Get("Retry-After") == "" {
		t.Errorf("a limit's 429: %d %q Retry-After %q, want 429 with the page and Retry-After", code, body, h.Get("Retry-After"))
	}
	if code, body, _ := do("GET", "/errors/404.html", nil); code != 200 || body != "<h1>Not here</h1>" {
		t.Errorf("the page itself: %d %q", code, body)
	}
}

// TestRewrites: nginx's rewrite. An internal rewrite continues with the
// new path through route matching once (the query merged as nginx does);
// a redirect rule answers with Location; rules cannot loop.
func TestRewrites(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend "+r.URL.RequestURI())
	}))
	defer backend.Close()
	httpAddr := serveSites(t, "", fmt.Sprintf(`
  - routes:
      - path: /shop/
        respond: { status: 410 }
        rewrite:
          - { match: '^/shop/item/(\d+)$', to: '/app/item.php?id=$1' }
          - { match: '^/shop/old/(?P<rest>.*)$', to: '/new/${rest}', redirect: 301 }
          - { match: '^/shop/up/(.*)$', to: '/$1/../../etc/passwd' }
          - { match: '^/shop/backoffice$', to: '/admin/' }
      - path: /admin/
        respond: { body: secret }
        access: ["deny all"]
      - path: /loop/
        respond: { body: loop }
        rewrite: [{ match: '^/loop/(.*)$', to: '/loop/again/$1' }]
      - path: /app/
        proxy: { upstreams: ["%s"] }
`, backend.URL))
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	if code, body := httpGet(t, c, "http://"+httpAddr+"/shop/item/42?ref=mail"); code != 200 || body != "backend /app/item.php?id=42&ref=mail" {
		t.Errorf("internal rewrite: %d %q", code, body)
	}
	resp, err := c.Get("http://" + httpAddr + "/shop/old/a%20b?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 301 || resp.Header.Get("Location") != "/new/a%20b?x=1" {
		t.Errorf("redirect rule: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if code, _ := httpGet(t, c, "http://"+httpAddr+"/shop/other"); code != 410 {
		t.Errorf("no rule matches: %d, want the route's own 410", code)
	}
	if code, body := httpGet(t, c, "http://"+httpAddr+"/loop/x"); code != 200 || body != "loop" {
		t.Errorf("a rule that rewrites into its own route: %d %q, want one pass", code, body)
	}
	// Hostile: a rewritten path that climbs above the root is refused, and
	// a rewrite into a guarded route meets that route's guard.
	if code, _ := httpGet(t, c, "http://"+httpAddr+"/shop/up/x"); code != 400 {
		t.Errorf("rewrite above the root: %d, want 400", code)
	}
	if code, body := httpGet(t, c, "http://"+httpAddr+"/shop/backoffice"); code != 403 || strings.Contains(body, "secret") {
		t.Errorf("rewrite into a denied route: %d %q, want 403", code, body)
	}
}

// serveSites runs edge in dir (a temporary one when "") with an http and an
// admin listener and the given sites (the YAML under "sites:"), waits until
// it is healthy, and returns the http address.
func serveSites(t *testing.T, dir, sites string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	httpAddr, adminAddr := freePort(t), freePort(t)
	cfg := writeFile(t, dir, "edge.yaml", fmt.Sprintf("listen: { http: %q }\nadmin: %q\nsites:\n%s", httpAddr, adminAddr, sites))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	return httpAddr
}
