package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// seen is what the dump backend saw of a request.
type seen struct {
	Method string      `json:"method"`
	Host   string      `json:"host"`
	URI    string      `json:"uri"`
	Proto  string      `json:"proto"`
	Header http.Header `json:"header"`
}

// newDump returns a backend that answers with what it received as JSON,
// and counts requests.
func newDump(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var hits atomic.Int64
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		json.NewEncoder(w).Encode(seen{r.Method, r.Host, r.RequestURI, r.Proto, r.Header})
	}))
	t.Cleanup(s.Close)
	return s, &hits
}

func dumpGet(t *testing.T, url string, hdr map[string]string) seen {
	t.Helper()
	code, _, body := get(t, http.DefaultClient, url, hdr)
	if code != 200 {
		t.Fatalf("GET %s = %d %s", url, code, body)
	}
	var s seen
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return s
}

func TestProxyPassesPathQueryAndHost(t *testing.T) {
	b, _ := newDump(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	base := front(t, h, nil)

	// Any path under any route prefix goes upstream unchanged (try_files
	// fallbacks call the handler for paths of another route).
	s := dumpGet(t, base+"/static/app.js?v=1&x=%20y", map[string]string{"Host": "dash.example.com"})
	if s.URI != "/static/app.js?v=1&x=%20y" {
		t.Errorf("upstream URI = %q", s.URI)
	}
	if s.Host != "dash.example.com" {
		t.Errorf("Host = %q, want the client's dash.example.com", s.Host)
	}
	if s.Proto != "HTTP/1.1" {
		t.Errorf("upstream proto = %q", s.Proto)
	}
	if ua := s.Header.Get("User-Agent"); ua != "Go-http-client/1.1" {
		t.Errorf("User-Agent = %q, want the client's", ua)
	}

	h2 := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]\nhost: app.internal"), Options{})
	s = dumpGet(t, front(t, h2, nil)+"/", map[string]string{"Host": "dash.example.com"})
	if s.Host != "app.internal" {
		t.Errorf("Host = %q, want host: app.internal", s.Host)
	}
}

func TestForwardedHeaders(t *testing.T) {
	b, _ := newDump(t)
	spoof := map[string]string{
		"Host":              "dash.example.com",
		"X-Forwarded-For":   "203.0.113.7",
		"X-Real-IP":         "203.0.113.7",
		"X-Forwarded-Host":  "evil.example",
		"X-Forwarded-Proto": "https",
		"Forwarded":         "for=203.0.113.7;proto=https",
	}
	cfg := proxyConfig(t, "upstreams: ["+b.URL+"]\nforwarded: true")

	t.Run("untrusted peer", func(t *testing.T) {
		h := newHandler(t, cfg, Options{})
		s := dumpGet(t, front(t, h, nil)+"/", spoof)
		want := map[string]string{
			"X-Forwarded-For":   "127.0.0.1",
			"X-Real-Ip":         "127.0.0.1",
			"X-Forwarded-Host":  "dash.example.com",
			"X-Forwarded-Proto": "http",
			"Forwarded":         "for=127.0.0.1;host=dash.example.com;proto=http",
		}
		for k, v := range want {
			if got := s.Header.Values(k); len(got) != 1 || got[0] != v {
				t.Errorf("%s = %q, want [%q]", k, got, v)
			}
		}
	})
	t.Run("trusted peer", func(t *testing.T) {
		h := newHandler(t, cfg, Options{})
		s := dumpGet(t, front(t, trusting(h, "127.0.0.0/8"), nil)+"/", spoof)
		want := map[string]string{
			"X-Forwarded-For":   "203.0.113.7, 127.0.0.1",
			"X-Real-Ip":         "203.0.113.7",
			"X-Forwarded-Host":  "evil.example",
			"X-Forwarded-Proto": "https",
			"Forwarded":         "for=203.0.113.7;proto=https, for=127.0.0.1;host=dash.example.com;proto=http",
		}
		for k, v := range want {
			if got := s.Header.Values(k); len(got) != 1 || got[0] != v {
				t.Errorf("%s = %q, want [%q]", k, got, v)
			}
		}
	})
	t.Run("trusted chain", func(t *testing.T) {
		// 10.0.0.2 is a trusted proxy too: the client is the first
		// untrusted address from the right.
		h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
		s := dumpGet(t, front(t, trusting(h, "127.0.0.1/32", "10.0.0.0/8"), nil)+"/", map[string]string{"X-Forwarded-For": "198.51.100.1, 203.0.113.9, 10.0.0.2"})
		if got := s.Header.Get("X-Real-IP"); got != "203.0.113.9" {
			t.Errorf("X-Real-IP = %q, want 203.0.113.9", got)
		}
		if got := s.Header.Get("X-Forwarded-For"); got != "198.51.100.1, 203.0.113.9, 10.0.0.2, 127.0.0.1" {
			t.Errorf("X-Forwarded-For = %q", got)
		}
		if _, ok := s.Header["Forwarded"]; ok {
			t.Errorf("Forwarded sent without forwarded: true")
		}
	})
}

func TestForwardedHelpers(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"1.2.3.4", "1.2.3.4"},
		{"::1", `"[::1]"`},
		{"", "unknown"},
	} {
		var a netip.Addr
		if tc.in != "" {
			a = netip.MustParseAddr(tc.in)
		}
		if got := forwardedNode(a); got != tc.want {
			t.Errorf("forwardedNode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := forwardedValue("example.com:8443"); got != `"example.com:8443"` {
		t.Errorf("forwardedValue = %s", got)
	}
	if got := forwardedValue("example.com"); got != "example.com" {
		t.Errorf("forwardedValue = %s", got)
	}
}

func TestHopByHopHeadersStripped(t *testing.T) {
	var got http.Header
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Header.Clone()
		w.Header().Set("Connection", "X-Internal")
		w.Header().Set("X-Internal", "secret")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-End-To-End", "yes")
		fmt.Fprint(w, "ok")
	}))
	defer b.Close()
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	req, _ := http.NewRequest("GET", front(t, h, nil)+"/", nil)
	req.Header.Set("Connection", "keep-alive, X-Secret")
	req.Header.Set("X-Secret", "1")
	req.Header.Set("Keep-Alive", "300")
	req.Header.Set("Proxy-Authorization", "Basic eA==")
	req.Header.Set("Proxy-Connection", "keep-alive")
	req.Header.Set("Te", "gzip")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	for _, k := range []string{"X-Secret", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "Te", "Upgrade"} {
		if v, ok := got[k]; ok {
			t.Errorf("upstream got hop-by-hop %s: %q", k, v)
		}
	}
	if c := got.Get("Connection"); c != "" && !strings.EqualFold(c, "keep-alive") {
		t.Errorf("upstream got Connection %q", c)
	}
	for _, k := range []string{"X-Internal", "Keep-Alive"} {
		if v, ok := res.Header[k]; ok {
			t.Errorf("client got hop-by-hop %s: %q", k, v)
		}
	}
	if res.Header.Get("X-End-To-End") != "yes" {
		t.Errorf("end-to-end response header lost")
	}
}

func TestBackendDown502WithinDialTimeout(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		log, sink := newLog(t)
		h := newHandler(t, proxyConfig(t, "upstreams: [http://"+deadAddr(t)+"]"), Options{Log: log})
		start := time.Now()
		code, _, body := get(t, http.DefaultClient, front(t, h, nil)+"/", nil)
		if code != 502 || body != "502 Bad Gateway\n" {
			t.Errorf("got %d %q, want 502", code, body)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("refused upstream took %s", d)
		}
		recs := sink.find(slog.LevelWarn, "upstream failed")
		if len(recs) != 1 || attr(recs[0], "cause") != "connect_refused" || !strings.HasPrefix(attr(recs[0], "upstream"), "http://127.0.0.1:") {
			t.Errorf("want one Warn with upstream and cause connect_refused, got %d", len(recs))
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		addr := blackhole(t)
		h := newHandler(t, proxyConfig(t, "upstreams: [http://"+addr+"]\ndial_timeout: 400ms"), Options{})
		start := time.Now()
		code, _, _ := get(t, http.DefaultClient, front(t, h, nil)+"/", nil)
		d := time.Since(start)
		if code != 502 {
			t.Errorf("status %d, want 502", code)
		}
		if d < 350*time.Millisecond || d > 2*time.Second {
			t.Errorf("answered after %s, want about the 400ms dial timeout", d)
		}
	})
}

// blackhole returns a loopback address whose connects hang: a listener with
// a backlog of 0 whose accept queue is full, so that the kernel drops
// further SYNs.
func blackhole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := syscall.Getsockname(fd)
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for i := 0; i < 8; i++ {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr // the queue is full: connects now hang
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("could not fill the accept queue of a backlog-0 listener")
	return ""
}

func TestSlowHeaders504(t *testing.T) {
	release := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer b.Close()
	defer close(release)
	log, sink := newLog(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]\nresponse_header_timeout: 200ms"), Options{Log: log})
	start := time.Now()
	code, _, body := get(t, http.DefaultClient, front(t, h, nil)+"/", nil)
	if code != 504 || body != "504 Gateway Timeout\n" {
		t.Errorf("got %d %q, want 504", code, body)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("answered after %s, want about 200ms", d)
	}
	if recs := sink.find(slog.LevelWarn, "upstream failed"); len(recs) != 1 || attr(recs[0], "cause") != "timeout" {
		t.Errorf("want a Warn with cause timeout")
	}
}

func TestAllDown503AndPassiveMarking(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	reg := prometheus.NewRegistry()
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+a+", http://"+b+"]\nmax_fails: 1\nfail_timeout: 1m"),
		Options{Registerer: reg, Site: "s", Route: "/"})
	base := front(t, h, nil)
	// The first request tries a, then b (one retry): both refuse.
	if code, _, _ := get(t, http.DefaultClient, base+"/", nil); code != 502 {
		t.Errorf("first request: %d, want 502", code)
	}
	// Both are now down for fail_timeout.
	if code, _, body := get(t, http.DefaultClient, base+"/", nil); code != 503 || body != "503 Service Unavailable\n" {
		t.Errorf("second request: %d %q, want 503", code, body)
	}
	for _, addr := range []string{a, b} {
		if v := upGauge(t, reg, "s", "/", "http://"+addr); v != 0 {
			t.Errorf("edge_proxy_upstream_up{%s} = %v, want 0", addr, v)
		}
	}
	if v := metricValue(t, reg, "edge_proxy_requests_total", "s", "/", "", "503"); v != 1 {
		t.Errorf("requests_total{code=503} = %v", v)
	}
	if v := metricValue(t, reg, "edge_proxy_upstream_errors_total", "s", "/", "http://"+a, "connect_refused"); v != 1 {
		t.Errorf("upstream_errors_total{%s,connect_refused} = %v, want 1", a, v)
	}
}

func TestClientGoneCancelsUpstream499(t *testing.T) {
	started := make(chan struct{})
	canceled := make(chan struct{})
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(10 * time.Second):
		}
	}))
	defer b.Close()
	log, sink := newLog(t)
	reg := prometheus.NewRegistry()
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{Log: log, Registerer: reg})
	base := front(t, h, nil)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("request did not reach the upstream")
	}
	cancel()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("upstream request was not cancelled when the client went away")
	}
	<-errc
	waitFor(t, 5*time.Second, "499 in metrics", func() bool {
		return metricValue(t, reg, "edge_proxy_requests_total", "", "", b.URL, "499") == 1
	})
	if len(sink.find(slog.LevelDebug, "client went away")) != 1 {
		t.Error("want one Debug record for the client that went away")
	}
	if n := sink.count(slog.LevelWarn); n != 0 {
		t.Errorf("%d Warn records for a client that went away", n)
	}
	if !h.upstreams.up(h.upstreams.list[0]) {
		t.Error("a client going away marked the upstream down")
	}
}

func TestBodyTooLarge413(t *testing.T) {
	for _, tc := range []struct {
		name, buffering string
		started         bool // the upstream saw the start of the body
	}{
		// request_buffering finds the body too large before any upstream
		// is contacted.
		{"buffered", "64KiB", false},
		{"streamed", "0", true},
	} {
		t.Run(tc.name, func(t *testing.T) { testBodyTooLarge(t, tc.buffering, tc.started) })
	}
}

func testBodyTooLarge(t *testing.T, buffering string, wantStarted bool) {
	var completed, started atomic.Int64
	reader := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		if _, err := io.Copy(io.Discard, r.Body); err == nil {
			completed.Add(1)
		}
	})
	b1, b2 := httptest.NewServer(reader), httptest.NewServer(reader)
	defer b1.Close()
	defer b2.Close()
	log, _ := newLog(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b1.URL+", "+b2.URL+"]\nrequest_buffering: "+buffering), Options{Log: log})
	// As server/router.go does for a route with max_body_size.
	limited := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		h.ServeHTTP(w, r)
	})
	base := front(t, limited, nil)
	for range 2 { // round robin: each server gets one
		// Unknown length (chunked), so only reading finds out.
		body := io.LimitReader(pattern{}, 1<<20)
		req, _ := http.NewRequest("POST", base+"/upload", body)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 413 || string(got) != "413 Request Entity Too Large\n" {
			t.Errorf("got %d %q, want 413", res.StatusCode, got)
		}
	}
	if (started.Load() > 0) != wantStarted || completed.Load() != 0 {
		t.Errorf("%d upstream requests started, %d received a complete oversized body; want started %v and 0",
			started.Load(), completed.Load(), wantStarted)
	}
	for _, s := range h.upstreams.list {
		if !h.upstreams.up(s) {
			t.Errorf("%s marked down by a client's oversized body", s.name)
		}
	}
}

func TestMalformedRequestsNeverReachUpstream(t *testing.T) {
	b, hits := newDump(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	addr := strings.TrimPrefix(front(t, h, nil), "http://")
	for _, tc := range []struct{ name, req, status string }{
		{"two content lengths", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", "400"},
		{"space in header name", "GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", "400"},
		{"no host", "GET / HTTP/1.1\r\n\r\n", "400"},
		{"garbage", "HELLO\r\n\r\n", "400"},
		{"control char in upgrade", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: web\x01socket\r\n\r\n", "400"},
		{"non-ASCII upgrade", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: web\xffsocket\r\n\r\n", "400"},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", "405"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := hits.Load()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tc.req)
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(line, "HTTP/1.1 "+tc.status) {
				t.Errorf("status line %q, want %s", line, tc.status)
			}
			if hits.Load() != before {
				t.Errorf("the malformed request reached the upstream")
			}
		})
	}
	t.Run("h2c upgrade is not forwarded", func(t *testing.T) {
		s := dumpGet(t, "http://"+addr+"/", map[string]string{"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c", "HTTP2-Settings": "AAMAAABkAAQCAAAAAAIAAAAA"})
		for _, k := range []string{"Upgrade", "Http2-Settings"} {
			if v, ok := s.Header[k]; ok {
				t.Errorf("upstream got %s: %q", k, v)
			}
		}
	})
}

func TestStreamingFlushesAtOnce(t *testing.T) {
	for _, tc := range []struct{ name, ctype string }{
		{"sse", "text/event-stream"},
		{"chunked", "application/x-ndjson"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				io.WriteString(w, "data: first\n\n")
				w.(http.Flusher).Flush()
				select { // the response stays open until the client saw the event
				case <-release:
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
				io.WriteString(w, "data: last\n\n")
			}))
			defer b.Close()
			h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
			res, err := http.Get(front(t, h, nil) + "/events")
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			got := make(chan string, 1)
			go func() {
				line, _ := bufio.NewReader(res.Body).ReadString('\n')
				got <- line
			}()
			select {
			case line := <-got:
				if line != "data: first\n" {
					t.Errorf("first line %q", line)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("the first event did not arrive before the response ended")
			}
			close(release)
		})
	}
}

func TestUnixSocketUpstream(t *testing.T) {
	dir, err := os.MkdirTemp("", "edge")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	b := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "unix %s %s", r.Host, r.URL.Path)
	}))
	b.Listener.Close()
	b.Listener = ln
	b.Start()
	defer b.Close()
	h := newHandler(t, proxyConfig(t, "upstreams: [unix:"+sock+"]"), Options{})
	base := front(t, h, nil)
	code, _, body := get(t, http.DefaultClient, base+"/x", map[string]string{"Host": "app.test"})
	if code != 200 || body != "unix app.test /x" {
		t.Errorf("got %d %q", code, body)
	}

	// A WebSocket to a unix-socket upstream.
	wsSock := filepath.Join(dir, "ws.sock")
	wln, err := net.Listen("unix", wsSock)
	if err != nil {
		t.Fatal(err)
	}
	wb := newWSBackend(t, false)
	wsrv := &http.Server{Handler: wb.Config.Handler}
	go wsrv.Serve(wln)
	defer wsrv.Close()
	hw := newHandler(t, proxyConfig(t, "upstreams: [\"unix://"+wsSock+"\"]"), Options{})
	c, _ := dialWS(t, nil, front(t, hw, nil), "/ws", nil)
	echo(t, c, "over a unix socket")
}

func TestHTTPSUpstream(t *testing.T) {
	b := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s", r.TLS.ServerName)
	}))
	defer b.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Certificate().Raw}), 0o600)
	port := b.URL[strings.LastIndex(b.URL, ":")+1:]
	for _, tc := range []struct {
		name, conf string
		code       int
		body       string
	}{
		{"verified", "upstreams: [" + b.URL + "]\ntls: {ca: " + ca + "}", 200, "tls "},
		{"server name", "upstreams: [https://localhost:" + port + "]\ntls: {ca: " + ca + ", server_name: example.com}", 200, "tls example.com"},
		{"wrong name", "upstreams: [" + b.URL + "]\ntls: {ca: " + ca + ", server_name: wrong.test}", 502, "502 Bad Gateway\n"},
		{"unknown CA", "upstreams: [" + b.URL + "]", 502, "502 Bad Gateway\n"},
		{"insecure", "upstreams: [" + b.URL + "]\ntls: {insecure_skip_verify: true}", 200, "tls "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, sink := newLog(t)
			h := newHandler(t, proxyConfig(t, tc.conf), Options{Log: log})
			code, _, body := get(t, http.DefaultClient, front(t, h, nil)+"/", nil)
			if code != tc.code || body != tc.body {
				t.Errorf("got %d %q, want %d %q", code, body, tc.code, tc.body)
			}
			if tc.code == 502 {
				if recs := sink.find(slog.LevelWarn, "upstream failed"); len(recs) != 1 || attr(recs[0], "cause") != "tls" {
					t.Errorf("want a Warn with cause tls")
				}
			}
		})
	}
}

func TestHTTP2Front(t *testing.T) {
	b, _ := newDump(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	fs := httptest.NewUnstartedServer(h)
	fs.EnableHTTP2 = true
	fs.StartTLS()
	defer fs.Close()
	res, err := fs.Client().Get(fs.URL + "/page")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var s seen
	json.NewDecoder(res.Body).Decode(&s)
	if res.ProtoMajor != 2 || s.Proto != "HTTP/1.1" || s.Header.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("client %s, upstream %s, X-Forwarded-Proto %q; want h2 in, HTTP/1.1 out, https",
			res.Proto, s.Proto, s.Header.Get("X-Forwarded-Proto"))
	}
}

// TestLargeBodiesStreamWithFlatHeap sends 100 MB up and 100 MB down through
// the proxy and checks that the process heap never grows by more than a
// few MB: bodies are streamed, not held.
func TestLargeBodiesStreamWithFlatHeap(t *testing.T) {
	const size = 100 << 20
	const bound = 16 << 20
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case "GET":
			w.Header().Set("Content-Length", fmt.Sprint(size))
			io.CopyN(w, pattern{}, size)
		case "POST":
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprint(w, n)
		}
	}))
	defer b.Close()
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	base := front(t, h, nil)

	for _, chunked := range []bool{false, true} {
		name := "content-length"
		if chunked {
			name = "chunked"
		}
		t.Run(name, func(t *testing.T) {
			peak := watchHeap(t)
			req, _ := http.NewRequest("POST", base+"/up", io.LimitReader(pattern{}, size))
			if !chunked {
				req.ContentLength = size
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if string(got) != fmt.Sprint(size) {
				t.Errorf("upstream received %s bytes, want %d", got, size)
			}
			res, err = http.Get(base + "/down")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if err != nil || n != size {
				t.Errorf("downloaded %d bytes (%v), want %d", n, err, size)
			}
			growth := peak()
			t.Logf("peak heap growth during 2×100 MB: %.1f MB", float64(growth)/(1<<20))
			if growth > bound {
				t.Errorf("heap grew by %d MB, want < %d MB", growth>>20, bound>>20)
			}
		})
	}
}

// pattern is an endless reader of non-zero bytes.
type pattern struct{}

func (pattern) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return len(p), nil
}

// watchHeap samples HeapInuse until the returned function is called, which
// returns the peak growth over the starting value.
func watchHeap(t *testing.T) func() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := int64(ms.HeapInuse)
	var peak atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			if g := int64(ms.HeapInuse) - base; g > peak.Load() {
				peak.Store(g)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() int64 {
		close(stop)
		<-done
		return peak.Load()
	}
}

func TestNewErrors(t *testing.T) {
	cfg := proxyConfig(t, "upstreams: [http://127.0.0.1:1]")
	cfg.TLS = nil
	bad := *cfg
	bad.Upstreams = nil
	if _, err := New(&bad, Options{}); err == nil {
		t.Error("New without upstreams succeeded")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "edge_proxy_requests_total", Help: "clash"}))
	if _, err := New(cfg, Options{Registerer: reg}); err == nil {
		t.Error("New with a clashing metric succeeded")
	}
	// Two handlers (a reload) share the metrics.
	reg = prometheus.NewRegistry()
	h1, err := New(cfg, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	h2, err := New(cfg, Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Gather(); err != nil {
		t.Errorf("gather with two handlers: %v", err)
	}
	h1.Close()
	h1.Close() // idempotent
	h2.Close()
}

func TestCloseReturnsRunAndIsIdempotent(t *testing.T) {
	b := newNamed(t, "a")
	h, err := New(proxyConfig(t, "upstreams: ["+b.URL+"]\nhealth_check: {interval: 50ms, timeout: 50ms}"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	runErr := make(chan error, 1)
	go func() { runErr <- h.Run(context.Background()) }()
	waitFor(t, 5*time.Second, "a health probe", func() bool { return b.count() > 0 })
	h.Close()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	h.Close()
	if err := h.Run(context.Background()); err != nil {
		t.Errorf("Run after Close = %v", err)
	}
}

// upGauge returns edge_proxy_upstream_up for site, route and upstream, or -1.
func upGauge(t *testing.T, reg *prometheus.Registry, site, route, upstream string) float64 {
	return metricValue(t, reg, "edge_proxy_upstream_up", site, route, upstream)
}

// metricValue returns the value of the metric name whose label values, in
// label-name order as registered, are values; -1 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, values ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	order := map[string][]string{
		"edge_proxy_upstream_up":           {"site", "route", "upstream"},
		"edge_proxy_requests_total":        {"site", "route", "upstream", "code"},
		"edge_proxy_upstream_errors_total": {"site", "route", "upstream", "cause"},
		"edge_proxy_tunnels_open":          {"site", "route"},
	}[name]
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for i, k := range order {
				if labels[k] != values[i] {
					continue metrics
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
