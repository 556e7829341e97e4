package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// parkedPipes returns how many tunnel directions of ts are parked.
func parkedPipes(ts *Tunnels) int { return ts.poll.len() }

// goroutinesIn counts the goroutines whose stack holds fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

// waitParked waits until both directions of every tunnel of h are parked
// and no copy goroutine is left.
func waitParked(t *testing.T, h *Handler) {
	t.Helper()
	if !pollerSupported {
		t.Skip("tunnels park only on Linux")
	}
	waitFor(t, 5*time.Second, "both directions parked", func() bool {
		return parkedPipes(h.tunnels) == 2*h.tunnels.Len() && goroutinesIn("edge/proxy.(*tunnel).copy") == 0
	})
}

// waitNoTunnelGoroutines waits until the tunnels' goroutines, the
// poller's included, have exited and the goroutine count is back to base.
func waitNoTunnelGoroutines(t *testing.T, base int) {
	t.Helper()
	waitFor(t, 5*time.Second, "the tunnel goroutines to exit", func() bool {
		return goroutinesIn("edge/proxy.(*tunnel).copy") == 0 && goroutinesIn("edge/proxy.(*poller).loop") == 0 &&
			runtime.NumGoroutine() <= base
	})
}

// pushBackend is a WebSocket echo server that answers "later N" with
// "pushed N" after a pause long enough for the tunnel to park.
func pushBackend(t *testing.T, tlsServer bool) *httptest.Server {
	up := websocket.Upgrader{}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
			if n, ok := strings.CutPrefix(string(msg), "later "); ok {
				time.Sleep(4 * parkAfter)
				msg = []byte("pushed " + n)
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	})
	var s *httptest.Server
	if tlsServer {
		s = httptest.NewTLSServer(h)
	} else {
		s = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	return s
}

// TestParkedTunnelResumes parks both directions of a tunnel and wakes each
// in turn: the client's message (client side parked), then the upstream's
// push (upstream side parked), over plain TCP and over TLS on both sides.
func TestParkedTunnelResumes(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "ws", true: "wss"}[secure], func(t *testing.T) {
			b := pushBackend(t, secure)
			snippet := "upstreams: [" + b.URL + "]"
			if secure {
				ca := filepath.Join(t.TempDir(), "ca.pem")
				os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Certificate().Raw}), 0o600)
				snippet += "\ntls: {ca: " + ca + "}"
			}
			h := newHandler(t, proxyConfig(t, snippet), Options{})
			fs := httptest.NewUnstartedServer(h)
			d := &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
			if secure {
				fs.StartTLS()
				roots := x509.NewCertPool()
				roots.AddCert(fs.Certificate())
				d.TLSClientConfig = &tls.Config{RootCAs: roots}
			} else {
				fs.Start()
			}
			defer fs.Close()
			c, _ := dialWS(t, d, fs.URL, "/ws", nil)
			echo(t, c, "first")
			for i := range 3 {
				waitParked(t, h)
				echo(t, c, fmt.Sprint("after park ", i))
				waitParked(t, h)
				c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint("later ", i)))
				waitParked(t, h) // the upstream has not answered yet
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, msg, err := c.ReadMessage(); err != nil || string(msg) != fmt.Sprint("pushed ", i) {
					t.Fatalf("read push %d: %q, %v", i, msg, err)
				}
			}
			// A message larger than the small buffer, both ways.
			big := strings.Repeat("x", 5*smallBuf+7)
			c.WriteMessage(websocket.TextMessage, []byte(big))
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, msg, err := c.ReadMessage(); err != nil || string(msg) != big {
				t.Fatalf("echo of %d bytes: %d bytes, %v", len(big), len(msg), err)
			}
		})
	}
}

// batchConn holds what is written to it until flush, so that several TLS
// records reach the peer in one segment.
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	held     []byte
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.batching {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

func (c *batchConn) flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batching = false
	_, err := c.Conn.Write(c.held)
	c.held = nil
	return err
}

// TestParkedTunnelTLSRecordsInOneSegment sends two WebSocket frames to a
// parked tunnel as two TLS records in one TCP segment: crypto/tls returns
// one record per read and keeps the other buffered, which a parked
// direction must not leave behind (the socket stays quiet after it).
func TestParkedTunnelTLSRecordsInOneSegment(t *testing.T) {
	b := newWSBackend(t, false)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	fs := httptest.NewTLSServer(h)
	defer fs.Close()
	raw, err := net.Dial("tcp", fs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	bc := &batchConn{Conn: raw}
	conn := tls.Client(bc, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	addr := fs.Listener.Addr().String()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nOrigin: https://%s\r\n\r\n",
		addr, wsKey, addr)
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", res, err)
	}
	for round := range 2 {
		waitParked(t, h)
		bc.mu.Lock()
		bc.batching = true
		bc.mu.Unlock()
		writeClientFrame(t, conn, 0x1, []byte(fmt.Sprint("one ", round)))
		writeClientFrame(t, conn, 0x1, []byte(fmt.Sprint("two ", round)))
		if err := bc.flush(); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"one ", "two "} {
			op, p := readFrame(t, br)
			if op != 0x1 || string(p) != fmt.Sprint(want, round) {
				t.Fatalf("echo = %d %q, want %q", op, p, fmt.Sprint(want, round))
			}
		}
	}
}

// TestParkedTunnelCloseAll closes parked tunnels with CloseTunnels: both
// peers get their 1001, and no goroutine is left.
func TestParkedTunnelCloseAll(t *testing.T) {
	b := newWSBackend(t, false)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	base := front(t, h, nil)
	waitNoTunnelGoroutines(t, runtime.NumGoroutine()+100) // a poller of an earlier test
	g0 := runtime.NumGoroutine()
	c1, _ := dialWS(t, nil, base, "/a", nil)
	c2, _ := dialWS(t, nil, base, "/b", nil)
	echo(t, c1, "x")
	echo(t, c2, "y")
	waitParked(t, h)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { h.CloseTunnels(ctx); close(done) }()
	expectGoingAway(t, b, done, c1, c2)
	if n := h.tunnels.Len(); n != 0 {
		t.Errorf("%d tunnels left", n)
	}
	waitNoTunnelGoroutines(t, g0)
}

// TestParkedTunnelPeerReset resets one peer of a parked tunnel, the client
// or the upstream: the tunnel ends, the other peer's connection is closed,
// and no goroutine is left. A silent close of a parked tunnel (idle
// timeout) ends it too.
func TestParkedTunnelPeerReset(t *testing.T) {
	for _, tc := range []string{"client", "upstream", "idle timeout"} {
		t.Run(tc, func(t *testing.T) {
			upConns := make(chan *websocket.Conn, 1)
			upEnded := make(chan struct{})
			up := websocket.Upgrader{}
			b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				c, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer c.Close()
				upConns <- c
				for {
					mt, msg, err := c.ReadMessage()
					if err != nil {
						close(upEnded)
						return
					}
					c.WriteMessage(mt, msg)
				}
			}))
			defer b.Close()
			snippet := "upstreams: [" + b.URL + "]"
			if tc == "idle timeout" {
				snippet += "\ntunnel_idle_timeout: 700ms"
			}
			h := newHandler(t, proxyConfig(t, snippet), Options{})
			base := front(t, h, nil)
			waitNoTunnelGoroutines(t, runtime.NumGoroutine()+100)
			g0 := runtime.NumGoroutine()
			c, _ := dialWS(t, nil, base, "/ws", nil)
			uc := <-upConns
			echo(t, c, "hello")
			waitParked(t, h)
			switch tc {
			case "client":
				c.UnderlyingConn().(*net.TCPConn).SetLinger(0)
				c.UnderlyingConn().Close()
				select {
				case <-upEnded: // the proxy closed the upstream connection
				case <-time.After(5 * time.Second):
					t.Fatal("the upstream connection stayed open")
				}
			case "upstream":
				uc.UnderlyingConn().(*net.TCPConn).SetLinger(0)
				uc.UnderlyingConn().Close()
			}
			if tc != "client" {
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, _, err := c.ReadMessage(); err == nil {
					t.Fatal("client read a message, want the connection closed")
				}
			}
			waitFor(t, 5*time.Second, "the tunnel to end", func() bool { return h.tunnels.Len() == 0 })
			if n := parkedPipes(h.tunnels); n != 0 {
				t.Errorf("%d pipes still parked", n)
			}
			c.Close()
			waitNoTunnelGoroutines(t, g0)
		})
	}
}

type withNetConn struct{ net.Conn }

func (c withNetConn) NetConn() net.Conn { return c.Conn }

type opaque struct{ net.Conn }

// TestSocketOf finds the socket under TLS and wrappers that have NetConn
// (the server's), and none under a wrapper that hides it.
func TestSocketOf(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		name string
		conn net.Conn
		want bool
	}{
		{"tcp", c, true},
		{"tls", tls.Client(c, &tls.Config{}), true},
		{"wrapped tls over wrapped tcp", withNetConn{tls.Client(withNetConn{c}, &tls.Config{})}, true},
		{"opaque under tls", tls.Client(opaque{c}, &tls.Config{}), false},
		{"nil", nil, false},
	} {
		if got := socketOf(tc.conn) != nil; got != tc.want {
			t.Errorf("%s: socketOf found a socket: %v, want %v", tc.name, got, tc.want)
		}
	}
}
