package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/internal/testutil"
)

// TestReloadReleasesAccessLogs: an access-log file that a reload stopped
// naming, or that a failed reload opened, is closed (the generation's
// router lets go of it when the generation is retired); the file still
// named stays open.
func TestReloadReleasesAccessLogs(t *testing.T) {
	dir := t.TempDir()
	httpAddr, adminAddr := freePort(t), freePort(t)
	conf := func(http, log string) string {
		return fmt.Sprintf(`
listen: { http: "%s", https: "" }
admin: "%s"
sites:
  - access_log: { file: %s }
    routes: [{ path: /, static: { root: www } }]
`, http, adminAddr, filepath.Join(dir, log))
	}
	writeFile(t, dir, "www/index.html", "hi\n")
	cfg := writeFile(t, dir, "config.yaml", conf(httpAddr, "a.log"))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	held := func(name string) bool {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
		for _, fd := range fds {
			if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.cmd.Process.Pid, fd.Name())); err == nil && strings.HasSuffix(l, "/"+name) {
				return true
			}
		}
		return false
	}
	if !held("a.log") {
		t.Fatal("a.log not open after start")
	}

	// A reload that fails after building its router (a taken port).
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	writeFile(t, dir, "config.yaml", conf(taken.Addr().String(), "failed.log"))
	if _, _, code := runEdge(t, "reload", "-config", cfg); code != 1 {
		t.Fatalf("reload onto a taken port = %d, want 1", code)
	}
	testutil.WaitFor(t, 10*time.Second, "failed.log closed after the failed reload", func() bool { return !held("failed.log") })

	// A good reload to another file.
	writeFile(t, dir, "config.yaml", conf(httpAddr, "b.log"))
	if out, errOut, code := runEdge(t, "reload", "-config", cfg); code != 0 {
		t.Fatalf("reload = %d %q %q", code, out, errOut)
	}
	testutil.WaitFor(t, 10*time.Second, "a.log closed after the reload dropped it", func() bool { return !held("a.log") })
	if !held("b.log") {
		t.Error("b.log not open after the reload that names it")
	}
}
