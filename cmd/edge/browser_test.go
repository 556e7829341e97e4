package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// npmDeps makes sure the Node packages of a testdata directory are there.
func npmDeps(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "node_modules")); err == nil {
		return
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Fatal("npm not found: the README test command installs it (make test)")
	}
	out, err := exec.Command("npm", "ci", "--prefix", dir, "--no-audit", "--no-fund", "--loglevel=error").CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
}

// TestBrowserDemoPage is the whole path in a real browser: Chromium trusts
// edge's local CA (NSS database, not --ignore-certificate-errors), loads the
// demo page over HTTP/2, its hub WebSocket opens (over HTTP/1.1: edge must
// never offer RFC 8441, which gorilla cannot serve), and a message sent
// with "edge publish" shows up on the page.
func TestBrowserDemoPage(t *testing.T) {
	for _, bin := range []string{"chromium", "certutil", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command installs it (make test)", bin)
		}
	}
	npmDeps(t, "testdata/browser")
	www, err := filepath.Abs("../../examples/www")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr, httpsAddr, adminAddr := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "state")
	cfg := writeFile(t, dir, "config.yaml", fmt.Sprintf(`
listen: { http: "%s", https: "%s" }
admin: "%s"
tls: { ca: internal, storage: %s }
sites:
  - hosts: [localhost, 127.0.0.1]
    routes:
      - { path: /static/, static: { root: %s } }
      - { path: /socket/, hub: { channels: [orders, visits] } }
      - { path: /, static: { root: %s } }
`, httpAddr, httpsAddr, adminAddr, storage, www, www))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)

	_, port, _ := strings.Cut(httpsAddr, ":")
	node := exec.Command("node", "page.js", "https://localhost:"+port+"/", filepath.Join(storage, "ca", "root.crt"), t.TempDir())
	node.Dir = "testdata/browser"
	node.Stderr = os.Stderr
	out, err := node.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer node.Process.Kill()
	lines := bufio.NewScanner(out)
	var result struct {
		Ready    bool
		Status   int
		Protocol string
		Security string
		Live     bool
		Row      string
		Error    string
		WSErrors []string
	}
	deadline := time.AfterFunc(60*time.Second, func() { node.Process.Kill() })
	defer deadline.Stop()
	for lines.Scan() {
		if err := json.Unmarshal(lines.Bytes(), &result); err != nil {
			t.Fatalf("page.js printed %q", lines.Text())
		}
		if result.Ready && result.Status == 0 {
			if _, errOut, code := runEdge(t, "publish", "-config", cfg, "orders", `{"country":"FR","total":42}`); code != 0 {
				t.Fatalf("edge publish: %s", errOut)
			}
			result.Ready = false
			continue
		}
		break
	}
	node.Wait()
	if result.Error != "" || len(result.WSErrors) > 0 {
		t.Fatalf("browser: %s %v", result.Error, result.WSErrors)
	}
	if result.Status != 200 || result.Protocol != "h2" || result.Security != "secure" || !result.Live {
		t.Errorf("page: status %d over %q, security %q, live %v; want 200 over h2, secure, live",
			result.Status, result.Protocol, result.Security, result.Live)
	}
	if !strings.Contains(result.Row, "FR") || !strings.Contains(result.Row, "42.00") {
		t.Errorf("published order not on the page: row %q", result.Row)
	}
}

// TestBrowserHub runs hub/client.js in Chromium over wss (trusting edge's
// local CA): with WebSockets blocked at the network level it falls back
// to SSE, receives, and recovers what was published while it was away;
// it goes back to WebSocket after wsRetry once upgrades work again and
// takes compressed frames there; a
// token refreshed in place keeps it connected past the first token's exp;
// a disconnect with reconnect:false stops it.
func TestBrowserHub(t *testing.T) {
	for _, bin := range []string{"chromium", "certutil", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command installs it (make test)", bin)
		}
	}
	npmDeps(t, "testdata/browser")
	httpAddr, httpsAddr, adminAddr := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "state")
	secret := "browser-hub-test-secret-0123456789abcdef"
	writeFile(t, dir, "secret", secret)
	writeFile(t, dir, "www/hub.html", `<!doctype html><title>hub</title><script src="/socket/client.js"></script>`)
	cfg := writeFile(t, dir, "config.yaml", fmt.Sprintf(`
listen: { http: "%s", https: "%s" }
admin: "%s"
tls: { ca: internal, storage: %s }
sites:
  - hosts: [localhost, 127.0.0.1]
    routes:
      - { path: /socket/, hub: { channels: [orders], compression: true } }
      - { path: /jwt/, hub: { channels: [orders], auth: { mode: jwt, secret_file: secret } } }
      - { path: /, static: { root: www } }
`, httpAddr, httpsAddr, adminAddr, storage))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)

	_, port, _ := strings.Cut(httpsAddr, ":")
	node := exec.Command("node", "hub.js", "https://localhost:"+port, filepath.Join(storage, "ca", "root.crt"), t.TempDir(),
		"http://"+adminAddr, secret)
	node.Dir = "testdata/browser"
	node.Stderr = os.Stderr
	timer := time.AfterFunc(90*time.Second, func() { node.Process.Kill() })
	defer timer.Stop()
	out, err := node.Output()
	if err != nil {
		t.Fatalf("node hub.js: %v\n%s", err, out)
	}
	var res struct {
		Error string
		SSE   struct {
			Transports []string
			Messages   []int
			Gaps       int
		}
		Refresh struct {
			Transports []string
			Closes     []int
			Refreshed  int
			Tokens     int
		}
		Stop struct {
			State     string
			Opens     int
			LastClose int
		}
		Back []string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("hub.js printed %q: %v", out, err)
	}
	t.Logf("browser: %s", out)
	if res.Error != "" {
		t.Fatalf("in the browser: %s\n%s", res.Error, out)
	}
	if fmt.Sprint(res.SSE.Transports) != "[sse sse]" || fmt.Sprint(res.SSE.Messages) != "[1 2 3]" || res.SSE.Gaps != 0 {
		t.Errorf("SSE fallback: %+v, want two SSE opens (before and after the drop) and 1 2 3 without a gap", res.SSE)
	}
	if fmt.Sprint(res.Refresh.Transports) != "[websocket]" || len(res.Refresh.Closes) != 0 || res.Refresh.Refreshed < 1 || res.Refresh.Tokens < 2 {
		t.Errorf("token refresh: %+v, want one wss connection, never closed, refreshed at least once", res.Refresh)
	}
	// Chromium took the compressed frame: the hub compressed the 3 KB
	// message (and only once), and the page got it whole (hub.js).
	var st struct{ Compressed uint64 }
	if code, body := httpGet(t, http.DefaultClient, "http://"+adminAddr+"/hub/stats"); code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Compressed != 1 {
		t.Errorf("hub stats %d %s: want compressed 1", code, body)
	}
	if fmt.Sprint(res.Back) != "[sse websocket]" {
		t.Errorf("WebSocket again after wsRetry: opens %v, want [sse websocket]", res.Back)
	}
	if res.Stop.State != "closed" || res.Stop.Opens != 1 || res.Stop.LastClose != 4403 {
		t.Errorf("disconnect reconnect:false: %+v, want closed with 4403 and no reconnect", res.Stop)
	}
}
