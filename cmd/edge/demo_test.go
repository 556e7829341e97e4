package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// demoState is what testdata/browser/demo.js reports of the demo page.
type demoState struct {
	Orders, Views, Countries, Products int
	Shops, Status, Transport           string
	Opens, Gaps, Closes                int
}

// demoPage drives demo.js: one command in, one JSON line out.
type demoPage struct {
	t   *testing.T
	in  io.Writer
	out *bufio.Scanner
}

func (d *demoPage) send(cmd map[string]any) map[string]json.RawMessage {
	d.t.Helper()
	b, _ := json.Marshal(cmd)
	fmt.Fprintf(d.in, "%s\n", b)
	if !d.out.Scan() {
		d.t.Fatalf("demo.js ended without answering %s", b)
	}
	var res map[string]json.RawMessage
	if err := json.Unmarshal(d.out.Bytes(), &res); err != nil {
		d.t.Fatalf("demo.js printed %q", d.out.Text())
	}
	return res
}

// wait waits until the JS expression is true on the page and returns its
// state; what names the step in a failure.
func (d *demoPage) wait(what, expr string) demoState {
	d.t.Helper()
	res := d.send(map[string]any{"wait": expr, "timeout": 30000})
	var st demoState
	json.Unmarshal(res["state"], &st)
	if e, ok := res["error"]; ok {
		d.t.Fatalf("%s: %s (page: %+v)", what, e, st)
	}
	if e := string(res["errors"]); e != "" && e != "[]" {
		d.t.Fatalf("%s: page errors %s", what, e)
	}
	return st
}

// TestBrowserDemo runs the big-screen demo as a user would: the shipped
// examples/dashboard/edge.yaml (on free ports), Chromium trusting edge's
// local CA, and the real generator publishing orders and visits through
// the admin API. The numbers move; a reload (SIGHUP) keeps the page's
// WebSocket; a disconnect makes client.js reconnect and recover what was
// published meanwhile with since, without a gap; a restart of edge on the
// same ports is survived (the page reconnects and counts on). The final
// picture goes to docs/demo.png (with -screenshots).
func TestBrowserDemo(t *testing.T) {
	for _, bin := range []string{"chromium", "certutil", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command installs it (make test)", bin)
		}
	}
	npmDeps(t, "testdata/browser")
	dir := t.TempDir()
	gen := filepath.Join(dir, "generator")
	if out, err := exec.Command("go", "build", "-o", gen, "../../examples/dashboard/generator").CombinedOutput(); err != nil {
		t.Fatalf("building the generator: %v\n%s", err, out)
	}
	src, err := os.ReadFile("../../examples/dashboard/edge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	www, _ := filepath.Abs("../../examples/dashboard/www")
	httpAddr, httpsAddr, admin := freePort(t), freePort(t), freePort(t)
	cfgText := strings.NewReplacer(`"127.0.0.1:8081"`, `"`+httpAddr+`"`, `"127.0.0.1:8444"`, `"`+httpsAddr+`"`,
		`"127.0.0.1:9181"`, `"`+admin+`"`, "root: www", "root: "+www,
		"ca: internal", "ca: internal\n  storage: "+filepath.Join(dir, "state")).Replace(string(src))
	if !strings.Contains(cfgText, httpsAddr) || !strings.Contains(cfgText, www) {
		t.Fatalf("examples/dashboard/edge.yaml changed shape; the test cannot move it to free ports:\n%s", cfgText)
	}
	cfg := writeFile(t, dir, "edge.yaml", cfgText)
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+admin+"/healthz", 20*time.Second)
	generate := func(orders int) {
		t.Helper()
		out, err := exec.Command(gen, "-admin", "http://"+admin, "-orders", fmt.Sprint(orders), "-rate", "40", "-for", "20s", "-q").CombinedOutput()
		if err != nil {
			t.Fatalf("generator: %v\n%s", err, out)
		}
	}

	_, port, _ := strings.Cut(httpsAddr, ":")
	node := exec.Command("node", "demo.js", "https://localhost:"+port+"/", filepath.Join(dir, "state", "ca", "root.crt"), t.TempDir())
	node.Dir = "testdata/browser"
	node.Stderr = os.Stderr
	in, _ := node.StdinPipe()
	out, _ := node.StdoutPipe()
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		fmt.Fprintln(in, `{"quit":true}`)
		in.Close()
		node.Wait()
	}()
	timer := time.AfterFunc(3*time.Minute, func() { node.Process.Kill() })
	defer timer.Stop()
	d := &demoPage{t: t, in: in, out: bufio.NewScanner(out)}
	if !d.out.Scan() || !strings.Contains(d.out.Text(), `"status":200`) {
		t.Fatalf("loading the demo: %s", d.out.Text())
	}
	d.wait("page live", `document.getElementById('status').textContent === 'live'`)

	// The numbers move.
	generate(40)
	st := d.wait("orders on the page", `Number(document.getElementById('orders').textContent) >= 40 && document.getElementById('shops').textContent !== '–'`)
	if st.Orders != 40 || st.Views < 300 || st.Countries == 0 || st.Products == 0 || st.Transport != "websocket" {
		t.Fatalf("after 40 orders: %+v; want 40 orders, about 320 views, countries and products listed over websocket", st)
	}

	// A reload keeps the connection.
	p.signal(syscall.SIGHUP)
	p.waitLog("reloaded", 10*time.Second)
	generate(5)
	st = d.wait("orders after the reload", `Number(document.getElementById('orders').textContent) >= 45`)
	if st.Orders != 45 || st.Opens != 1 || st.Closes != 0 {
		t.Fatalf("after a reload: %+v; want 45 orders on the first connection", st)
	}

	// A dropped connection recovers what it missed with since, gap-free.
	if code, body := adminCall(t, "POST", "http://"+admin+"/hub/disconnect", "", nil, `{"all":true,"reason":"test"}`); code != 202 {
		t.Fatalf("disconnect: %d %s", code, body)
	}
	d.wait("connection dropped", `Number(document.body.dataset.closes) >= 1`)
	generate(5) // while client.js waits to reconnect (backoff from 500 ms)
	st = d.wait("recovered orders", `Number(document.getElementById('orders').textContent) >= 50 && document.body.dataset.opens === '2'`)
	if st.Orders != 50 || st.Gaps != 0 {
		t.Fatalf("after a disconnect: %+v; want 50 orders, recovered without a gap", st)
	}

	// A restart on the same ports: the page reconnects on its own and
	// counts on (the new process has a new history: a gap, not a reset).
	p.signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("edge exited with %d on SIGTERM", code)
	}
	d.wait("page notices the restart", `document.getElementById('status').textContent !== 'live'`)
	p = startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+admin+"/healthz", 20*time.Second)
	d.wait("page back", `document.getElementById('status').textContent === 'live' && Number(document.body.dataset.opens) >= 3`)
	generate(30)
	st = d.wait("orders after the restart", `Number(document.getElementById('orders').textContent) >= 80`)
	if st.Orders != 80 {
		t.Fatalf("after a restart: %+v; want 80 orders", st)
	}
	t.Logf("page after restart: %+v", st)

	shot := screenshotPath(t, "demo.png")
	if res := d.send(map[string]any{"shot": shot}); string(res["shot"]) != "true" {
		t.Fatalf("screenshot: %v", res)
	}
}
