package hub

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// nodeDir holds the Node tests of client.js and their locked dependencies.
const nodeDir = "testdata/node"

// npmCI installs the Node test dependencies when node_modules is missing.
func npmCI(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "ws", "package.json")); err == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = nodeDir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm ci in hub/%s: %v\n%s", nodeDir, err, out)
	}
}

// TestClientJS runs the Node tests of client.js (testdata/node) against a
// real hub: queued sends, reconnect, resubscribe with since, gap,
// heartbeat, backoff, tokens.
func TestClientJS(t *testing.T) {
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command (make test or .ci/run) installs Node 20 and npm", bin)
		}
	}
	npmCI(t)

	secret := []byte("client-js-test-secret-0123456789abcdef")
	e := newEnv(t, NodeOptions{}, `{ allow_publish: true }`)
	e.route(t, "/small/", `{ allow_publish: true, history: { size: 3 } }`, nil)
	e.route(t, "/jwt/", fmt.Sprintf(`{ auth: { mode: jwt, secret_file: %q } }`, writeFile(t, "secret", secret)), nil)
	e.mux.HandleFunc("POST /ctl/drop", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		e.n.mu.RLock()
		rt := e.n.routes[q.Get("route")]
		e.n.mu.RUnlock()
		if rt == nil {
			http.Error(w, "no such route", http.StatusNotFound)
			return
		}
		for _, c := range rt.snapshot() {
			c.nc.Close() // abrupt: no close frame
		}
		for _, p := range strings.Split(q.Get("publish"), ",") {
			if p == "" {
				continue
			}
			if _, err := e.n.Publish(r.Context(), q.Get("channel"), []byte(p)); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "js"}).SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// Run the file directly (node:test then runs in this one process, not
	// in a child), in its own process group so a timeout kills it all.
	cmd := exec.CommandContext(ctx, "node", "client.test.mjs")
	cmd.Dir = nodeDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "EDGE_HTTP="+e.http, "EDGE_TOKEN="+tok, "EDGE_SECRET="+string(secret))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node client.test.mjs: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}
