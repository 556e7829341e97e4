package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// dashboardYAML is an edge with HTTPS (local CA), a static route, a hub
// and a proxy route over a live and a dead upstream; extra is appended at
// the top level.
const dashboardYAML = `
listen: { http: "%s", https: "%s" }
admin: "%s"
tls: { ca: internal, storage: state }
server: { shutdown_timeout: 5s }
sites:
  - hosts: [localhost, 127.0.0.1]
    routes:
      - { path: /static/, static: { root: www } }
      - { path: /socket/, hub: { channels: [orders, visits] } }
      - path: /api/
        proxy: { upstreams: ["%s", "%s"], max_fails: 1, fail_timeout: 30s }
%s`

type dashEdge struct {
	p                           *edgeProc
	httpAddr, httpsAddr, admin  string
	client                      *http.Client // trusts edge's local CA
	backend, deadUpstream, path string
}

// startDashboardEdge starts edge with dashboardYAML and an HTTP backend.
func startDashboardEdge(t *testing.T, extra string) *dashEdge {
	t.Helper()
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "api ok")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	t.Cleanup(func() { backend.Close() })
	e := &dashEdge{httpAddr: freePort(t), httpsAddr: freePort(t), admin: freePort(t),
		backend: "http://" + ln.Addr().String(), deadUpstream: "http://" + freePort(t)}
	dir := t.TempDir()
	writeFile(t, dir, "www/static/hello.txt", "hello from edge\n")
	e.path = writeFile(t, dir, "config.yaml", fmt.Sprintf(dashboardYAML, e.httpAddr, e.httpsAddr, e.admin,
		e.backend, e.deadUpstream, extra))
	e.p = startEdgeAt(t, dir, e.path)
	e.p.waitHTTP("http://"+e.admin+"/healthz", 20*time.Second)
	pem, err := os.ReadFile(filepath.Join(dir, "state", "ca", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	e.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

// subscribe connects a hub client to channel over wss.
func (e *dashEdge) subscribe(t *testing.T, channel string) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: e.client.Transport.(*http.Transport).TLSClientConfig, HandshakeTimeout: 5 * time.Second}
	c, _, err := d.Dial("wss://localhost"+e.port()+"/socket/?channel="+channel, nil)
	if err != nil {
		t.Fatalf("dial hub: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	for _, want := range []string{"welcome", "subscribed"} {
		if m := readHub(t, c); m["type"] != want {
			t.Fatalf("hub sent %v, want %s", m, want)
		}
	}
	return c
}

// port is ":PORT" of the HTTPS listener.
func (e *dashEdge) port() string { return e.httpsAddr[strings.LastIndex(e.httpsAddr, ":"):] }

func (e *dashEdge) get(t *testing.T, path string) int {
	t.Helper()
	code, _ := httpGet(t, e.client, "https://localhost"+e.port()+path)
	return code
}

// dashJSON fetches /-/dashboard.json with the bearer key ("": none).
func dashJSON(t *testing.T, admin, key string) (int, string, dashboard) {
	t.Helper()
	hdr := map[string]string{}
	if key != "" {
		hdr["Authorization"] = "Bearer " + key
	}
	code, body := adminCall(t, "GET", "http://"+admin+"/-/dashboard.json", "", hdr, "")
	var d dashboard
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &d); err != nil {
			t.Fatalf("dashboard.json: %v\n%s", err, body)
		}
	}
	return code, body, d
}

// TestDashboardNeedsKey: with admin_key_file set, the dashboard page and
// its data answer 401 without the key, or with a wrong one, and their
// bodies hold nothing of the configuration or the traffic; a key in the
// query string is not accepted either (it would end up in logs and
// history). With the bearer key both answer. A foreign Host is 421 even
// with the key (DNS rebinding).
func TestDashboardNeedsKey(t *testing.T) {
	const key = "dashboard-key-0123456789"
	dir := t.TempDir()
	writeFile(t, dir, "admin.key", key+"\n")
	e := startDashboardEdge(t, "admin_key_file: "+filepath.Join(dir, "admin.key")+"\n")
	e.get(t, "/static/hello.txt")
	secrets := []string{"localhost", "/api/", e.backend, "hello.txt", "orders", `"classes"`, "edge local CA"}
	base := "http://" + e.admin
	for _, c := range []struct {
		name, url string
		hdr       map[string]string
	}{
		{"page without key", base + "/", nil},
		{"data without key", base + "/-/dashboard.json", nil},
		{"data with a wrong key", base + "/-/dashboard.json", map[string]string{"Authorization": "Bearer wrong"}},
		{"data with the key in the query", base + "/-/dashboard.json?key=" + key, nil},
		{"page with the key in the query", base + "/?key=" + key, nil},
		{"data with basic auth", base + "/-/dashboard.json", map[string]string{"Authorization": "Basic " + key}},
		{"HEAD page", base + "/", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			method := "GET"
			if strings.HasPrefix(c.name, "HEAD") {
				method = "HEAD"
			}
			code, body := adminCall(t, method, c.url, "", c.hdr, "")
			if code != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", code)
			}
			for _, s := range secrets {
				if strings.Contains(body, s) {
					t.Errorf("401 body leaks %q:\n%s", s, body)
				}
			}
		})
	}
	code, body := adminCall(t, "GET", base+"/", "", nil, "")
	if code != 401 || !strings.Contains(body, "Admin key required") {
		t.Errorf("page without key: %d, want 401 with the key prompt", code)
	}
	code, _, d := dashJSON(t, e.admin, key)
	if code != 200 || len(d.Sites) != 1 || d.Sites[0].Hosts[0] != "localhost" {
		t.Fatalf("with the key: %d %+v, want 200 with the site", code, d.Sites)
	}
	if code, _ := adminCall(t, "GET", base+"/", "", map[string]string{"Authorization": "Bearer " + key}, ""); code != 200 {
		t.Errorf("page with the key: %d, want 200", code)
	}
	if code, _ := adminCall(t, "GET", base+"/-/dashboard.json", "rebind.example:"+e.admin[strings.LastIndex(e.admin, ":")+1:],
		map[string]string{"Authorization": "Bearer " + key}, ""); code != http.StatusMisdirectedRequest {
		t.Errorf("foreign Host with the key: %d, want 421", code)
	}
}

// TestDashboardData: the numbers the dashboard shows come from the running
// process: requests by route and status class, the histogram, hub
// subscribers and messages per channel, a dead upstream marked down with
// its error next to the live one, the local CA certificates with their
// expiry, and the reload history with a failed reload and its reason.
func TestDashboardData(t *testing.T) {
	e := startDashboardEdge(t, "")
	for range 3 {
		if code := e.get(t, "/static/hello.txt"); code != 200 {
			t.Fatalf("static: %d", code)
		}
	}
	e.get(t, "/static/missing")
	for range 4 { // round robin reaches the dead upstream; the retry serves
		if code := e.get(t, "/api/x"); code != 200 {
			t.Fatalf("api: %d", code)
		}
	}
	ws := e.subscribe(t, "orders")
	if _, errOut, code := runEdge(t, "publish", "-config", e.path, "orders", `{"n":1}`); code != 0 {
		t.Fatalf("publish: %s", errOut)
	}
	readHub(t, ws)

	_, _, d := dashJSON(t, e.admin, "")
	var static, api bool
	for _, r := range d.Routes {
		switch r.Route {
		case "/static/":
			static = r.Classes["2xx"] == 3 && r.Classes["4xx"] == 1 && r.Count == 4 && r.Buckets[len(r.Buckets)-1] <= 4
		case "/api/":
			api = r.Classes["2xx"] == 4
		}
	}
	if !static || !api {
		t.Errorf("routes: %+v\nwant /static/ 3×2xx 1×4xx, /api/ 4×2xx", d.Routes)
	}
	if d.Hub.Local.Channels["orders"].Subscribers != 1 || d.Connections.Hub != 1 || d.Hub.Messages["orders"] != 1 || d.Hub.Broker != "memory" {
		t.Errorf("hub: %+v, want 1 subscriber and 1 message on orders", d.Hub)
	}
	if len(d.Upstreams) != 1 || len(d.Upstreams[0].Servers) != 2 {
		t.Fatalf("upstreams: %+v", d.Upstreams)
	}
	live, dead := d.Upstreams[0].Servers[0], d.Upstreams[0].Servers[1]
	if !live.Up || live.Failures != 0 || dead.Up || dead.Failures == 0 || !strings.Contains(dead.LastError, "connect_refused") {
		t.Errorf("upstreams: live %+v, dead %+v; want the dead one down with connect_refused", live, dead)
	}
	if len(d.Certs) != 2 {
		t.Errorf("certificates: %+v, want localhost and 127.0.0.1", d.Certs)
	}
	for _, c := range d.Certs {
		if !strings.Contains(c.Issuer, "edge local CA") || time.Until(c.NotAfter) < time.Hour {
			t.Errorf("certificate %+v: want the local CA's, valid", c)
		}
	}

	// A broken configuration: the reload fails and the history says why.
	good, _ := os.ReadFile(e.path)
	os.WriteFile(e.path, append(good, []byte("bogus_key: 1\n")...), 0o644)
	if code, _ := adminCall(t, "POST", "http://"+e.admin+"/-/reload", "", nil, ""); code != 422 {
		t.Fatalf("reload of a broken config: %d, want 422", code)
	}
	os.WriteFile(e.path, good, 0o644)
	e.p.signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, _, d = dashJSON(t, e.admin, "")
		if len(d.Reloads) == 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(d.Reloads) != 3 || d.Reloads[0].By != "start" || !d.Reloads[0].OK ||
		d.Reloads[1].By != "admin" || d.Reloads[1].OK || !strings.Contains(d.Reloads[1].Error, "bogus_key") ||
		d.Reloads[2].By != "signal" || !d.Reloads[2].OK {
		t.Errorf("reloads: %+v, want start ok, admin failed (bogus_key), signal ok", d.Reloads)
	}
}

// TestBrowserDashboard opens the dashboard in Chromium: with a key set it
// first shows only the key prompt (401, no numbers), then with the key
// its request total and hub subscriber count move while the test makes
// traffic, and the screenshot goes to docs/dashboard.png (with
// -screenshots; a temporary file otherwise).
func TestBrowserDashboard(t *testing.T) {
	for _, bin := range []string{"chromium", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command installs it (make test)", bin)
		}
	}
	npmDeps(t, "testdata/browser")
	const key = "browser-dashboard-key-42"
	dir := t.TempDir()
	writeFile(t, dir, "admin.key", key)
	e := startDashboardEdge(t, "admin_key_file: "+filepath.Join(dir, "admin.key")+"\n")
	shot := screenshotPath(t, "dashboard.png")

	node := exec.Command("node", "dashboard.js", "http://"+e.admin+"/", t.TempDir(), shot, key)
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
	timer := time.AfterFunc(90*time.Second, func() { node.Process.Kill() })
	defer timer.Stop()

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	lines := bufio.NewScanner(out)
	var res struct {
		Ready             bool
		FirstStatus       int
		LockedTotal       string
		LockedSites       int
		URL               string
		Total0, Total1    int
		Subs0, Subs1      int
		RPS, Latency      string
		Upstreams, Certs  []string
		Reloads, Channels []string
		Errors            []string
		Error             string
	}
	for lines.Scan() {
		if err := json.Unmarshal(lines.Bytes(), &res); err != nil {
			t.Fatalf("dashboard.js printed %q", lines.Text())
		}
		if !res.Ready {
			break
		}
		res.Ready = false
		// Traffic until the page has seen it: requests, two hub clients,
		// messages.
		e.subscribe(t, "orders")
		e.subscribe(t, "visits")
		wg.Go(func() {
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				paths := []string{"/static/hello.txt", "/api/orders", "/static/nope", "/"}
				req, _ := http.NewRequestWithContext(ctx, "GET", "https://localhost"+e.port()+paths[i%len(paths)], nil)
				if resp, err := e.client.Do(req); err == nil {
					resp.Body.Close()
				}
				if i%5 == 0 {
					adminCall(t, "POST", "http://"+e.admin+"/publish/orders", "", map[string]string{"Authorization": "Bearer " + key}, `{"n":1}`)
				}
			}
		})
	}
	node.Wait()
	t.Logf("browser: %+v", res)
	if res.Error != "" || len(res.Errors) > 0 {
		t.Fatalf("browser: %s %v", res.Error, res.Errors)
	}
	if res.FirstStatus != 401 || res.LockedTotal != "–" || res.LockedSites != 0 {
		t.Errorf("without the key: status %d, total %q, %d config rows; want 401, no numbers, no configuration",
			res.FirstStatus, res.LockedTotal, res.LockedSites)
	}
	if strings.Contains(res.URL, key) {
		t.Errorf("the key stayed in the address bar: %s", res.URL)
	}
	if res.Total1 <= res.Total0 || res.Subs1 < res.Subs0+2 {
		t.Errorf("numbers did not move: total %d -> %d, subscribers %d -> %d", res.Total0, res.Total1, res.Subs0, res.Subs1)
	}
	if len(res.Certs) != 2 || !strings.Contains(strings.Join(res.Upstreams, "\n"), "down") {
		t.Errorf("certificates %q, upstreams %q: want two certificates and the dead upstream down", res.Certs, res.Upstreams)
	}
	if _, err := os.Stat(shot); err != nil {
		t.Errorf("screenshot: %v", err)
	}
}

// screenshots makes the browser tests write their pictures into docs/
// (make screenshots); by default they go to a temporary directory, so that
// a test run leaves the tree as it was.
var screenshots = flag.Bool("screenshots", false, "write the browser tests' screenshots to docs/")

// screenshotPath is where a browser test saves the picture name.
func screenshotPath(t *testing.T, name string) string {
	t.Helper()
	if !*screenshots {
		return filepath.Join(t.TempDir(), name)
	}
	p, err := filepath.Abs(filepath.Join("..", "..", "docs", name))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Dir(p), 0o755)
	return p
}
