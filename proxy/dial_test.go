package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"edge/config"
	"edge/internal/testutil"
)

// TestNewRefusesConfigWithoutDefaults: the defaults live in config only;
// a Proxy built by hand, without them, is refused rather than given a
// second copy of each default.
func TestNewRefusesConfigWithoutDefaults(t *testing.T) {
	if _, err := New(&config.Proxy{Upstreams: []config.Upstream{{URL: "http://127.0.0.1:1"}}}, Options{}); !errors.Is(err, errNoDefaults) {
		t.Errorf("New without defaults: %v, want errNoDefaults", err)
	}
}

// TestNewRefusesPartlyDefaultedConfig: a config with some defaults set by
// hand and others missing is refused too (a missing balance or weight was
// given a second default in the pool).
func TestNewRefusesPartlyDefaultedConfig(t *testing.T) {
	for name, change := range map[string]func(*config.Proxy){
		"balance":             func(c *config.Proxy) { c.Balance = "" },
		"weight":              func(c *config.Proxy) { c.Upstreams[0].Weight = 0 },
		"fail_timeout":        func(c *config.Proxy) { c.Upstreams[0].FailTimeout = 0 },
		"response_header":     func(c *config.Proxy) { c.ResponseHeaderTimeout = 0 },
		"health_check.passes": func(c *config.Proxy) { c.HealthCheck.Passes = 0 },
	} {
		cfg := proxyConfig(t, "upstreams: [http://127.0.0.1:1]\nhealth_check: {}")
		change(cfg)
		if _, err := New(cfg, Options{}); !errors.Is(err, errNoDefaults) {
			t.Errorf("New without the %s default: %v, want errNoDefaults", name, err)
		}
	}
}

// TestKeepAliveDefault: a route without a keepalive key keeps 64 idle
// connections per upstream, as config and the README say, on both the lean
// client and the Transport. Regression: the proxy had its own fallback of
// 32, so 40 concurrent requests left 8 connections closed.
func TestKeepAliveDefault(t *testing.T) {
	const n = 40 // above the old 32, within 64
	arrived := make(chan struct{}, n)
	release := make(chan struct{})
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.Write([]byte("ok"))
	}), nil)
	cfg := proxyConfig(t, "upstreams: ["+b.URL+"]")
	if *cfg.KeepAlive != 64 {
		t.Fatalf("config default keepalive = %d, want 64 (README)", *cfg.KeepAlive)
	}
	h := newHandler(t, cfg, Options{})
	if got := h.transport.(*http.Transport).MaxIdleConnsPerHost; got != 64 {
		t.Errorf("Transport MaxIdleConnsPerHost = %d, want 64", got)
	}
	done := make(chan int, n)
	for range n {
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req := httptest.NewRequestWithContext(ctx, http.MethodGet, "http://edge.test/", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			done <- rec.Code
		}()
	}
	for range n {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatal("requests did not reach the backend concurrently")
		}
	}
	close(release)
	for range n {
		if code := <-done; code != http.StatusOK {
			t.Errorf("status %d, want 200", code)
		}
	}
	expectConns(t, h, accepts, n, n, "40 concurrent requests")
}

// TestDialSlots: with max_concurrent_dials slots taken, the Transport's
// dial waits and gives up with the request's context, and a slot given
// back lets the next dial through.
func TestDialSlots(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+ln.Addr().String()+"]\nmax_concurrent_dials: 2"), Options{})
	d := h.transport.(*http.Transport).DialContext
	addr := h.upstreams.list[0].addr
	ctx := t.Context()
	for range 2 {
		if err := h.lean.dialer.acquire(ctx, addr); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if c, err := d(short, "tcp", addr); !errors.Is(err, context.DeadlineExceeded) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial with every slot taken: %v, want the context's deadline", err)
	}
	h.lean.dialer.release(addr)
	c, err := d(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial after a slot was given back: %v", err)
	}
	c.Close()
	if n := len(h.lean.dialer.slots[addr]); n != 1 {
		t.Errorf("%d slots taken after the dial, want 1 (the test's)", n)
	}
}

// TestLeanKeepsConnectionOfCancelledRequest: a client that goes away
// before the upstream answered does not cost the upstream its connection:
// the response, when it comes soon, is read and the connection serves the
// next request.
func TestLeanKeepsConnectionOfCancelledRequest(t *testing.T) {
	arrived, release := make(chan struct{}), make(chan struct{})
	b, accepts := countingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-release
		}
		w.Write([]byte("ok"))
	}), nil)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+b.URL+"]"), Options{})
	gone := make(chan struct{})
	base := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			context.AfterFunc(r.Context(), func() { close(gone) })
		}
		h.ServeHTTP(w, r)
	}), nil)
	ctx, cancel := context.WithCancel(t.Context())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/slow", nil)
	errc := make(chan error, 1)
	go func() {
		_, err := http.DefaultClient.Do(req)
		errc <- err
	}()
	testutil.Recv(t, arrived, 5*time.Second, "the request to reach the upstream")
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the cancelled request succeeded")
	}
	testutil.Recv(t, gone, 5*time.Second, "the proxy's request context to end") // the response is abandoned
	close(release)
	waitFor(t, 5*time.Second, "the cancelled request to end", func() bool { return h.inflight.Load() == 0 })
	for range 3 {
		if code, _, _ := get(t, http.DefaultClient, base+"/", nil); code != 200 {
			t.Fatalf("GET = %d", code)
		}
	}
	if n := accepts.Load(); n != 1 {
		t.Errorf("upstream accepted %d connections, want 1: the cancelled request's connection is kept", n)
	}
}

// TestBufferedBodyAnswersExpect: a client that asks for 100 Continue gets
// it from edge, which reads the small body before the upstream is
// contacted; the upstream gets the body with a Content-Length and no
// Expect, so it does not wait for its own 100 Continue.
func TestBufferedBodyAnswersExpect(t *testing.T) {
	base, _, a, b := pair(t, "", nil)
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n")
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("first line %q, %v; want 100 Continue", line, err)
	}
	br.ReadString('\n') // the blank line ending the 100 response
	io.WriteString(c, "5\r\nhello\r\n0\r\n\r\n")
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("response %v, %v; want 200", res, err)
	}
	reqs := append(a.requests(), b.requests()...)
	if len(reqs) != 1 || reqs[0].body != "hello" || reqs[0].header.Get("Expect") != "" {
		t.Fatalf("upstream received %+v, want one request with body hello and no Expect", reqs)
	}
}

// upstreamNoter stands for the server's observer: it records the upstream
// the proxy notes for the access log.
type upstreamNoter struct {
	http.ResponseWriter
	upstream *atomic.Value // string
}

func (w upstreamNoter) NoteUpstream(addr string)    { w.upstream.Store(addr) }
func (w upstreamNoter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestNotesUpstream: the server that answered is noted for the access log.
func TestNotesUpstream(t *testing.T) {
	rec := newRecorder(t, "a")
	h := newHandler(t, proxyConfig(t, "upstreams: ["+rec.URL+"]"), Options{})
	var noted atomic.Value
	base := front(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(upstreamNoter{w, &noted}, r)
	}), nil)
	code, _, _ := get(t, http.DefaultClient, base+"/", nil)
	if got, _ := noted.Load().(string); code != 200 || got != rec.URL {
		t.Errorf("GET = %d, noted upstream %q, want 200 and %q", code, got, rec.URL)
	}
}
