package main

// End-to-end hostile clients against the edge binary (issue 10): each test
// sends what an attacker would, as raw bytes, and asserts what the backends
// behind edge received, the status the client got, whether edge closed the
// connection, and that an ordinary client right after is served by every
// upstream.

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"edge/internal/testutil"
)

// hxBackend is a loopback upstream that records every request it gets and
// counts the TCP connections it accepted.
type hxBackend struct {
	name  string
	addr  string
	conns atomic.Int64

	mu   sync.Mutex
	reqs []hxSeen
}

// hxSeen is one request as the backend saw it.
type hxSeen struct {
	Method string
	Path   string
	Header http.Header
	Body   string
}

func newHXBackend(t *testing.T, name string) *hxBackend {
	t.Helper()
	b := &hxBackend{name: name}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = ln.Addr().String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			b.mu.Lock()
			b.reqs = append(b.reqs, hxSeen{r.Method, r.URL.Path, r.Header.Clone(), string(body)})
			b.mu.Unlock()
			fmt.Fprintf(w, "%s %s", name, r.URL.Path)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *hxBackend) seen() []hxSeen {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]hxSeen(nil), b.reqs...)
}

// hxEdge runs edge in front of the backends with one proxy route on "/",
// the json access log, and extra YAML under server:.
type hxEdge struct {
	*edgeProc
	http   string // client listener
	admin  string
	logDir string
}

func startHXEdge(t *testing.T, serverYAML, routeYAML string, backends ...*hxBackend) *hxEdge {
	t.Helper()
	return startHXEdgeProxy(t, serverYAML, routeYAML, "", backends...)
}

// startHXEdgeProxy is startHXEdge with extra keys (", key: value") inside
// the route's proxy block.
func startHXEdgeProxy(t *testing.T, serverYAML, routeYAML, proxyExtra string, backends ...*hxBackend) *hxEdge {
	t.Helper()
	var ups []string
	for _, b := range backends {
		ups = append(ups, `"http://`+b.addr+`"`)
	}
	e := &hxEdge{http: freePort(t), admin: freePort(t)}
	dir := t.TempDir()
	e.logDir = dir
	cfg := fmt.Sprintf(`listen: { http: "%s" }
admin: "%s"
server:
  shutdown_timeout: 2s
%s
sites:
  - access_log: { file: %s, format: json }
    routes:
      - path: /
%s
        proxy: { upstreams: [%s], max_fails: 1, fail_timeout: 30s, dial_timeout: 1s%s }
`, e.http, e.admin, indent(serverYAML, "  "), filepath.Join(dir, "access.log"), indent(routeYAML, "        "), strings.Join(ups, ", "), proxyExtra)
	writeFile(t, dir, "www/static/hello.txt", "hello\n")
	e.edgeProc = startEdgeAt(t, dir, writeFile(t, dir, "config.yaml", cfg))
	e.waitHTTP("http://"+e.admin+"/healthz", 20*time.Second)
	return e
}

func indent(s, pre string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pre + l
	}
	return strings.Join(lines, "\n")
}

// accessLog returns the parsed lines of the json access log.
func (e *hxEdge) accessLog(t *testing.T) []map[string]any {
	t.Helper()
	b, _ := os.ReadFile(filepath.Join(e.logDir, "access.log"))
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("access log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// raw sends exact bytes on a new connection and returns what came back
// until edge closed the connection or d passed, and whether it closed.
func hxRaw(t *testing.T, addr, req string, d time.Duration) (resp string, closed bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return hxReadAll(c, d)
}

func hxReadAll(c net.Conn, d time.Duration) (string, bool) {
	c.SetReadDeadline(time.Now().Add(d))
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			ne, ok := err.(net.Error)
			return sb.String(), !(ok && ne.Timeout())
		}
	}
}

func statusOf(resp string) string {
	line, _, _ := strings.Cut(resp, "\r\n")
	return line
}

// everyUpstreamServes asserts that ordinary requests reach every backend
// with 200 (none was marked down).
func everyUpstreamServes(t *testing.T, e *hxEdge, backends ...*hxBackend) {
	t.Helper()
	got := map[string]bool{}
	c := &http.Client{Timeout: 5 * time.Second}
	for i := 0; i < 4*len(backends) && len(got) < len(backends); i++ {
		code, body := httpGet(t, c, fmt.Sprintf("http://%s/after-%d", e.http, i))
		if code != 200 {
			t.Fatalf("ordinary GET after the attack: %d %q", code, body)
		}
		name, _, _ := strings.Cut(body, " ")
		got[name] = true
	}
	for _, b := range backends {
		if !got[b.name] {
			t.Errorf("upstream %s served nothing after the attack (marked down?)", b.name)
		}
	}
}

func TestHostileE2EMalformedChunkedBlamesClient(t *testing.T) {
	a, b := newHXBackend(t, "a"), newHXBackend(t, "b")
	e := startHXEdge(t, "", "", a, b)
	for _, body := range []string{"5\nhello\n0\n\n", "ZZ\r\nhello\r\n0\r\n\r\n"} {
		for i := 0; i < 2; i++ { // once per upstream, as the report found
			resp, _ := hxRaw(t, e.http, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+body, 3*time.Second)
			if !strings.Contains(statusOf(resp), " 400 ") {
				t.Errorf("malformed chunked body %q: got %q, want 400", body, statusOf(resp))
			}
		}
	}
	for _, bk := range []*hxBackend{a, b} {
		for _, s := range bk.seen() {
			if s.Path == "/upload" {
				t.Errorf("backend %s received the malformed request (%q)", bk.name, s.Body)
			}
		}
	}
	if strings.Contains(e.log.String(), "marked_down=true") {
		t.Errorf("a client's bad body marked an upstream down:\n%s", e.log.String())
	}
	everyUpstreamServes(t, e, a, b)
}

func TestHostileE2EStalledBody(t *testing.T) {
	a := newHXBackend(t, "a")
	e := startHXEdge(t, "client_body_timeout: 1s", "", a)
	c, err := net.Dial("tcp", e.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nx")
	resp, closed := hxReadAll(c, 10*time.Second)
	if !strings.Contains(statusOf(resp), " 408 ") || !closed {
		t.Errorf("stalled body: got %q closed=%v, want 408 and close", statusOf(resp), closed)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("408 came after %v, want about client_body_timeout (1s)", d)
	}
	if n := a.conns.Load(); n != 0 {
		t.Errorf("a small stalled body reached the backend: %d connections", n)
	}
	everyUpstreamServes(t, e, a)
}

func TestHostileE2ESmuggling(t *testing.T) {
	a := newHXBackend(t, "a")
	e := startHXEdge(t, "", "", a)
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
	cases := map[string]string{
		"CL and TE": "POST /front HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
		"HTTP/1.0 with TE": "POST /front HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(smuggled), smuggled),
	}
	for name, req := range cases {
		resp, closed := hxRaw(t, e.http, req, 3*time.Second)
		if !strings.Contains(statusOf(resp), " 400 ") || !closed {
			t.Errorf("%s: got %q closed=%v, want 400 and close", name, statusOf(resp), closed)
		}
		if strings.Count(resp, "HTTP/1.") > 1 {
			t.Errorf("%s: edge answered twice on one request: %q", name, resp)
		}
	}
	for _, s := range a.seen() {
		if s.Path == "/smuggled" || s.Path == "/front" {
			t.Errorf("backend received %s %s", s.Method, s.Path)
		}
	}
	everyUpstreamServes(t, e, a)
}

func TestHostileE2EConnectionHeaderCannotStripSetHeaders(t *testing.T) {
	a := newHXBackend(t, "a")
	e := startHXEdge(t, "", `headers: { request: { set: { X-Edge-Verified: "edge" } } }`, a)
	req := "GET /hdr HTTP/1.1\r\nHost: x\r\nX-Edge-Verified: forged\r\n" +
		"Connection: keep-alive, X-Edge-Verified, X-Forwarded-For, X-Real-IP, X-Forwarded-Proto, X-Forwarded-Host\r\n\r\n"
	c, err := net.Dial("tcp", e.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, req)
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("GET /hdr: %v %v", res, err)
	}
	res.Body.Close()
	var got *hxSeen
	for _, s := range a.seen() {
		if s.Path == "/hdr" {
			got = &s
		}
	}
	if got == nil {
		t.Fatal("backend did not receive /hdr")
	}
	if v := got.Header.Get("X-Edge-Verified"); v != "edge" {
		t.Errorf("X-Edge-Verified at the backend = %q, want the route's %q", v, "edge")
	}
	for _, h := range []string{"X-Forwarded-For", "X-Real-Ip", "X-Forwarded-Proto", "X-Forwarded-Host"} {
		if got.Header.Get(h) == "" {
			t.Errorf("%s missing at the backend: %v", h, got.Header)
		}
	}
}

func TestHostileE2ETraceRefused(t *testing.T) {
	a := newHXBackend(t, "a")
	e := startHXEdge(t, "", "", a)
	resp, _ := hxRaw(t, e.http, "TRACE /t HTTP/1.1\r\nHost: x\r\nCookie: session=secret\r\nConnection: close\r\n\r\n", 3*time.Second)
	if !strings.Contains(statusOf(resp), " 405 ") {
		t.Errorf("TRACE: got %q, want 405", statusOf(resp))
	}
	if strings.Contains(resp, "secret") {
		t.Errorf("TRACE reflected the cookie: %q", resp)
	}
	for _, s := range a.seen() {
		if s.Method == "TRACE" {
			t.Errorf("backend received TRACE with %v", s.Header)
		}
	}
	everyUpstreamServes(t, e, a)
}

func TestHostileE2EHalfCloseGetsNo499OnTheWire(t *testing.T) {
	a := newHXBackend(t, "a")
	e := startHXEdge(t, "", "", a)
	c, err := net.Dial("tcp", e.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /short HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly this")
	c.(*net.TCPConn).CloseWrite()
	resp, _ := hxReadAll(c, 5*time.Second)
	if strings.Contains(resp, "499") {
		t.Errorf("edge wrote a made-up status to the client: %q", resp)
	}
	for _, s := range a.seen() {
		if s.Path == "/short" {
			t.Errorf("the truncated body reached the backend: %q", s.Body)
		}
	}
	testutil.WaitFor(t, 5*time.Second, "the abandoned request logged as 499", func() bool {
		for _, l := range e.accessLog(t) {
			if l["path"] == "/short" {
				return l["status"] == float64(499)
			}
		}
		return false
	})
	everyUpstreamServes(t, e, a)
}

func TestHostileE2EClientIdentityAndTokenRedaction(t *testing.T) {
	a := newHXBackend(t, "a")
	e := startHXEdge(t, `trusted_proxies: ["127.0.0.1/32"]`, "", a)
	// From the trusted load balancer (127.0.0.1): the forwarded client counts.
	resp, _ := hxRaw(t, e.http, "GET /who?token=eyJhbGciOi.secret.sig&x=1 HTTP/1.1\r\nHost: x\r\n"+
		"X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\nConnection: close\r\n\r\n", 3*time.Second)
	if !strings.Contains(statusOf(resp), " 200 ") {
		t.Fatalf("GET /who: %q", statusOf(resp))
	}
	// From an untrusted peer (127.0.0.2): its header is ignored.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	c, err := d.Dial("tcp", e.http)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /spoof HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.9\r\nConnection: close\r\n\r\n")
	hxReadAll(c, 3*time.Second)
	c.Close()

	want := map[string]string{"/who": "198.51.100.7", "/spoof": "127.0.0.2"}
	testutil.WaitFor(t, 5*time.Second, "/who?token=REDACTED&x=1 from "+want["/who"]+" and /spoof from "+want["/spoof"]+" in the access log", func() bool {
		got := map[string]string{}
		for _, l := range e.accessLog(t) {
			got[l["path"].(string)], _ = l["remote"].(string)
		}
		return got["/who?token=REDACTED&x=1"] == want["/who"] && got["/spoof"] == want["/spoof"]
	})
	for _, s := range a.seen() {
		if s.Path == "/who" && s.Header.Get("X-Real-Ip") != "198.51.100.7" {
			t.Errorf("X-Real-IP at the backend = %q, want the forwarded client", s.Header.Get("X-Real-Ip"))
		}
		if s.Path == "/spoof" && s.Header.Get("X-Real-Ip") != "127.0.0.2" {
			t.Errorf("spoofed X-Real-IP reached the backend: %q", s.Header.Get("X-Real-Ip"))
		}
	}
}

// TestHostileE2ERapidReset opens and resets 20,000 HTTP/2 streams on one
// connection (CVE-2023-44487's pattern) and asserts that the backend saw
// few new connections and that another client is served meanwhile.
func TestHostileE2ERapidReset(t *testing.T) {
	a := newHXBackend(t, "a")
	https, admin := freePort(t), freePort(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`listen: { http: "", https: "%s" }
admin: "%s"
tls: { ca: internal, storage: %s }
server: { shutdown_timeout: 2s }
sites:
  - hosts: [localhost]
    routes:
      - path: /
        proxy: { upstreams: ["http://%s"] }
`, https, admin, filepath.Join(dir, "certs"), a.addr)
	p := startEdgeAt(t, dir, writeFile(t, dir, "config.yaml", cfg))
	p.waitHTTP("http://"+admin+"/healthz", 20*time.Second)
	tlsCfg := &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	waitTLS(t, https, tlsCfg)

	conn, err := tls.Dial("tcp", https, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, http2.ClientPreface)
	fr := http2.NewFramer(conn, conn)
	fr.WriteSettings()
	go func() { // drain what edge sends so its writes never block
		for {
			if _, err := fr.ReadFrame(); err != nil {
				return
			}
		}
	}()
	var hb strings.Builder
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "localhost"}, {":path", "/reset"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := []byte(hb.String())
	const streams = 20000
	sent := 0
	for id := uint32(1); sent < streams; id += 2 {
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
			break // edge closed the connection: the budget worked
		}
		sent++
	}
	// Another client is served.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}, ForceAttemptHTTP2: true}}
	req, _ := http.NewRequest("GET", "https://"+https+"/other", nil)
	req.Host = "localhost"
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("another client during the attack: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.ProtoMajor != 2 {
		t.Errorf("another client during the attack: %d over %s, want 200 over HTTP/2", res.StatusCode, res.Proto)
	}
	if sent == streams {
		t.Errorf("edge accepted all %d reset streams on one connection without closing it", streams)
	}
	if n := a.conns.Load(); n >= 100 {
		t.Errorf("backend accepted %d connections for %d reset streams, want < 100", n, sent)
	}
	t.Logf("streams sent before edge closed: %d; backend connections: %d", sent, a.conns.Load())
}

func waitTLS(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	testutil.WaitFor(t, 20*time.Second, "a TLS handshake on "+addr, func() bool {
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// TestHostileE2EIPHashBehindTrustedProxy: behind a trusted load balancer
// every visitor arrives from the balancer's address; ip_hash must spread
// them by the client the balancer names, and keep each one sticky.
func TestHostileE2EIPHashBehindTrustedProxy(t *testing.T) {
	a, b := newHXBackend(t, "a"), newHXBackend(t, "b")
	e := startHXEdgeProxy(t, `trusted_proxies: ["127.0.0.1/32"]`, "", ", balance: ip_hash", a, b)
	c := &http.Client{Timeout: 5 * time.Second}
	served := map[string]string{} // client -> backend
	for i := 0; i < 16; i++ {
		client := fmt.Sprintf("198.51.%d.%d", 100+i, 7*i+1)
		for j := 0; j < 3; j++ {
			req, _ := http.NewRequest("GET", "http://"+e.http+"/sticky", nil)
			req.Header.Set("X-Forwarded-For", client)
			res, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			name, _, _ := strings.Cut(string(body), " ")
			if prev, ok := served[client]; ok && prev != name {
				t.Errorf("client %s moved from %s to %s under ip_hash", client, prev, name)
			}
			served[client] = name
		}
	}
	count := map[string]int{}
	for _, name := range served {
		count[name]++
	}
	if count["a"] == 0 || count["b"] == 0 {
		t.Errorf("16 forwarded clients behind one balancer all went to one upstream: %v", count)
	}
}
