package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// echoBackend is a loopback backend: GET /api/... answers "backend <path>",
// /ws/ echoes WebSocket messages.
func echoBackend(t *testing.T) *httptest.Server {
	t.Helper()
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws/", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend %s", r.URL.Path)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

const proxyYAML = `
listen: { http: "%s" }
admin: "%s"
server: { shutdown_timeout: 5s }
sites:
  - access_log: { file: access.log, format: json }
    routes:
      - path: /
        static:
          root: www
          fallback: { route: /api/ }
      - path: /api/
        proxy: { upstreams: ["%s"] }
      - path: /ws/
        proxy: { upstreams: ["%s"] }
      - path: /socket/
        hub: { channels: [orders] }
`

func startProxyEdge(t *testing.T) (p *edgeProc, httpAddr, adminAddr string) {
	backend := echoBackend(t)
	httpAddr, adminAddr = freePort(t), freePort(t)
	p = startEdge(t, fmt.Sprintf(proxyYAML, httpAddr, adminAddr, backend.URL, backend.URL))
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	return p, httpAddr, adminAddr
}

func dialWS(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", url, err, resp)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("dial %s: status %d", url, resp.StatusCode)
	}
	return c
}

func echo(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	_, got, err := c.ReadMessage()
	if err != nil || string(got) != msg {
		t.Fatalf("echo of %q = %q, %v", msg, got, err)
	}
}

// TestTryFiles is nginx's try_files $uri @backend: a file that exists is
// served from disk, anything else goes to the proxy.
func TestTryFiles(t *testing.T) {
	_, httpAddr, _ := startProxyEdge(t)
	if code, body := httpGet(t, nil, "http://"+httpAddr+"/static/hello.txt"); code != 200 || body != "hello from edge\n" {
		t.Errorf("existing file: %d %q", code, body)
	}
	if code, body := httpGet(t, nil, "http://"+httpAddr+"/orders/42"); code != 200 || body != "backend /orders/42" {
		t.Errorf("missing file: %d %q, want the backend's answer", code, body)
	}
}

// TestWebSocketSurvivesReloads keeps a proxied WebSocket and a hub client
// open across ten reloads, both still working after each; then SIGTERM
// closes both with 1001 and edge exits 0.
func TestWebSocketSurvivesReloads(t *testing.T) {
	p, httpAddr, _ := startProxyEdge(t)
	c := dialWS(t, "ws://"+httpAddr+"/ws/")
	defer c.Close()
	sub := dialWS(t, "ws://"+httpAddr+"/socket/?channel=orders")
	defer sub.Close()
	echo(t, c, "before")
	for i := 0; i < 10; i++ {
		if _, errOut, code := runEdge(t, "reload", "-config", p.cfgPath); code != 0 {
			t.Fatalf("reload %d: %s", i, errOut)
		}
		echo(t, c, fmt.Sprintf("after reload %d", i))
		payload := fmt.Sprintf(`{"n":%d}`, i)
		if _, errOut, code := runEdge(t, "publish", "-config", p.cfgPath, "orders", payload); code != 0 {
			t.Fatalf("publish %d: %s", i, errOut)
		}
		msg, err := readHubData(sub)
		want := fmt.Sprintf(`{"channel":"orders","seq":%d,"data":%s}`, i+1, payload)
		if err != nil || string(msg) != want {
			t.Fatalf("hub client after reload %d got %q, %v; want %s", i, msg, err, want)
		}
	}
	p.signal(syscall.SIGTERM)
	for name, ws := range map[string]*websocket.Conn{"proxied": c, "hub": sub} {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _, err := ws.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("on SIGTERM the %s WebSocket got %v, want close 1001", name, err)
		}
	}
	if code := p.wait(15 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestMetricsAndAccessLog parses /metrics with the Prometheus text parser,
// checks the request counter moves, and checks the JSON access log,
// including its reopening on SIGUSR1 after a logrotate-style rename.
func TestMetricsAndAccessLog(t *testing.T) {
	p, httpAddr, adminAddr := startProxyEdge(t)
	count := func() float64 {
		resp, err := http.Get("http://" + adminAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("/metrics does not parse: %v", err)
		}
		var n float64
		for _, m := range families["edge_http_requests_total"].GetMetric() {
			labels := model.LabelSet{}
			for _, l := range m.GetLabel() {
				labels[model.LabelName(l.GetName())] = model.LabelValue(l.GetValue())
			}
			if labels["route"] == "/" && labels["code"] == "200" {
				n += m.GetCounter().GetValue()
			}
		}
		return n
	}
	before := count()
	for i := 0; i < 3; i++ {
		httpGet(t, nil, "http://"+httpAddr+"/static/hello.txt")
	}
	if got := count() - before; got != 3 {
		t.Errorf("edge_http_requests_total{route=\"/\",code=\"200\"} moved by %v, want 3", got)
	}
	logPath := filepath.Join(p.dir, "access.log")
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"method":"GET","path":"/static/hello.txt","proto":"HTTP/1.1","status":200,"bytes":16`) {
		t.Errorf("access log lacks the request:\n%s", b)
	}
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	p.signal(syscall.SIGUSR1)
	p.waitLog("access logs reopened", 10*time.Second)
	httpGet(t, nil, "http://"+httpAddr+"/static/hello.txt?after=rotate")
	b, err = os.ReadFile(logPath)
	if err != nil || !strings.Contains(string(b), "after=rotate") {
		t.Errorf("after SIGUSR1 the new file has %q, %v", b, err)
	}
}

// readHubData returns the next data message of a hub connection, skipping
// control messages ({"type":"welcome"}, {"type":"subscribed"}, ...).
func readHubData(c *websocket.Conn) ([]byte, error) {
	for {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, msg, err := c.ReadMessage()
		if err != nil || !strings.HasPrefix(string(msg), `{"type":`) {
			return msg, err
		}
	}
}
