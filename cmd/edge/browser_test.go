package main

import (
	"bufio"
	"encoding/json"
	"fmt"
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
