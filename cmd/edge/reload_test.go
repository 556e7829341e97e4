package main

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/config"
	"edge/hub"
)

// reloadTLSYAML serves a.test and b.test (or what the hosts line says) over
// HTTPS with local-CA certificates.
const reloadTLSYAML = `
listen: { http: "%s", https: "%s" }
admin: "%s"
tls: { ca: internal, storage: %s }
server: { shutdown_timeout: 5s }
sites:
%s`

const reloadSite = `  - hosts: [%s]
    routes:
      - { path: /static/, static: { root: www } }
`

// tlsProbe dials edge's https address with SNI name and returns the
// status of GET /static/hello.txt, or the handshake or request error.
func tlsProbe(t *testing.T, addr, name string, roots *x509.CertPool) (int, error) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig: &cryptotls.Config{RootCAs: roots, ServerName: name},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := c.Get("https://" + name + "/static/hello.txt")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// rootsOf reads the local CA's root from edge's tls storage.
func rootsOf(t *testing.T, storage string) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(storage, "ca", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("root.crt holds no certificate")
	}
	return pool
}

// TestHostileFailedReloadKeepsTLS: a reload that renames host b.test to
// newhost.test and moves the https listener onto a taken port fails at the
// bind. Nothing of it may show: a.test and b.test still handshake and
// serve, newhost.test does not, edge reload exits 1 with the bind error
// and /readyz (still 200) says the last reload failed. A good reload then
// serves newhost.test and the readiness note goes away.
func TestHostileFailedReloadKeepsTLS(t *testing.T) {
	httpAddr, httpsAddr, adminAddr := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "state")
	writeFile(t, dir, "www/static/hello.txt", "hello from edge\n")
	site := func(hosts string) string { return fmt.Sprintf(reloadSite, hosts) }
	conf := func(https string, sites ...string) string {
		return fmt.Sprintf(reloadTLSYAML, httpAddr, https, adminAddr, storage, strings.Join(sites, ""))
	}
	cfg := writeFile(t, dir, "config.yaml", conf(httpsAddr, site("a.test"), site("b.test")))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	roots := rootsOf(t, storage)
	for _, name := range []string{"a.test", "b.test"} {
		if code, err := tlsProbe(t, httpsAddr, name, roots); err != nil || code != 200 {
			t.Fatalf("before reload %s: %d %v", name, code, err)
		}
	}

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	writeFile(t, dir, "config.yaml", conf(taken.Addr().String(), site("a.test"), site("newhost.test")))
	_, errOut, code := runEdge(t, "reload", "-config", cfg)
	if code != 1 || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("edge reload onto a taken port = %d %q, want exit 1 with the bind error", code, errOut)
	}
	for _, name := range []string{"a.test", "b.test"} {
		if code, err := tlsProbe(t, httpsAddr, name, roots); err != nil || code != 200 {
			t.Errorf("after the failed reload %s: %d %v, want the old configuration serving", name, code, err)
		}
	}
	if code, err := tlsProbe(t, httpsAddr, "newhost.test", roots); err == nil {
		t.Errorf("after the failed reload newhost.test answered %d, want a refused handshake", code)
	}
	code, body := httpGet(t, nil, "http://"+adminAddr+"/readyz")
	if code != 200 || !strings.Contains(body, "last reload failed") || !strings.Contains(body, "address already in use") {
		t.Errorf("readyz after the failed reload = %d %q, want 200 naming the failed reload", code, body)
	}

	writeFile(t, dir, "config.yaml", conf(httpsAddr, site("a.test"), site("newhost.test")))
	if out, errOut, code := runEdge(t, "reload", "-config", cfg); code != 0 {
		t.Fatalf("good reload = %d %q %q", code, out, errOut)
	}
	for _, name := range []string{"a.test", "newhost.test"} {
		if code, err := tlsProbe(t, httpsAddr, name, roots); err != nil || code != 200 {
			t.Errorf("after the good reload %s: %d %v", name, code, err)
		}
	}
	if code, body := httpGet(t, nil, "http://"+adminAddr+"/readyz"); code != 200 || strings.TrimSpace(body) != "ready" {
		t.Errorf("readyz after the good reload = %d %q, want plain ready", code, body)
	}
}

// TestReadyzReasons: with both listeners down and Redis not reached yet,
// /readyz names each cause once, in a fixed order, without the hub's
// prefix doubled, and adds the last failed reload as a note.
func TestReadyzReasons(t *testing.T) {
	a := newApp("edge.yaml", slog.New(slog.DiscardHandler), new(slog.LevelVar))
	redis := &config.Redis{URL: "redis://" + freePort(t), Prefix: "edge:"}
	node, err := hub.NewNode(hub.NodeOptions{Redis: redis})
	if err != nil {
		t.Fatal(err)
	}
	a.node = node
	a.cfg = &config.Config{Listen: config.Listen{HTTP: freePort(t), HTTPS: freePort(t)}, Redis: redis}
	a.reloadErr = errors.New("listen https: address already in use")
	const want = "listener http is not up\nlistener https is not up\nhub: broker subscription not established yet"
	for range 20 { // a map would give another order sooner or later
		note, err := a.ready()
		if err == nil || err.Error() != want {
			t.Fatalf("ready() = %q, want %q", err, want)
		}
		if note != " (last reload failed: listen https: address already in use)" {
			t.Fatalf("note %q", note)
		}
	}
}

// TestFailedReloadLeavesNothingBehind: a reload that binds a new
// https address, adds a proxy route with health checks and then fails on
// a taken http port leaves no socket open on the new address and never
// starts the added route's health checks; the next good reload starts its
// own. A guard: edge got this right before the atomic reload too.
func TestFailedReloadLeavesNothingBehind(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path]++
		mu.Unlock()
	}))
	defer backend.Close()
	probes := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return seen[path]
	}
	httpAddr, httpsAddr, adminAddr, newHTTPS := freePort(t), freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	route := func(path string) string {
		return fmt.Sprintf("      - { path: %s, proxy: { upstreams: [%q], health_check: { path: %s, interval: 50ms, timeout: 40ms } } }\n", path, backend.URL, path)
	}
	conf := func(http, https, routes string) string {
		return fmt.Sprintf(reloadTLSYAML, http, https, adminAddr, filepath.Join(dir, "state"),
			"  - hosts: [a.test]\n    routes:\n"+routes)
	}
	cfg := writeFile(t, dir, "config.yaml", conf(httpAddr, httpsAddr, route("/old/")))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	writeFile(t, dir, "config.yaml", conf(taken.Addr().String(), newHTTPS, route("/old/")+route("/failed/")))
	if _, errOut, code := runEdge(t, "reload", "-config", cfg); code != 1 || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("edge reload onto a taken port = %d %q, want exit 1 with the bind error", code, errOut)
	}
	if c, err := net.DialTimeout("tcp", newHTTPS, time.Second); err == nil {
		c.Close()
		t.Errorf("the failed reload left %s listening", newHTTPS)
	}

	writeFile(t, dir, "config.yaml", conf(httpAddr, httpsAddr, route("/old/")+route("/good/")))
	if out, errOut, code := runEdge(t, "reload", "-config", cfg); code != 0 {
		t.Fatalf("good reload = %d %q %q", code, out, errOut)
	}
	deadline := time.Now().Add(10 * time.Second)
	for probes("/good/") < 3 {
		if time.Now().After(deadline) {
			t.Fatal("the good reload's health checks did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := probes("/failed/"); n != 0 {
		t.Errorf("the failed reload's route was health-checked %d times", n)
	}
}
