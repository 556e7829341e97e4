package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts accepted connections: the dials of the proxy.
type countingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// countingBackend serves h on loopback and counts its connections.
func countingBackend(t *testing.T, h http.Handler, configure func(*httptest.Server)) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	s := httptest.NewUnstartedServer(h)
	cl := &countingListener{Listener: s.Listener}
	s.Listener = cl
	if configure != nil {
		configure(s)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s, &cl.n
}

// rawBackend serves each connection with serve, which reads requests from
// br and writes raw responses; it returns the address and the number of
// connections accepted.
func rawBackend(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := cl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	return ln.Addr().String(), &cl.n
}

// idleLean returns the number of idle lean connections of h's first server.
func idleLean(h *Handler) int {
	p := h.lean.pools[h.upstreams.list[0]]
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// expectConns checks the upstream connections accepted so far and the
// lean connections idle now, after what was done.
func expectConns(t *testing.T, h *Handler, accepts *atomic.Int64, accepted, idle int, after string) {
	t.Helper()
	if n := accepts.Load(); n != int64(accepted) {
		t.Errorf("after %s: %d upstream connections, want %d", after, n, accepted)
	}
	if n := idleLean(h); n != idle {
		t.Errorf("after %s: %d idle lean connections, want %d", after, n, idle)
	}
}

// do sends a request with a bound and returns status, headers and body.
func do(t *testing.T, method, url, body string, trace *httptrace.ClientTrace) (int, http.Header, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if trace != nil {
		ctx = httptrace.WithClientTrace(ctx, trace)
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequestWithContext(ctx, method, url, rd)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return res.StatusCode, res.Header, string(b)
}

// TestLeanKeepAliveReuse sends requests one after another to http, https
// and unix-socket upstreams: one connection serves them all, and it sits
// in the lean pool between requests.
func TestLeanKeepAliveReuse(t *testing.T) {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello %s", r.URL.Path) })
	for _, tc := range []string{"http", "https", "unix"} {
		t.Run(tc, func(t *testing.T) {
			var conf string
			var accepts *atomic.Int64
			switch tc {
			case "http":
				b, n := countingBackend(t, hello, nil)
				conf, accepts = "upstreams: ["+b.URL+"]", n
			case "https":
				b := httptest.NewUnstartedServer(hello)
				cl := &countingListener{Listener: b.Listener}
				b.Listener = cl
				b.StartTLS()
				t.Cleanup(b.Close)
				conf, accepts = "upstreams: ["+b.URL+"]\ntls: {insecure_skip_verify: true}", &cl.n
			case "unix":
				dir, err := os.MkdirTemp("", "edge")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { os.RemoveAll(dir) })
				sock := filepath.Join(dir, "app.sock")
				ln, err := net.Listen("unix", sock)
				if err != nil {
					t.Fatal(err)
				}
				cl := &countingListener{Listener: ln}
				srv := &http.Server{Handler: hello}
				go srv.Serve(cl)
				t.Cleanup(func() { srv.Close() })
				conf, accepts = "upstreams: [unix:"+sock+"]", &cl.n
			}
			h := newHandler(t, proxyConfig(t, conf), Options{})
			base := front(t, h, nil)
			for i := range 20 {
				path := fmt.Sprintf("/r%d", i)
				if code, _, body := do(t, "GET", base+path, "", nil); code != 200 || body != "hello "+path {
					t.Fatalf("request %d: %d %q", i, code, body)
				}
			}
			expectConns(t, h, accepts, 1, 1, "20 sequential requests")
		})
	}
}

// TestLeanRetriesConnectionsClosedWhileIdle lets the upstream close its
// idle connections (as a Node server does after 5 s): the next request
// finds a dead connection in the pool and is retried on a fresh one, with
// no error, no log and no mark against the server; the other connections
// idle since before are dropped with it.
func TestLeanRetriesConnectionsClosedWhileIdle(t *testing.T) {
	var arrived sync.WaitGroup
	arrived.Add(3)
	hold := make(chan struct{})
	closed := make(chan struct{}, 10)
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			arrived.Done()
			select {
			case <-hold:
			case <-time.After(10 * time.Second):
			}
		}
		io.WriteString(w, "ok")
	}), func(s *httptest.Server) {
		s.Config.IdleTimeout = 100 * time.Millisecond
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				closed <- struct{}{}
			}
		}
	})
	log, sink := newLog(t)
	// A second, dead server turns passive health on.
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+", http://"+deadAddr(t)+"]\nbalance: first"), Options{Log: log})
	base := front(t, h, nil)

	// Three connections at once, then idle in the pool.
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			if code, _, body := do(t, "GET", base+"/hold", "", nil); code != 200 || body != "ok" {
				t.Errorf("hold: %d %q", code, body)
			}
		})
	}
	arrived.Wait()
	close(hold)
	wg.Wait()
	if n := idleLean(h); n != 3 {
		t.Fatalf("%d idle lean connections, want 3", n)
	}
	for i := range 3 {
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatalf("the upstream closed %d of 3 idle connections in 5s", i)
		}
	}

	if code, _, body := do(t, "GET", base+"/", "", nil); code != 200 || body != "ok" {
		t.Fatalf("after the idle close: %d %q, want 200 ok", code, body)
	}
	// 3, then one fresh for the retry; the stale ones dropped, the fresh one kept.
	expectConns(t, h, accepts, 4, 1, "a retry after idle closes")
	if n := sink.count(slog.LevelWarn); n != 0 {
		t.Errorf("%d Warn records for a transparent retry", n)
	}
	if !h.upstreams.up(h.upstreams.list[0]) {
		t.Error("the idle close marked the upstream down")
	}
}

// TestLeanConnectionClose: an upstream answering Connection: close gets a
// new connection for each request, without errors.
func TestLeanConnectionClose(t *testing.T) {
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		io.WriteString(w, "bye")
	}), nil)
	log, sink := newLog(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{Log: log})
	base := front(t, h, nil)
	for i := range 3 {
		code, hdr, body := do(t, "GET", base+"/", "", nil)
		if code != 200 || body != "bye" || hdr.Get("Connection") != "" {
			t.Fatalf("request %d: %d %q Connection %q", i, code, body, hdr.Get("Connection"))
		}
	}
	expectConns(t, h, accepts, 3, 0, "3 requests answered with Connection: close")
	if n := sink.count(slog.LevelWarn); n != 0 {
		t.Errorf("%d Warn records", n)
	}
}

// TestLeanResponseWithoutLength: a response with neither Content-Length
// nor chunked ends when the upstream closes; the whole body arrives and the
// connection is not reused.
func TestLeanResponseWithoutLength(t *testing.T) {
	addr, accepts := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close %s", req.URL.Path)
	})
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+addr+"]"), Options{})
	base := front(t, h, nil)
	for _, p := range []string{"/a", "/b"} {
		if code, _, body := do(t, "GET", base+p, "", nil); code != 200 || body != "until close "+p {
			t.Fatalf("GET %s: %d %q", p, code, body)
		}
	}
	expectConns(t, h, accepts, 2, 0, "2 responses without a length")
}

// TestLeanClientGoneMidResponse: the client leaves while the body streams;
// the upstream connection is closed (the upstream sees its request
// cancelled), nothing is logged and nothing goes back to the pool.
func TestLeanClientGoneMidResponse(t *testing.T) {
	canceled := make(chan struct{})
	b, _ := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part") // chunked: flushed through at once
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(canceled)
		case <-time.After(10 * time.Second):
		}
	}), nil)
	log, sink := newLog(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{Log: log})
	base := front(t, h, nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/stream", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(res.Body, buf); err != nil || string(buf) != "part" {
		t.Fatalf("first bytes %q, %v", buf, err)
	}
	cancel()
	res.Body.Close()
	select {
	case <-canceled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled when the client went away")
	}
	waitFor(t, 5*time.Second, "the proxied request to end", func() bool { return h.inflight.Load() == 0 })
	if n := sink.count(slog.LevelWarn); n != 0 {
		t.Errorf("%d Warn records for a client that went away", n)
	}
	if n := idleLean(h); n != 0 {
		t.Errorf("%d idle lean connections, want 0", n)
	}
}

// TestLeanResponseHeaderTimeout: a pooled connection whose server does not
// answer in response_header_timeout gives 504 and is closed; the next
// request gets a new connection.
func TestLeanResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "fast")
	}), nil)
	defer close(release)
	log, sink := newLog(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]\nresponse_header_timeout: 200ms"), Options{Log: log})
	base := front(t, h, nil)
	if code, _, _ := do(t, "GET", base+"/fast", "", nil); code != 200 || idleLean(h) != 1 {
		t.Fatalf("warm-up: %d, %d idle", code, idleLean(h))
	}
	start := time.Now()
	if code, _, body := do(t, "GET", base+"/slow", "", nil); code != 504 || body != "504 Gateway Timeout\n" {
		t.Errorf("slow: %d %q, want 504", code, body)
	}
	if d := time.Since(start); d < 200*time.Millisecond || d > 2*time.Second {
		t.Errorf("answered after %s, want about 200ms", d)
	}
	if recs := sink.find(slog.LevelWarn, "upstream failed"); len(recs) != 1 || attr(recs[0], "cause") != "timeout" {
		t.Errorf("want one Warn with cause timeout")
	}
	if code, _, body := do(t, "GET", base+"/fast", "", nil); code != 200 || body != "fast" {
		t.Errorf("after the timeout: %d %q", code, body)
	}
	if n := accepts.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2 (the timed-out one closed)", n)
	}
}

// TestLeanHEAD: a HEAD response has a Content-Length but no body; the
// connection serves the next request.
func TestLeanHEAD(t *testing.T) {
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "12345")
	}), nil)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	base := front(t, h, nil)
	for range 2 {
		code, hdr, body := do(t, "HEAD", base+"/", "", nil)
		if code != 200 || hdr.Get("Content-Length") != "5" || body != "" {
			t.Fatalf("HEAD: %d Content-Length %q body %q", code, hdr.Get("Content-Length"), body)
		}
	}
	if code, _, body := do(t, "GET", base+"/", "", nil); code != 200 || body != "12345" {
		t.Fatalf("GET after HEAD: %d %q", code, body)
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}

// TestLean1xx: informational responses before the final one reach the
// client as through the Transport (POST with a body), and the connection
// is reused after them.
func TestLean1xx(t *testing.T) {
	addr, accepts := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n"+
				"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+addr+"]"), Options{})
	base := front(t, h, nil)
	for _, tc := range []struct{ method, body string }{{"GET", ""}, {"GET", ""}, {"POST", "data"}} {
		var mu sync.Mutex
		var got []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%d %s", code, hdr.Get("Link")))
			return nil
		}}
		code, _, body := do(t, tc.method, base+"/", tc.body, trace)
		mu.Lock()
		if want := "[100  103 </a.css>; rel=preload]"; code != 200 || body != "ok" || fmt.Sprint(got) != want {
			t.Errorf("%s: %d %q, 1xx %q; want 200 ok, 1xx %s", tc.method, code, body, got, want)
		}
		mu.Unlock()
	}
	if n := accepts.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2 (one lean for both GETs, one for the POST)", n)
	}
}

// TestLeanFallback: requests with a body, DELETE and upgrades go through
// the Transport, whose connections are not the lean pool's.
func TestLeanFallback(t *testing.T) {
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.Method, body)
	}), nil)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	base := front(t, h, nil)
	for _, tc := range []struct{ method, body string }{{"POST", "x"}, {"DELETE", ""}, {"GET", "with a body"}, {"PUT", "y"}} {
		if code, _, body := do(t, tc.method, base+"/", tc.body, nil); code != 200 || body != tc.method+" "+tc.body {
			t.Errorf("%s: %d %q", tc.method, code, body)
		}
	}
	// One connection: the Transport's, reused.
	expectConns(t, h, accepts, 1, 0, "requests the lean client does not take")
	if code, _, body := do(t, "GET", base+"/", "", nil); code != 200 || body != "GET " {
		t.Errorf("GET: %d %q", code, body)
	}
	expectConns(t, h, accepts, 2, 1, "a GET")

	// An upgrade.
	ws := newWSBackend(t, false)
	hw := newHandler(t, proxyConfig(t, "upstreams: ["+ws.URL+"]"), Options{})
	c, _ := dialWS(t, nil, front(t, hw, nil), "/ws", nil)
	echo(t, c, "through the Transport")
	if n := idleLean(hw); n != 0 {
		t.Errorf("%d idle lean connections after an upgrade", n)
	}
	if !(&lean{}).takes(&http.Request{Method: "GET", Header: http.Header{}}) {
		t.Error("a plain GET is not taken")
	}
	var none *lean // keepalive: 0
	if none.takes(&http.Request{Method: "GET", Header: http.Header{}}) {
		t.Error("taken without a lean client")
	}
}

// TestLeanKeepAliveZero: with keepalive 0 every request gets its own
// connection, closed after it (the Transport, with Connection: close).
func TestLeanKeepAliveZero(t *testing.T) {
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Header.Get("Connection"))
	}), nil)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]\nkeepalive: 0"), Options{})
	if h.lean != nil {
		t.Fatal("a lean client with keepalive 0")
	}
	base := front(t, h, nil)
	for range 2 {
		if code, _, _ := do(t, "GET", base+"/", "", nil); code != 200 {
			t.Fatalf("GET: %d", code)
		}
	}
	if n := accepts.Load(); n != 2 {
		t.Errorf("%d upstream connections, want 2", n)
	}
}

// TestConnPool checks the bound of the idle pool, the idle timeout and
// Close.
func TestConnPool(t *testing.T) {
	var p *connPool
	pipe := func() (*leanConn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		p.open.Add(1)
		return &leanConn{conn: a, pool: p}, b
	}
	isClosed := func(peer net.Conn) bool {
		peer.SetReadDeadline(time.Now().Add(time.Second))
		_, err := peer.Read(make([]byte, 1))
		return err == io.EOF
	}

	p = &connPool{max: 2, idleTimeout: time.Hour}
	c1, _ := pipe()
	c2, _ := pipe()
	c3, _ := pipe()
	if !p.put(c1) || !p.put(c2) || p.put(c3) {
		t.Error("want the first two put, the third refused")
	}
	if got := p.get(); got != c2 {
		t.Error("get did not return the newest idle connection")
	}
	p.close()
	if p.get() != nil || p.put(c2) {
		t.Error("a closed pool gave or took a connection")
	}

	p = &connPool{max: 4, idleTimeout: 50 * time.Millisecond}
	var peers []net.Conn
	for range 2 {
		c, peer := pipe()
		p.put(c)
		peers = append(peers, peer)
	}
	waitFor(t, 5*time.Second, "the idle connections to time out", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.idle) == 0 && !p.armed
	})
	for i, peer := range peers {
		if !isClosed(peer) {
			t.Errorf("timed-out connection %d is open", i)
		}
	}
	// The timer works again after it went idle.
	c, peer := pipe()
	p.put(c)
	waitFor(t, 5*time.Second, "the next idle connection to time out", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.idle) == 0
	})
	if !isClosed(peer) {
		t.Error("the later connection is open after its timeout")
	}
	p.close()
}

// TestLeanTrailers: a chunked response's trailers reach the client, and
// the connection, read past them, serves the next request.
func TestLeanTrailers(t *testing.T) {
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "c0ffee")
	}), nil)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	base := front(t, h, nil)
	for i := range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/", nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		if err != nil || string(body) != "body" || res.Trailer.Get("X-Checksum") != "c0ffee" {
			t.Errorf("request %d: %q %v, trailer %q", i, body, err, res.Trailer.Get("X-Checksum"))
		}
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("%d upstream connections, want 1", n)
	}
}
