package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
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
