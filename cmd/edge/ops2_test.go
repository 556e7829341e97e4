package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"edge/internal/testpeer"
)

// TestDeps guards that the edge binary does not link the testing package.
func TestDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "testing" || strings.HasPrefix(dep, "edge/internal/testpeer") {
			t.Errorf("edge links %s", dep)
		}
	}
}

// TestSlowHeaders: a client that never finishes its headers is cut after
// server.read_header_timeout (slowloris); oversized headers get 431.
func TestSlowHeaders(t *testing.T) {
	httpAddr := freePort(t)
	p := startEdge(t, fmt.Sprintf(`
listen: { http: "%s" }
admin: ""
server: { read_header_timeout: 1s, max_header_bytes: 8KiB }
sites: [{ routes: [{ path: /static/, static: { root: www } }] }]
`, httpAddr))
	p.waitHTTP("http://"+httpAddr+"/static/hello.txt", 20*time.Second)
	// Headers over max_header_bytes get 431 (Go allows 4 KiB of slack).
	req, _ := http.NewRequest("GET", "http://"+httpAddr+"/static/hello.txt", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 16<<10))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB of headers: %v %v, want 431", resp, err)
	} else {
		resp.Body.Close()
	}
	c, err := net.Dial("tcp", httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	fmt.Fprint(c, "GET /static/hello.txt HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	if d := time.Since(start); d < 900*time.Millisecond || d > 5*time.Second {
		t.Errorf("slow client cut after %v, want about the 1s read_header_timeout", d)
	}
}

// TestSecondSignalExitsAtOnce: the first SIGTERM waits for an in-flight
// request; a second one exits at once.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	stuck := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-stuck:
		case <-r.Context().Done():
		}
	}))
	defer backend.Close()
	defer close(stuck)
	httpAddr := freePort(t)
	p := startEdge(t, fmt.Sprintf(`
listen: { http: "%s" }
admin: ""
server: { shutdown_timeout: 60s }
sites: [{ routes: [{ path: /, proxy: { upstreams: ["%s"] } }] }]
`, httpAddr, backend.URL))
	p.waitLog("edge started", 20*time.Second)
	resp, err := http.Get("http://" + httpAddr + "/slow")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p.signal(syscall.SIGTERM)
	p.waitLog("shutting down", 10*time.Second)
	select {
	case <-p.done:
		t.Fatal("edge exited with a request in flight after one SIGTERM")
	case <-time.After(500 * time.Millisecond):
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(5 * time.Second); code != 1 {
		t.Errorf("exit code after a second signal = %d, want 1", code)
	}
}

// TestReadyzFollowsRedis: with Redis configured but down, edge starts and
// serves, /readyz says 503 naming the hub; once Redis is up it turns 200.
func TestReadyzFollowsRedis(t *testing.T) {
	redis := testpeer.StartRedis(t)
	redis.Kill()
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(`
listen: { http: "%s" }
admin: "%s"
redis: { url: "%s" }
sites: [{ routes: [{ path: /static/, static: { root: www } }, { path: /socket/, hub: {} }] }]
`, httpAddr, adminAddr, redis.URL()))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	if code, body := httpGet(t, nil, "http://"+adminAddr+"/readyz"); code != 503 || !strings.Contains(body, "hub:") {
		t.Errorf("readyz with Redis down = %d %q, want 503 naming the hub", code, body)
	}
	if code, _ := httpGet(t, nil, "http://"+httpAddr+"/static/hello.txt"); code != 200 {
		t.Errorf("static while Redis is down = %d", code)
	}
	redis.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := httpGet(t, nil, "http://"+adminAddr+"/readyz")
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz still %d %q after Redis came back", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestInstallScript installs into temporary directories and checks what it
// put where; a second run keeps an edited configuration.
func TestInstallScript(t *testing.T) {
	root := t.TempDir()
	repo, _ := filepath.Abs("../..")
	binDir := filepath.Join(repo, "bin")
	if _, err := os.Stat(filepath.Join(binDir, "edge")); err != nil {
		os.MkdirAll(binDir, 0o755)
		data, _ := os.ReadFile(edgeBin)
		if err := os.WriteFile(filepath.Join(binDir, "edge"), data, 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(filepath.Join(binDir, "edge"))
	}
	env := append(os.Environ(), "PREFIX="+filepath.Join(root, "usr"), "UNIT_DIR="+filepath.Join(root, "units"), "ETC="+filepath.Join(root, "etc", "edge"))
	for _, d := range []string{"usr", "units", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	run := func() string {
		cmd := exec.Command(filepath.Join(repo, "scripts", "install.sh"))
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	out := run()
	if !strings.Contains(out, "systemctl enable --now edge") {
		t.Errorf("install.sh does not tell the next step:\n%s", out)
	}
	unit, err := os.ReadFile(filepath.Join(root, "units", "edge.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart="+filepath.Join(root, "usr", "bin", "edge")+" run") {
		t.Errorf("unit not installed with the binary path: %v\n%s", err, unit)
	}
	cfg := filepath.Join(root, "etc", "edge", "config.yaml")
	os.WriteFile(cfg, []byte("# edited\n"), 0o644)
	if out := run(); !strings.Contains(out, "kept the existing") {
		t.Errorf("second install: %s", out)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "# edited\n" {
		t.Error("install overwrote an existing configuration")
	}
}

// TestConnectionCapsOnReload: with server.max_connections full, a new
// client waits while the admin listener still answers; a reload that
// raises the cap lets the waiting client in, and a reload that changes
// read_header_timeout says that it needs a restart.
func TestConnectionCapsOnReload(t *testing.T) {
	httpAddr, adminAddr := freePort(t), freePort(t)
	cfg := func(extra string) string {
		return strings.Replace(fmt.Sprintf(staticYAML, httpAddr, adminAddr),
			"server: { shutdown_timeout: 5s }", "server: { shutdown_timeout: 5s"+extra+" }", 1)
	}
	p := startEdge(t, cfg(", max_connections: 1"))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	get := "GET /static/hello.txt HTTP/1.1\r\nHost: x\r\n\r\n"
	answered := func(c net.Conn, wait time.Duration) bool {
		c.SetReadDeadline(time.Now().Add(wait))
		_, err := c.Read(make([]byte, 512))
		return err == nil
	}
	dial := func() net.Conn {
		c, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		io.WriteString(c, get)
		return c
	}
	if !answered(dial(), 5*time.Second) {
		t.Fatal("first connection not served")
	}
	waiting := dial()
	if answered(waiting, 300*time.Millisecond) {
		t.Fatal("second connection served with max_connections: 1")
	}
	if code, _ := httpGet(t, nil, "http://"+adminAddr+"/healthz"); code != 200 {
		t.Errorf("admin /healthz = %d while the cap is full, want 200", code)
	}
	writeFile(t, p.dir, "config.yaml", cfg(", max_connections: 2, read_header_timeout: 7s"))
	p.signal(syscall.SIGHUP)
	p.waitLog("msg=reloaded", 10*time.Second)
	if !answered(waiting, 5*time.Second) {
		t.Error("waiting connection not served after the cap was raised by a reload")
	}
	if !strings.Contains(p.log.String(), "take effect on listeners bound from now on") {
		t.Errorf("reload changing read_header_timeout did not warn:\n%s", p.log.String())
	}
}
