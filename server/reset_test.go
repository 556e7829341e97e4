package server

import (
	"bufio"
	"bytes"
	"context"
	cryptotls "crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"edge/config"
)

// counting is a route handler that counts its calls and, on /slow, waits
// for the request's end as a handler waiting on an upstream would.
type counting struct {
	calls  atomic.Int64
	mu     sync.Mutex
	byConn map[string]int // remote address -> requests
}

func (c *counting) build(*config.Site, *config.Route) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.calls.Add(1)
		c.mu.Lock()
		if c.byConn == nil {
			c.byConn = map[string]int{}
		}
		c.byConn[r.RemoteAddr]++
		c.mu.Unlock()
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(w, "ok")
	}), nil
}

func h2Client(cconf *cryptotls.Config, dials *atomic.Int64) *http.Client {
	tr := &http.Transport{TLSClientConfig: cconf.Clone(), ForceAttemptHTTP2: true}
	tr.DialContext = func(ctx context.Context, n, a string) (net.Conn, error) {
		if dials != nil {
			dials.Add(1)
		}
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func TestHostileRapidReset(t *testing.T) {
	var h counting
	sconf, cconf := selfSigned(t)
	addr := edgeListener(t, plainYAML, h.build, nil, Options{ReadHeaderTimeout: 5 * time.Second}, sconf)

	cc := cconf.Clone()
	cc.NextProtos = []string{"h2"}
	c, err := cryptotls.Dial("tcp", addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	// Read (and drop) what the server sends until it closes.
	closed := make(chan error, 1)
	go func() {
		fr := http2.NewFramer(io.Discard, c)
		for {
			if _, err := fr.ReadFrame(); err != nil {
				closed <- err
				return
			}
		}
	}()
	bw := bufio.NewWriterSize(c, 64<<10)
	io.WriteString(bw, http2.ClientPreface)
	fr := http2.NewFramer(bw, nil)
	fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/slow"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}

	// A normal client on another connection, during the attack.
	normal := make(chan error, 1)
	const pairs = 20000
	sent := 0
	for sent < pairs {
		id := uint32(2*sent + 1)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
		fr.WriteRSTStream(id, http2.ErrCodeCancel)
		sent++
		if sent%50 == 0 {
			if err := bw.Flush(); err != nil {
				break // the server closed the connection
			}
		}
		if sent == 500 {
			go func() {
				cl := h2Client(cconf, nil)
				defer cl.CloseIdleConnections()
				resp, err := cl.Get("https://" + addr + "/")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
						err = fmt.Errorf("status %d over %s", resp.StatusCode, resp.Proto)
					}
				}
				normal <- err
			}()
		}
	}
	bw.Flush()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("connection still open after %d HEADERS+RST_STREAM pairs", sent)
	}
	t.Logf("%d pairs written before the close, handler ran %d times", sent, h.calls.Load())
	if n := h.calls.Load(); n >= 2000 {
		t.Errorf("handler ran %d times for %d reset streams, want far fewer (budget %d/s)", n, sent, ResetBudget)
	}
	if err := <-normal; err != nil {
		t.Errorf("normal client during the attack: %v", err)
	}
	mustGet200TLS(t, cconf, addr)
}

func mustGet200TLS(t *testing.T, cconf *cryptotls.Config, addr string) {
	t.Helper()
	cl := h2Client(cconf, nil)
	defer cl.CloseIdleConnections() // Shutdown would wait for it
	resp, err := cl.Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("normal client after the attack: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("normal client after the attack: %d", resp.StatusCode)
	}
}

// TestHostileBrowserCancelsAreFine: a few cancelled requests on a
// connection (a page navigating away) do not close it.
func TestHostileBrowserCancelsAreFine(t *testing.T) {
	var h counting
	sconf, cconf := selfSigned(t)
	addr := edgeListener(t, plainYAML, h.build, nil, Options{}, sconf)
	var dials atomic.Int64
	cl := h2Client(cconf, &dials)
	defer cl.CloseIdleConnections()
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/slow", nil)
		if resp, err := cl.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	// Then many ordinary requests, some at once, HEAD included: none of
	// them counts as a reset.
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				method := []string{"GET", "HEAD"}[i%2]
				req, _ := http.NewRequest(method, "https://"+addr+"/", nil)
				resp, err := cl.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Errorf("client dialled %d times, want 1 (the connection kept)", n)
	}
}

func TestHostileMaxRequestsPerConnection(t *testing.T) {
	t.Run("HTTP/1.1", func(t *testing.T) {
		var h counting
		addr := edgeUnder(t, plainYAML, h.build, nil, Options{MaxRequestsPerConn: 3})
		get := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
		raw, closed := rawExchange(t, addr, strings.Repeat(get, 5), 5*time.Second)
		if st := statusLines(raw); len(st) != 3 {
			t.Errorf("status lines %q, want 3 responses", st)
		}
		if strings.Count(raw, "Connection: close") != 1 {
			t.Errorf("want Connection: close on the third response only: %q", raw)
		}
		if !closed {
			t.Error("connection open after the third request")
		}
		if n := h.calls.Load(); n != 3 {
			t.Errorf("handler ran %d times, want 3", n)
		}
		mustGet200(t, addr, "/")
	})
	t.Run("HTTP/2", func(t *testing.T) {
		var h counting
		sconf, cconf := selfSigned(t)
		addr := edgeListener(t, plainYAML, h.build, nil, Options{MaxRequestsPerConn: 3}, sconf)
		var dials atomic.Int64
		cl := h2Client(cconf, &dials)
		defer cl.CloseIdleConnections()
		for i := 0; i < 9; i++ {
			resp, err := cl.Get("https://" + addr + "/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				t.Fatalf("request %d: %d over %s", i, resp.StatusCode, resp.Proto)
			}
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for conn, n := range h.byConn {
			if n > 3 {
				t.Errorf("connection %s carried %d requests, want at most 3", conn, n)
			}
		}
		if n := dials.Load(); n < 3 {
			t.Errorf("client dialled %d times for 9 requests, want at least 3", n)
		}
	})
}

// TestHijackedConnKeepsSocket: the guard keeps the plain socket reachable
// for the hub's fan-out after a hijack, and hides it over TLS, where the
// bytes must go through the *tls.Conn.
func TestHijackedConnKeepsSocket(t *testing.T) {
	sconf, cconf := selfSigned(t)
	for _, useTLS := range []bool{false, true} {
		var sock atomic.Bool
		build := func(*config.Site, *config.Route) (http.Handler, error) {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nc, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer nc.Close()
				if sc, ok := nc.(syscall.Conn); ok {
					if _, err := sc.SyscallConn(); err == nil {
						sock.Store(true)
					}
				}
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nhello")
				brw.Flush()
			}), nil
		}
		var conf *cryptotls.Config
		if useTLS {
			conf = sconf
		}
		addr := edgeListener(t, plainYAML, build, nil, Options{}, conf)
		var c net.Conn
		var err error
		if useTLS {
			cc := cconf.Clone()
			cc.NextProtos = []string{"http/1.1"}
			c, err = cryptotls.Dial("tcp", addr, cc)
		} else {
			c, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		raw, _ := readUntilClose(c, 5*time.Second)
		c.Close()
		if !strings.HasSuffix(raw, "\r\n\r\nhello") {
			t.Errorf("tls=%v: client read %q", useTLS, raw)
		}
		if sock.Load() == useTLS {
			t.Errorf("tls=%v: hijacked conn exposes a socket: %v", useTLS, sock.Load())
		}
	}
}
