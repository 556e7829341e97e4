package main

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"edge/internal/testpeer"
)

func TestVersion(t *testing.T) {
	out, _, code := runEdge(t, "version")
	if code != 0 || !strings.HasPrefix(out, "edge ") || !strings.Contains(out, runtime.Version()) || !strings.Contains(out, "commit ") {
		t.Errorf("edge version = %d %q, want version, commit and %s", code, out, runtime.Version())
	}
}

func TestHelp(t *testing.T) {
	for _, cmd := range []string{"run", "validate", "reload", "publish", "trust", "version", "disconnect", "unsubscribe", "connections"} {
		_, errOut, code := runEdge(t, cmd, "-h")
		if code != 0 || !strings.Contains(errOut, "Usage: edge "+cmd) {
			t.Errorf("edge %s -h = %d %q, want usage and exit 0", cmd, code, errOut)
		}
	}
	if _, errOut, code := runEdge(t, "frobnicate"); code != 1 || !strings.Contains(errOut, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "www/x", "x")
	good := writeFile(t, dir, "good.yaml", `
listen: { http: "127.0.0.1:8080" }
sites:
  - routes: [{ path: /static/, static: { root: www } }]
`)
	out, errOut, code := runEdge(t, "validate", "-config", good)
	if code != 0 || out != "configuration OK\n" || errOut != "" {
		t.Errorf("valid file: code %d, stdout %q, stderr %q; want 0 and one line", code, out, errOut)
	}
	bad := writeFile(t, dir, "bad.yaml", `
listen: { http: "127.0.0.1:8080", htps: ":443" }
sites:
  - routes:
      - { path: static, static: { root: nowhere } }
`)
	out, errOut, code = runEdge(t, "validate", "-config", bad)
	want := []string{
		bad + `:2:35: listen.htps: unknown key "htps" (did you mean "https"?)`,
		bad + `:5:11: sites[0].routes[0].path: path "static" must start with /`,
		bad + `:5:35: sites[0].routes[0].static.root: directory ` + filepath.Join(dir, "nowhere") + `: no such file or directory`,
	}
	if code != 1 || out != "" || errOut != strings.Join(want, "\n")+"\n" {
		t.Errorf("broken file: code %d, stdout %q, stderr:\n%s\nwant exit 1 and:\n%s", code, out, errOut, strings.Join(want, "\n"))
	}
	// $EDGE_CONFIG is the default -config.
	cmd := fmt.Sprintf("EDGE_CONFIG=%s %s validate", good, edgeBin)
	if b, err := execShell(cmd); err != nil || string(b) != "configuration OK\n" {
		t.Errorf("EDGE_CONFIG: %q %v", b, err)
	}
}

func TestRunRefusesBrokenConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "c.yaml", "sites: []\n")
	_, errOut, code := runEdge(t, "run", "-config", cfg)
	if code != 1 || !strings.Contains(errOut, "c.yaml:1:1: sites: no sites") {
		t.Errorf("run on a broken file: %d %q", code, errOut)
	}
}

const staticYAML = `
listen: { http: "%s" }
admin: "%s"
server: { shutdown_timeout: 5s }
sites:
  - routes:
      - path: /static/
        static: { root: www }
`

func TestRunServesAndStops(t *testing.T) {
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(staticYAML, httpAddr, adminAddr))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	if code, body := httpGet(t, nil, "http://"+httpAddr+"/static/hello.txt"); code != 200 || body != "hello from edge\n" {
		t.Fatalf("GET /static/hello.txt = %d %q", code, body)
	}
	if code, _ := httpGet(t, nil, "http://"+adminAddr+"/readyz"); code != 200 {
		t.Errorf("readyz = %d, want 200", code)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	if _, err := net.DialTimeout("tcp", httpAddr, time.Second); err == nil {
		t.Error("still listening after exit")
	}
	if log := p.log.String(); strings.Contains(log, "level=WARN") || strings.Contains(log, "level=ERROR") {
		t.Errorf("a clean start and stop logged warnings:\n%s", log)
	}
}

// TestReloadKeepsServingOnBrokenConfig: a SIGHUP with a broken file logs
// every problem and keeps the old configuration; a good file then swaps the
// routes in.
func TestReloadKeepsServingOnBrokenConfig(t *testing.T) {
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(staticYAML, httpAddr, adminAddr))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	writeFile(t, p.dir, "config.yaml", "listen: { http: 5 }\nsites: [{routes: [{path: nope}]}]\n")
	p.signal(syscall.SIGHUP)
	p.waitLog("reload failed; still serving the previous configuration", 10*time.Second)
	if !strings.Contains(p.log.String(), `config.yaml:2:20: sites[0].routes[0].path: path \"nope\" must start with /`) {
		t.Errorf("log lacks the problem with file:line:col:\n%s", p.log.String())
	}
	if code, _ := httpGet(t, nil, "http://"+httpAddr+"/static/hello.txt"); code != 200 {
		t.Fatalf("after a failed reload GET = %d, want the old config serving", code)
	}
	writeFile(t, p.dir, "www/files/new.txt", "new route\n")
	writeFile(t, p.dir, "config.yaml", fmt.Sprintf(staticYAML, httpAddr, adminAddr)+`
      - path: /files/
        static: { alias: www/files }
`)
	p.signal(syscall.SIGHUP)
	p.waitLog("msg=reloaded", 10*time.Second)
	if code, body := httpGet(t, nil, "http://"+httpAddr+"/files/new.txt"); code != 200 || body != "new route\n" {
		t.Errorf("after reload GET /files/new.txt = %d %q", code, body)
	}
}

func TestReloadCommand(t *testing.T) {
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(staticYAML, httpAddr, adminAddr))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	out, errOut, code := runEdge(t, "reload", "-config", p.cfgPath)
	if code != 0 || out != "reloaded\n" {
		t.Errorf("edge reload = %d %q %q, want reloaded", code, out, errOut)
	}
	// A port already taken: the reload fails and the old config serves.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	writeFile(t, p.dir, "config.yaml", fmt.Sprintf(staticYAML, taken.Addr().String(), adminAddr))
	_, errOut, code = runEdge(t, "reload", "-config", p.cfgPath)
	if code != 1 || !strings.Contains(errOut, "address already in use") {
		t.Errorf("reload onto a taken port = %d %q, want exit 1 naming the cause", code, errOut)
	}
	if code, _ := httpGet(t, nil, "http://"+httpAddr+"/static/hello.txt"); code != 200 {
		t.Errorf("old listener after failed reload: %d", code)
	}
}

func TestReloadCommandWithoutInstance(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "www/x", "x")
	cfg := writeFile(t, dir, "c.yaml", fmt.Sprintf(staticYAML, freePort(t), freePort(t)))
	_, errOut, code := runEdge(t, "reload", "-config", cfg)
	if code != 1 || !strings.Contains(errOut, "no running edge answers on the admin listener") {
		t.Errorf("reload without edge running = %d %q", code, errOut)
	}
}

// TestReloadUnderLoad reloads ten times while a client sends requests
// continuously over keep-alive and fresh connections: none may fail.
func TestReloadUnderLoad(t *testing.T) {
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(staticYAML, httpAddr, adminAddr))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	stop := make(chan struct{})
	type result struct {
		ok, failed int
		firstErr   string
	}
	results := make(chan result, 2)
	for _, keepAlive := range []bool{true, false} {
		go func() {
			c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: !keepAlive}}
			var r result
			for {
				select {
				case <-stop:
					results <- r
					return
				default:
				}
				resp, err := c.Get("http://" + httpAddr + "/static/hello.txt")
				if err == nil && resp.StatusCode == 200 {
					r.ok++
				} else {
					r.failed++
					if r.firstErr == "" {
						r.firstErr = fmt.Sprint(err, resp)
					}
				}
				if resp != nil {
					resp.Body.Close()
				}
			}
		}()
	}
	for i := 0; i < 10; i++ {
		if _, errOut, code := runEdge(t, "reload", "-config", p.cfgPath); code != 0 {
			t.Fatalf("reload %d: %s", i, errOut)
		}
	}
	close(stop)
	for i := 0; i < 2; i++ {
		r := <-results
		if r.failed != 0 || r.ok == 0 {
			t.Errorf("during 10 reloads: %d ok, %d failed (first: %s)", r.ok, r.failed, r.firstErr)
		}
	}
}

// TestNotify checks the sd_notify protocol on a socket the test owns:
// READY once listening, RELOADING then READY around a reload, WATCHDOG
// pings, STOPPING on SIGTERM.
func TestNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := ln.ReadFromUnix(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	expect := func(prefix string) {
		t.Helper()
		deadline := time.After(15 * time.Second)
		for {
			select {
			case m := <-msgs:
				if strings.HasPrefix(m, prefix) {
					return
				}
			case <-deadline:
				t.Fatalf("no %q notification", prefix)
			}
		}
	}
	httpAddr, adminAddr := freePort(t), freePort(t)
	p := startEdge(t, fmt.Sprintf(staticYAML, httpAddr, adminAddr), "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=400000")
	expect("READY=1")
	if c, err := net.DialTimeout("tcp", httpAddr, time.Second); err != nil {
		t.Errorf("READY=1 sent before the listener accepts: %v", err)
	} else {
		c.Close()
	}
	expect("WATCHDOG=1")
	p.signal(syscall.SIGHUP)
	expect("RELOADING=1")
	expect("READY=1")
	p.signal(syscall.SIGTERM)
	expect("STOPPING=1")
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

func execShell(cmd string) ([]byte, error) {
	return exec.Command("sh", "-c", cmd).Output()
}

// TestValidateRedisStorage: with tls.storage redis, validate connects to
// Redis: unreachable is an error at tls.storage, reachable passes.
func TestValidateRedisStorage(t *testing.T) {
	srv := testpeer.StartRedis(t)
	dir := t.TempDir()
	cfg := writeFile(t, dir, "edge.yaml", fmt.Sprintf(`
listen: { http: "127.0.0.1:8080", https: "127.0.0.1:8443" }
tls:
  ca: internal
  storage: redis
redis: { url: %q }
sites:
  - hosts: [localhost]
    routes: [{ path: /, respond: { status: 200, body: ok } }]
`, srv.URL()))
	out, errOut, code := runEdge(t, "validate", "-config", cfg)
	if code != 0 || out != "configuration OK\n" {
		t.Fatalf("redis up: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	srv.Kill()
	out, errOut, code = runEdge(t, "validate", "-config", cfg)
	want := cfg + ":5:3: tls.storage: redis at " + srv.URL() + " unreachable: "
	if code != 1 || out != "" || !strings.HasPrefix(errOut, want) || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "connection refused") {
		t.Errorf("redis down: code %d, stdout %q, stderr %q; want exit 1 and %q…connection refused", code, out, errOut, want)
	}
}
