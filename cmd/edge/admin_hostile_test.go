package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// adminYAML runs a hub route on the http listener and the admin listener
// with pprof; extra is appended at the top level.
const adminYAML = `
listen: { http: "%s" }
admin: "%s"
server: { shutdown_timeout: 5s, pprof: true }
sites:
  - routes:
      - { path: /socket/, hub: { channels: [orders] } }
%s`

// adminEdge starts edge with adminYAML and returns it with its http and
// admin addresses.
func adminEdge(t *testing.T, extra string) (p *edgeProc, httpAddr, adminAddr string) {
	t.Helper()
	httpAddr, adminAddr = freePort(t), freePort(t)
	p = startEdge(t, fmt.Sprintf(adminYAML, httpAddr, adminAddr, extra))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	return p, httpAddr, adminAddr
}

// adminCall sends one request to the admin listener with the given Host
// ("" keeps the address) and headers, and returns the status and body.
func adminCall(t *testing.T, method, url, host string, hdr map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// subscribe connects a hub client to channel through the http listener.
func subscribe(t *testing.T, httpAddr, channel string) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.DefaultDialer.Dial("ws://"+httpAddr+"/socket/?channel="+channel, nil)
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

func readHub(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var m map[string]any
	if err := c.ReadJSON(&m); err != nil {
		t.Fatalf("read hub: %v", err)
	}
	return m
}

// TestHostileAdminRebindingHost: without a key, a request whose Host is a
// foreign name (DNS rebinding) gets 421 on every endpoint, reload included,
// and nothing is reloaded; the listener's own names still work.
func TestHostileAdminRebindingHost(t *testing.T) {
	p, _, admin := adminEdge(t, "")
	base := "http://" + admin
	_, port, _ := strings.Cut(admin, ":")
	for _, tc := range []struct{ method, path string }{
		{"POST", "/-/reload"}, {"POST", "/publish/orders"}, {"GET", "/hub/stats"},
		{"GET", "/debug/pprof/"}, {"GET", "/metrics"}, {"GET", "/healthz"},
	} {
		for _, host := range []string{"rebind.evil.example", "rebind.evil.example:" + port, "localhost.evil.example:" + port} {
			if code, _ := adminCall(t, tc.method, base+tc.path, host, nil, "x"); code != http.StatusMisdirectedRequest {
				t.Errorf("%s %s Host %s = %d, want 421", tc.method, tc.path, host, code)
			}
		}
	}
	if strings.Contains(p.log.String(), "msg=reloaded") {
		t.Error("a rebinding request reloaded edge")
	}
	for _, host := range []string{"", "localhost:" + port, "localhost", "127.0.0.1", "[::1]:" + port, "LOCALHOST."} {
		if code, _ := adminCall(t, "GET", base+"/hub/stats", host, nil, ""); code != 200 {
			t.Errorf("GET /hub/stats Host %q = %d, want 200", host, code)
		}
	}
	if code, body := adminCall(t, "POST", base+"/-/reload", "localhost:"+port, nil, ""); code != 200 {
		t.Errorf("reload with Host localhost = %d %q, want 200", code, body)
	}
	if code, _ := adminCall(t, "GET", base+"/hub/stats", "127.0.0.1:1", nil, ""); code != http.StatusMisdirectedRequest {
		t.Errorf("another port: %d, want 421", code)
	}
}

// TestHostileAdminCrossSitePublish: without a key, a web page's cross-site
// POST /publish/orders (a simple text/plain request) is refused with 403
// and no subscriber receives it; the admin page's own origin and
// non-browser clients (edge publish) still publish.
func TestHostileAdminCrossSitePublish(t *testing.T) {
	p, httpAddr, admin := adminEdge(t, "")
	sub := subscribe(t, httpAddr, "orders")
	url := "http://" + admin + "/publish/orders"
	for name, hdr := range map[string]map[string]string{
		"origin":           {"Origin": "https://evil.example", "Content-Type": "text/plain"},
		"origin null":      {"Origin": "null"},
		"fetch metadata":   {"Sec-Fetch-Site": "cross-site"},
		"same-site":        {"Sec-Fetch-Site": "same-site"},
		"other port":       {"Origin": "http://localhost:3000"},
		"rebinding origin": {"Origin": "http://rebind.evil.example:" + strings.Split(admin, ":")[1]},
	} {
		if code, _ := adminCall(t, "POST", url, "", hdr, `{"evil":"`+name+`"}`); code != http.StatusForbidden {
			t.Errorf("%s: POST /publish/orders = %d, want 403", name, code)
		}
	}
	if code, _ := adminCall(t, "POST", "http://"+admin+"/-/reload", "", map[string]string{"Origin": "https://evil.example"}, ""); code != http.StatusForbidden {
		t.Errorf("cross-site reload = %d, want 403", code)
	}
	// A page on another site cannot kick the users off either.
	if code, _ := adminCall(t, "POST", "http://"+admin+"/hub/disconnect", "", map[string]string{"Origin": "https://evil.example"}, `{"all":true}`); code != http.StatusForbidden {
		t.Errorf("cross-site disconnect = %d, want 403", code)
	}
	// Reads stay open to pages (GET changes nothing).
	if code, _ := adminCall(t, "GET", "http://"+admin+"/healthz", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, ""); code != 200 {
		t.Errorf("cross-site GET /healthz = %d, want 200", code)
	}
	own := map[string]string{"Origin": "http://" + admin, "Sec-Fetch-Site": "same-origin"}
	if code, body := adminCall(t, "POST", url, "", own, `"own"`); code != 202 {
		t.Errorf("same-origin publish = %d %q, want 202", code, body)
	}
	if _, errOut, code := runEdge(t, "publish", "-config", p.cfgPath, "orders", `"cli"`); code != 0 {
		t.Fatalf("edge publish: exit %d: %s", code, errOut)
	}
	// The refused posts are not ahead of these in the subscriber's stream.
	for _, want := range []string{"own", "cli"} {
		if m := readHub(t, sub); m["data"] != want {
			t.Fatalf("subscriber got %v, want data %q (a refused publish got through?)", m, want)
		}
	}
}

// TestHostileAdminKeyCoversEverything: with a key, every endpoint but the
// probes needs it: pprof, /hub/stats, /publish, /-/reload; /healthz,
// /readyz and /metrics stay open; the Host check applies too.
func TestHostileAdminKeyCoversEverything(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "admin.key", "s3cret\n")
	writeFile(t, dir, "www/static/hello.txt", "hello\n")
	httpAddr, admin := freePort(t), freePort(t)
	cfg := writeFile(t, dir, "config.yaml", fmt.Sprintf(adminYAML, httpAddr, admin, "admin_key_file: admin.key\n"))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+admin+"/healthz", 20*time.Second)
	base := "http://" + admin
	guarded := []struct{ method, path string }{
		{"GET", "/debug/pprof/"}, {"GET", "/debug/pprof/cmdline"}, {"GET", "/hub/stats"},
		{"POST", "/publish/orders"}, {"POST", "/-/reload"}, {"GET", "/nothing-here"},
		{"POST", "/hub/disconnect"}, {"POST", "/hub/unsubscribe"}, {"GET", "/hub/connections"},
	}
	for _, tc := range guarded {
		for _, auth := range []string{"", "Bearer wrong", "Basic czNjcmV0", "Bearer", "s3cret"} {
			code, _ := adminCall(t, tc.method, base+tc.path, "", map[string]string{"Authorization": auth}, "x")
			if code != http.StatusUnauthorized {
				t.Errorf("%s %s Authorization %q = %d, want 401", tc.method, tc.path, auth, code)
			}
		}
	}
	key := map[string]string{"Authorization": "Bearer s3cret"}
	for _, path := range []string{"/debug/pprof/", "/hub/stats"} {
		if code, _ := adminCall(t, "GET", base+path, "", key, ""); code != 200 {
			t.Errorf("GET %s with key = %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		if code, _ := adminCall(t, "GET", base+path, "", nil, ""); code != 200 {
			t.Errorf("GET %s without key = %d, want 200", path, code)
		}
		if code, _ := adminCall(t, "GET", base+path, "rebind.evil.example", nil, ""); code != http.StatusMisdirectedRequest {
			t.Errorf("GET %s rebinding Host = %d, want 421", path, code)
		}
	}
	if code, _ := adminCall(t, "POST", base+"/publish/orders", "rebind.evil.example", key, "x"); code != http.StatusMisdirectedRequest {
		t.Errorf("keyed publish with rebinding Host = %d, want 421", code)
	}
	cross := map[string]string{"Authorization": "Bearer s3cret", "Origin": "https://evil.example"}
	if code, _ := adminCall(t, "POST", base+"/publish/orders", "", cross, "x"); code != http.StatusForbidden {
		t.Errorf("keyed cross-site publish = %d, want 403", code)
	}
	// The CLI reads the key file and sends a proper Host.
	if out, errOut, code := runEdge(t, "publish", "-config", p.cfgPath, "orders", "x"); code != 0 {
		t.Errorf("edge publish: exit %d: %s %s", code, out, errOut)
	}
	if out, errOut, code := runEdge(t, "reload", "-config", p.cfgPath); code != 0 || !strings.Contains(out, "reloaded") {
		t.Errorf("edge reload: exit %d: %s %s", code, out, errOut)
	}
}

// TestHostileAdminLowercaseBearer: the bearer scheme is case-insensitive
// on every endpoint, reload included (it was refused there and accepted on
// /publish).
func TestHostileAdminLowercaseBearer(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "admin.key", "s3cret\n")
	writeFile(t, dir, "www/static/hello.txt", "hello\n")
	httpAddr, admin := freePort(t), freePort(t)
	cfg := writeFile(t, dir, "config.yaml", fmt.Sprintf(adminYAML, httpAddr, admin, "admin_key_file: admin.key\n"))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+admin+"/healthz", 20*time.Second)
	sub := subscribe(t, httpAddr, "orders")
	for _, auth := range []string{"bearer s3cret", "BEARER s3cret", "Bearer  s3cret "} {
		hdr := map[string]string{"Authorization": auth}
		if code, body := adminCall(t, "POST", "http://"+admin+"/-/reload", "", hdr, ""); code != 200 || !strings.Contains(body, "reloaded") {
			t.Errorf("reload with %q = %d %q, want 200 reloaded", auth, code, body)
		}
		code, body := adminCall(t, "POST", "http://"+admin+"/publish/orders", "", hdr, `"lower"`)
		var res struct{ Seq uint64 }
		if json.Unmarshal([]byte(body), &res); code != 202 || res.Seq == 0 {
			t.Errorf("publish with %q = %d %q, want 202", auth, code, body)
		}
		if m := readHub(t, sub); m["data"] != "lower" {
			t.Errorf("subscriber got %v", m)
		}
	}
}

// TestCLIDisconnectAndUnsubscribe: edge connections lists the hub's
// connections, edge unsubscribe takes them out of a channel and edge
// disconnect closes them with the code and reason given, through the
// running edge's admin listener; a bad order is refused with the reason.
func TestCLIDisconnectAndUnsubscribe(t *testing.T) {
	p, httpAddr, _ := adminEdge(t, "")
	c := subscribe(t, httpAddr, "orders")
	out, errOut, code := runEdge(t, "connections", "-config", p.cfgPath)
	if code != 0 || !strings.Contains(out, `"orders"`) || !strings.Contains(out, `"route": "/socket/"`) {
		t.Fatalf("edge connections: exit %d: %s %s", code, out, errOut)
	}
	if _, errOut, code := runEdge(t, "unsubscribe", "-config", p.cfgPath, "-all", "-channel", "orders"); code != 0 {
		t.Fatalf("edge unsubscribe: exit %d: %s", code, errOut)
	}
	if m := readHub(t, c); m["type"] != "unsubscribed" || m["channel"] != "orders" || m["reason"] != "server" {
		t.Fatalf("after edge unsubscribe the client got %v", m)
	}
	if _, errOut, code := runEdge(t, "disconnect", "-config", p.cfgPath, "-all", "-code", "5000"); code == 0 || !strings.Contains(errOut, "4000") {
		t.Errorf("edge disconnect -code 5000: exit %d %q, want refused naming the range", code, errOut)
	}
	if _, errOut, code := runEdge(t, "disconnect", "-config", p.cfgPath, "-all", "-reason", "maintenance", "-no-reconnect"); code != 0 {
		t.Fatalf("edge disconnect: exit %d: %s", code, errOut)
	}
	if m := readHub(t, c); m["type"] != "disconnect" || m["reason"] != "maintenance" || m["reconnect"] != false {
		t.Fatalf("after edge disconnect the client got %v", m)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != 4000 || ce.Text != "maintenance" {
		t.Errorf("close: %v, want 4000 maintenance", err)
	}
}
