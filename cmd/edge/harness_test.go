package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"edge/internal/testutil"
)

// edgeBin is the edge binary the end-to-end tests run, built once with the
// race detector by TestMain.
var edgeBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "edge-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	edgeBin = filepath.Join(dir, "edge")
	build := exec.Command("go", "build", "-race", "-o", edgeBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building edge:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a loopback address with a port that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is the tests' one concurrent-safe output buffer.
type syncBuffer = testutil.Buffer

// edgeProc is a running edge binary.
type edgeProc struct {
	t       testing.TB
	cmd     *exec.Cmd
	dir     string // holds config.yaml and www/
	cfgPath string
	log     *syncBuffer
	done    chan struct{}
	exitErr error
}

// writeFile writes a file under dir, creating parents.
func writeFile(t testing.TB, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startEdge writes yaml as config.yaml in a temp dir (with www/ holding
// static/hello.txt) and runs "edge run" on it until the test ends.
func startEdge(t testing.TB, yaml string, env ...string) *edgeProc {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, dir, "www/static/hello.txt", "hello from edge\n")
	cfg := writeFile(t, dir, "config.yaml", yaml)
	return startEdgeAt(t, dir, cfg, env...)
}

func startEdgeAt(t testing.TB, dir, cfg string, env ...string) *edgeProc {
	t.Helper()
	p := &edgeProc{t: t, dir: dir, cfgPath: cfg, log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(edgeBin, "run", "-config", cfg)
	p.cmd.Dir = dir
	p.cmd.Env = append(append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data")), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("edge log:\n%s", p.log.String())
		}
	})
	return p
}

// signal sends sig to edge.
func (p *edgeProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait returns edge's exit code, failing the test if it does not exit
// within d.
func (p *edgeProc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		p.t.Fatalf("edge did not exit within %v", d)
		return -1
	}
}

// waitLog waits until edge's log contains s.
func (p *edgeProc) waitLog(s string, d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	for !strings.Contains(p.log.String(), s) {
		select {
		case <-p.done:
			p.t.Fatalf("edge exited (%v) before logging %q", p.exitErr, s)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("edge did not log %q within %v", s, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitHTTP polls url until it answers (any status).
func (p *edgeProc) waitHTTP(url string, d time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(d)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case <-p.done:
			p.t.Fatalf("edge exited (%v) before %s answered", p.exitErr, url)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not answer within %v: %v", url, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runEdge runs an edge subcommand to completion.
func runEdge(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, edgeBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatalf("edge %v: %v", args, err)
		}
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// httpGet returns status and body.
func httpGet(t testing.TB, c *http.Client, url string) (int, string) {
	t.Helper()
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
