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
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(`
listen: { http: "%s" }
admin: "%s"
sites:
  - routes:
      - path: /old/
        redirect: { to: "https://{host}/new{path}?{query}", status: 301 }
      - path: /up
        respond: { body: "ok" }
      - path: /
        respond: { status: 404, body: "nothing here" }
`, httpAddr, adminAddr))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
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
	httpAddr, adminAddr := freePort(t), freePort(t)
	cfg := writeFile(t, dir, "edge.yaml", fmt.Sprintf(`
listen: { http: "%s" }
admin: "%s"
sites:
  - routes:
      - path: /admin/
        proxy: { upstreams: ["%s"] }
        basic_auth: { users_file: users, realm: Ops }
      - path: /internal/
        proxy: { upstreams: ["%s"] }
        access: ["allow 192.0.2.0/24", "deny all"]
      - path: /
        respond: { body: public }
`, httpAddr, adminAddr, backend.URL, backend.URL))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)

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
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(`
listen: { http: "%s" }
admin: "%s"
sites:
  - routes:
      - path: /api/
        respond: { body: data }
        limit: { rate: 1/m, burst: 2 }
      - path: /
        respond: { body: page }
`, httpAddr, adminAddr))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
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
