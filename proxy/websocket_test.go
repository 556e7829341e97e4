package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

func TestWebSocketThroughProxyToNodeWS(t *testing.T) {
	node := startNodeWS(t)
	reg := prometheus.NewRegistry()
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+node.addr+"]"), Options{Registerer: reg, Site: "s", Route: "/socket/"})
	base := front(t, h, nil)

	// As a browser sends it: Origin, compression offer, a subprotocol.
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, EnableCompression: true}
	hdr := http.Header{"Origin": {"https://dash.example.com"}, "User-Agent": {"Mozilla/5.0"}}
	c, res := dialWS(t, d, base, "/socket/?channel=orders", hdr)
	if res.StatusCode != 101 {
		t.Fatalf("status %d, want 101", res.StatusCode)
	}
	if ext := res.Header.Get("Sec-Websocket-Extensions"); !strings.Contains(ext, "permessage-deflate") {
		t.Errorf("Sec-WebSocket-Extensions = %q: compression was not negotiated end to end", ext)
	}
	got := firstMessageHeaders(t, c)
	for k, want := range map[string]string{
		"connection": "Upgrade", "upgrade": "websocket", "origin": "https://dash.example.com",
		"x-forwarded-for": "127.0.0.1", "x-forwarded-proto": "http", "sec-websocket-version": "13",
	} {
		if got[k] != want {
			t.Errorf("node saw %s: %v, want %q", k, got[k], want)
		}
	}
	echo(t, c, "hello node")
	echo(t, c, strings.Repeat("big ", 50_000)) // crosses the small buffer
	if v := metricValue(t, reg, "edge_proxy_tunnels_open", "s", "/socket/"); v != 1 {
		t.Errorf("edge_proxy_tunnels_open = %v, want 1", v)
	}
	c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); !websocket.IsCloseError(err, 1000) {
		t.Errorf("close reply: %v", err)
	}
	c.Close()
	select {
	case line := <-node.lines:
		if line != "close 1000 bye" {
			t.Errorf("node: %q, want close 1000 bye", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("node saw no close")
	}
	waitFor(t, 5*time.Second, "the tunnel to end", func() bool { return h.tunnels.Len() == 0 })
	if v := metricValue(t, reg, "edge_proxy_tunnels_open", "s", "/socket/"); v != 0 {
		t.Errorf("edge_proxy_tunnels_open = %v after close, want 0", v)
	}
}

func TestWebSocketFirefoxConnectionHeader(t *testing.T) {
	node := startNodeWS(t)
	gb := newWSBackend(t, false)
	for _, tc := range []struct{ name, upstream string }{
		{"node ws", "http://" + node.addr},
		{"gorilla", gb.URL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler(t, proxyConfig(t, "upstreams: ["+tc.upstream+"]"), Options{})
			addr := strings.TrimPrefix(front(t, h, nil), "http://")
			conn, br := rawHandshake(t, addr, "Connection: keep-alive, Upgrade\r\nKeep-Alive: 300\r\n")
			if tc.name == "node ws" {
				readFrame(t, br) // the headers message
			}
			writeClientFrame(t, conn, 0x1, []byte("firefox"))
			if op, p := readFrame(t, br); op != 0x1 || string(p) != "firefox" {
				t.Errorf("echo: opcode %d %q", op, p)
			}
		})
	}
	select {
	case hdr := <-gb.headers:
		if hdr.Get("Connection") != "Upgrade" || hdr.Get("Keep-Alive") != "" {
			t.Errorf("upstream saw Connection %q Keep-Alive %q", hdr.Get("Connection"), hdr.Get("Keep-Alive"))
		}
	default:
		t.Error("gorilla backend saw no upgrade")
	}
}

const wsKey = "dGhlIHNhbXBsZSBub25jZQ=="

// rawHandshake opens a WebSocket by hand, with extra request header lines,
// and checks the 101.
func rawHandshake(t *testing.T, addr, extra string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\n%sUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nOrigin: http://%s\r\n\r\n",
		addr, extra, wsKey, addr)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum([]byte(wsKey + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if res.StatusCode != 101 || res.Header.Get("Upgrade") != "websocket" || res.Header.Get("Connection") != "Upgrade" ||
		res.Header.Get("Sec-Websocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("handshake: %d %v", res.StatusCode, res.Header)
	}
	return conn, br
}

func writeClientFrame(t *testing.T, w io.Writer, op byte, payload []byte) {
	t.Helper()
	if len(payload) > 125 {
		t.Fatal("test frames are short")
	}
	key := [4]byte{1, 2, 3, 4}
	f := []byte{0x80 | op, 0x80 | byte(len(payload)), key[0], key[1], key[2], key[3]}
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	if _, err := w.Write(f); err != nil {
		t.Fatal(err)
	}
}

// readFrame reads one frame, unmasking it if needed.
func readFrame(t *testing.T, br *bufio.Reader) (byte, []byte) {
	t.Helper()
	var h [2]byte
	if _, err := io.ReadFull(br, h[:]); err != nil {
		t.Fatal(err)
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if h[1]&0x80 != 0 {
		io.ReadFull(br, key[:])
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(br, p); err != nil {
		t.Fatal(err)
	}
	if h[1]&0x80 != 0 {
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, p
}

func TestWebSocketOverHTTPSFrontAndUpstream(t *testing.T) {
	b := newWSBackend(t, true)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Certificate().Raw}), 0o600)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]\ntls: {ca: "+ca+"}"), Options{})
	fs := httptest.NewUnstartedServer(h)
	fs.EnableHTTP2 = true // pages come over h2; the WebSocket still opens over HTTP/1.1
	fs.StartTLS()
	defer fs.Close()
	roots := x509.NewCertPool()
	roots.AddCert(fs.Certificate())
	d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second, TLSClientConfig: &tls.Config{RootCAs: roots}}
	c, res := dialWS(t, d, fs.URL, "/socket/", nil)
	if res.Header.Get("X-Backend-Proto") != "HTTP/1.1" {
		t.Errorf("upstream saw %q, want HTTP/1.1", res.Header.Get("X-Backend-Proto"))
	}
	echo(t, c, "over wss")
	if hdr := <-b.headers; hdr.Get("X-Forwarded-Proto") != "https" {
		t.Errorf("X-Forwarded-Proto = %q", hdr.Get("X-Forwarded-Proto"))
	}
}

func TestTunnelOutlivesServerTimeouts(t *testing.T) {
	b := newWSBackend(t, false)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	const short = 300 * time.Millisecond
	base := front(t, h, func(s *http.Server) {
		s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout = short, short, short, short
	})
	c, _ := dialWS(t, nil, base, "/ws", nil)
	echo(t, c, "before")
	time.Sleep(4 * short) // idle well past every server timeout
	echo(t, c, "after")
	if n := h.tunnels.Len(); n != 1 {
		t.Errorf("%d tunnels open, want 1", n)
	}
}

func TestTunnelIdleTimeout(t *testing.T) {
	b := newWSBackend(t, false)
	const idle = 500 * time.Millisecond
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]\ntunnel_idle_timeout: 500ms"), Options{})
	c, _ := dialWS(t, nil, front(t, h, nil), "/ws", nil)
	// Traffic keeps it open past the idle timeout.
	for i := range 8 {
		time.Sleep(idle / 5)
		echo(t, c, fmt.Sprint("keep ", i))
	}
	last := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err := c.ReadMessage()
	quiet := time.Since(last)
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("silent tunnel not closed by the proxy: %v", err)
	}
	if quiet < idle || quiet > idle+2*time.Second {
		t.Errorf("closed after %s of silence, want about %s", quiet, idle)
	}
	select {
	case <-b.closes:
	case <-time.After(5 * time.Second):
		t.Error("the upstream side was not closed")
	}
	waitFor(t, 5*time.Second, "the tunnel set to empty", func() bool { return h.tunnels.Len() == 0 })
}

func TestCloseTunnelsSends1001(t *testing.T) {
	b := newWSBackend(t, false)
	reg := prometheus.NewRegistry()
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{Registerer: reg})
	base := front(t, h, nil)
	c1, _ := dialWS(t, nil, base, "/a", nil)
	c2, _ := dialWS(t, nil, base, "/b", nil)
	echo(t, c1, "x")
	echo(t, c2, "y")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	start := time.Now()
	go func() { h.CloseTunnels(ctx); close(done) }()
	expectGoingAway(t, b, done, c1, c2)
	if d := time.Since(start); d >= goAwayLinger {
		t.Errorf("CloseTunnels took %s although both peers closed", d)
	}
	if h.tunnels.Len() != 0 || metricValue(t, reg, "edge_proxy_tunnels_open", "", "") != 0 {
		t.Errorf("tunnels left open")
	}
}

// TestCloseTunnelsWaitsForFrameBoundary has the upstream stop in the middle
// of a frame when CloseTunnels comes: the close frame must follow the end of
// that frame, never cut it.
func TestCloseTunnelsWaitsForFrameBoundary(t *testing.T) {
	half := make(chan struct{})
	rest := make(chan struct{})
	fromProxy := make(chan []byte, 1)
	addr := rawUpgradeBackend(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		sum := sha1.Sum([]byte(req.Header.Get("Sec-Websocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
			base64.StdEncoding.EncodeToString(sum[:]))
		msg := []byte("a frame cut in two halves")
		c.Write(append([]byte{0x81, byte(len(msg))}, msg[:10]...))
		close(half)
		<-rest
		c.Write(msg[10:])
		all, _ := io.ReadAll(br) // until the proxy closes
		fromProxy <- all
	})
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+addr+"]"), Options{})
	c, _ := dialWS(t, nil, front(t, h, nil), "/ws", nil)
	<-half
	var tun *tunnel
	waitFor(t, 5*time.Second, "the tunnel", func() bool {
		if l := h.tunnels.snapshot(); len(l) == 1 {
			tun = l[0]
		}
		if tun == nil {
			return false
		}
		p := &tun.pipes[toClient]
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.n == 12
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go h.CloseTunnels(ctx)
	waitFor(t, 5*time.Second, "the close to wait for the frame end", func() bool {
		p := &tun.pipes[toClient]
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.goingAway
	})
	close(rest)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, msg, err := c.ReadMessage(); err != nil || string(msg) != "a frame cut in two halves" {
		t.Fatalf("got %q, %v; want the whole frame first", msg, err)
	}
	_, _, err := c.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
		t.Errorf("then %v, want close 1001", err)
	}
	c.Close()
	select {
	case got := <-fromProxy:
		// gorilla's reply may follow; the first frame must be our masked 1001.
		br := bufio.NewReader(bytes.NewReader(got))
		if len(got) < 2 || got[1]&0x80 == 0 {
			t.Fatalf("upstream got %x, want a masked frame", got)
		}
		op, p := readFrame(t, br)
		if op != 0x8 || len(p) < 2 || binary.BigEndian.Uint16(p) != 1001 {
			t.Errorf("upstream got opcode %d payload %q, want close 1001", op, p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream side not closed")
	}
}

// rawUpgradeBackend serves each connection with handle after reading the
// request; it returns the listening address.
func rawUpgradeBackend(t *testing.T, handle func(c net.Conn, br *bufio.Reader, req *http.Request)) string {
	t.Helper()
	addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		handle(c, br, req)
	})
	return addr
}

// TestNonWebSocketUpgrade tunnels a made-up protocol: bytes the client
// pipelined behind its request, half-close both ways, and CloseTunnels
// closing it without frames.
func TestNonWebSocketUpgrade(t *testing.T) {
	addr := rawUpgradeBackend(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		if req.Header.Get("Upgrade") != "echo/1" {
			fmt.Fprint(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
		io.Copy(c, br) // echo until the client half-closes
		io.WriteString(c, "bye")
	})
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+addr+"]"), Options{})
	faddr := strings.TrimPrefix(front(t, h, nil), "http://")
	conn, err := net.DialTimeout("tcp", faddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	// The request and the first bytes of the new protocol in one write.
	fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\nearly ")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", res, err)
	}
	io.WriteString(conn, "late")
	conn.(*net.TCPConn).CloseWrite()
	all, err := io.ReadAll(br)
	if string(all) != "early latebye" {
		t.Errorf("got %q (%v), want %q", all, err, "early latebye")
	}
	waitFor(t, 5*time.Second, "the tunnel to end after both halves closed", func() bool { return h.tunnels.Len() == 0 })

	// CloseTunnels just closes a non-WebSocket tunnel.
	conn2, err := net.DialTimeout("tcp", faddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn2, "GET /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo/1\r\n\r\n")
	br2 := bufio.NewReader(conn2)
	if res, err := http.ReadResponse(br2, nil); err != nil || res.StatusCode != 101 {
		t.Fatalf("handshake: %v %v", res, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	h.CloseTunnels(ctx)
	if n, err := br2.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Errorf("read after CloseTunnels: %d %v, want EOF", n, err)
	}
}

func TestUpgradeRetriedOnConnectFailure(t *testing.T) {
	b := newWSBackend(t, false)
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+deadAddr(t)+", "+b.URL+"]\nbalance: first"), Options{})
	c, _ := dialWS(t, nil, front(t, h, nil), "/ws", nil)
	echo(t, c, "second server")
}

func TestUpgradeAnsweredWithoutSwitch(t *testing.T) {
	refuse := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no token", http.StatusForbidden)
	}))
	defer refuse.Close()
	wrong := rawUpgradeBackend(t, func(c net.Conn, br *bufio.Reader, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: other\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	for _, tc := range []struct {
		upstream string
		status   int
	}{
		{refuse.URL, 403},        // the app's refusal reaches the client as is
		{"http://" + wrong, 502}, // a switch to another protocol is not passed on
	} {
		h := newHandler(t, proxyConfig(t, "upstreams: ["+tc.upstream+"]"), Options{})
		d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
		_, res, err := d.Dial("ws"+strings.TrimPrefix(front(t, h, nil), "http")+"/ws", nil)
		if err == nil || res == nil || res.StatusCode != tc.status {
			t.Errorf("%s: got %v %v, want %d", tc.upstream, res, err, tc.status)
		}
	}
}

// TestReloadKeepsTunnels swaps handlers as a reload does: the old one is
// closed, its tunnel keeps working, and CloseTunnels on the new one reaches
// both tunnels through the shared set.
func TestReloadKeepsTunnels(t *testing.T) {
	b := newWSBackend(t, false)
	var ts Tunnels
	cfg := proxyConfig(t, "upstreams: ["+b.URL+"]")
	h1 := newHandler(t, cfg, Options{Tunnels: &ts})
	var cur atomic.Pointer[Handler]
	cur.Store(h1)
	base := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { cur.Load().ServeHTTP(w, r) }), nil)
	old, _ := dialWS(t, nil, base, "/ws", nil)
	echo(t, old, "before reload")

	h2 := newHandler(t, cfg, Options{Tunnels: &ts})
	cur.Store(h2)
	h1.Close()
	echo(t, old, "after reload")
	fresh, _ := dialWS(t, nil, base, "/ws", nil)
	echo(t, fresh, "new handler")
	if ts.Len() != 2 {
		t.Fatalf("%d tunnels, want 2", ts.Len())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go h2.CloseTunnels(ctx)
	for _, c := range []*websocket.Conn{old, fresh} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ReadMessage()
		if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Errorf("got %v, want close 1001", err)
		}
	}
}

func TestFrameScanner(t *testing.T) {
	frame := func(masked bool, n int) []byte {
		var f []byte
		switch {
		case n < 126:
			f = []byte{0x82, byte(n)}
		case n < 1<<16:
			f = []byte{0x82, 126, byte(n >> 8), byte(n)}
		default:
			f = []byte{0x82, 127, 0, 0, 0, 0, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
		}
		if masked {
			f[1] |= 0x80
			f = append(f, 1, 2, 3, 4)
		}
		return append(f, make([]byte, n)...)
	}
	var stream []byte
	var ends []int
	for _, tc := range []struct {
		masked bool
		n      int
	}{{false, 0}, {true, 5}, {false, 125}, {true, 126}, {false, 70000}, {true, 0}} {
		stream = append(stream, frame(tc.masked, tc.n)...)
		ends = append(ends, len(stream))
	}
	// Fed in every chunk size, the scanner finds exactly the frame ends.
	for _, chunk := range []int{1, 2, 3, 7, 100, 4096, len(stream)} {
		var f frameScanner
		var got []int
		pos := 0
		for pos < len(stream) {
			b := stream[pos:min(pos+chunk, len(stream))]
			for len(b) > 0 {
				n, boundary := f.scan(b, true)
				pos += n
				b = b[n:]
				if boundary {
					got = append(got, pos)
				}
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(ends) {
			t.Errorf("chunk %d: boundaries %v, want %v", chunk, got, ends)
		}
		if !f.atBoundary() {
			t.Errorf("chunk %d: not at a boundary at the end", chunk)
		}
	}
	var f frameScanner
	if _, b := f.scan(stream[:ends[2]+1], false); b {
		t.Error("boundary reported inside a frame header")
	}
	// closeFrame is a valid close frame, masked or not.
	for _, masked := range []bool{false, true} {
		op, p := readFrame(t, bufio.NewReader(bytes.NewReader(closeFrame(masked))))
		if op != 8 || binary.BigEndian.Uint16(p) != 1001 || string(p[2:]) != "going away" {
			t.Errorf("closeFrame(%v) = opcode %d %q", masked, op, p)
		}
	}
}
