package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func text(s string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, s) })
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestApplyKeepsSocketAndSwapsHandler(t *testing.T) {
	s := New(quietLog())
	defer s.Shutdown(context.Background())
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: text("one")}}, Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr("http").String()
	// A keep-alive connection opened before the swap sees the new handler
	// on its next request: the socket and connection are kept.
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	var conns atomic.Int32
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, n, a string) (net.Conn, error) {
		conns.Add(1)
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}
	if got := get(t, c, "http://"+addr+"/"); got != "one" {
		t.Fatalf("before: %q", got)
	}
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: text("two")}}, Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	// ":0" differs from the bound address only in spelling: the spec is
	// the same, so the socket is kept.
	if got := s.Addr("http").String(); got != addr {
		t.Fatalf("address changed from %s to %s", addr, got)
	}
	if got := get(t, c, "http://"+addr+"/"); got != "two" {
		t.Fatalf("after: %q", got)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("client dialed %d times, want 1 (connection kept across the swap)", n)
	}
}

func TestApplyPortTakenKeepsOld(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	s := New(quietLog())
	defer s.Shutdown(context.Background())
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: text("old")}}, Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr("http").String()
	err = s.Apply([]Listener{
		{Name: "http", Addr: "127.0.0.1:0", Handler: text("new")},
		{Name: "admin", Addr: taken.Addr().String(), Handler: text("admin")},
	}, Options{}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Apply with a taken port: err = %v, want address already in use", err)
	}
	if got := get(t, http.DefaultClient, "http://"+addr+"/"); got != "old" {
		t.Errorf("after a failed Apply the listener serves %q, want the old handler", got)
	}
	if s.Addr("admin") != nil {
		t.Error("the failed listener is registered")
	}
}

func TestApplyMovesListener(t *testing.T) {
	s := New(quietLog())
	defer s.Shutdown(context.Background())
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: text("a")}}, Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	old := s.Addr("http").String()
	free, _ := net.Listen("tcp", "127.0.0.1:0")
	newAddr := free.Addr().String()
	free.Close()
	if err := s.Apply([]Listener{{Name: "http", Addr: newAddr, Handler: text("b")}}, Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	if got := get(t, http.DefaultClient, "http://"+newAddr+"/"); got != "b" {
		t.Errorf("new address serves %q", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", old)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("old address still accepts connections")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	s := New(quietLog())
	started := make(chan struct{})
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "finished")
	})
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: slow}}, Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr("http").String()
	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- string(b)
	}()
	<-started
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	// New connections are refused while the in-flight request finishes.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting after Shutdown began")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(release)
	if got := <-result; got != "finished" {
		t.Errorf("in-flight request got %q, want it to finish", got)
	}
	if err := <-done; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
}

func TestShutdownTimeoutCloses(t *testing.T) {
	s := New(quietLog())
	started := make(chan struct{})
	stuck := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
	})
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: stuck}}, Options{}, time.Second); err != nil {
		t.Fatal(err)
	}
	go http.Get("http://" + s.Addr("http").String() + "/")
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := s.Shutdown(ctx)
	if err == nil {
		t.Error("Shutdown with a stuck request returned nil, want the deadline error")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v, want about the 200ms deadline", d)
	}
}

func TestPerIPLimit(t *testing.T) {
	s := New(quietLog())
	defer s.Shutdown(context.Background())
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: text("ok")}}, Options{MaxConnsPerIP: 2}, time.Second); err != nil {
		t.Fatal(err)
	}
	addr := s.Addr("http").String()
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		buf := make([]byte, 256)
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("connection %d within the cap: %v", i, err)
		}
		held = append(held, c)
	}
	third, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	fmt.Fprintf(third, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	third.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := third.Read(make([]byte, 256)); err == nil {
		t.Fatalf("third connection from one IP was served (%d bytes), want it closed", n)
	}
	// Closing one frees a slot.
	held[0].Close()
	held = held[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after closing a connection: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestPerIPLimitAcrossListeners: max_connections_per_ip counts one
// address's connections on all capped listeners together.
func TestPerIPLimitAcrossListeners(t *testing.T) {
	s := New(quietLog())
	defer s.Shutdown(context.Background())
	specs := []Listener{
		{Name: "http", Addr: "127.0.0.1:0", Handler: text("ok")},
		{Name: "https-ish", Addr: "127.0.0.1:0", Handler: text("ok")},
	}
	if err := s.Apply(specs, Options{MaxConnsPerIP: 1}, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, ok := served(t, s.Addr("http").String(), 5*time.Second); !ok {
		t.Fatal("first connection not served")
	}
	c, err := net.Dial("tcp", s.Addr("https-ish").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 256)); err == nil {
		t.Fatalf("second connection from one IP, on the other listener, was served (%d bytes), want it closed", n)
	}
}

// TestLimitedConnKeepsSocket: a capped connection still exposes its socket
// (the hub's non-blocking fan-out writes need it) and sendfile's ReadFrom.
func TestLimitedConnKeepsSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lims := newConnLimits()
	lims.set(10, 2)
	lln := newLimitedListener(ln, lims)
	defer lln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := lln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, ok := c.(syscall.Conn)
	if !ok {
		t.Fatalf("%T does not implement syscall.Conn", c)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var fd uintptr
	if err := rc.Control(func(f uintptr) { fd = f }); err != nil || fd == 0 {
		t.Fatalf("Control: fd %d, err %v", fd, err)
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Errorf("%T does not implement io.ReaderFrom", c)
	}
}

// served sends a request on a new connection and reports whether it was
// answered within wait; the connection stays open (closed at cleanup).
func served(t *testing.T, addr string, wait time.Duration) (net.Conn, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(wait))
	_, err = c.Read(make([]byte, 256))
	c.SetReadDeadline(time.Time{})
	return c, err == nil
}

// TestMaxConnsAcrossListeners: max_connections counts the connections of
// all capped listeners together, one over the cap waits (in the backlog)
// until a slot frees, the uncapped admin listener still answers, and a
// reload that raises the cap lets the waiting connection in.
func TestMaxConnsAcrossListeners(t *testing.T) {
	s := New(quietLog())
	defer s.Shutdown(context.Background())
	specs := []Listener{
		{Name: "http", Addr: "127.0.0.1:0", Handler: text("ok")},
		{Name: "https-ish", Addr: "127.0.0.1:0", Handler: text("ok")},
		{Name: "admin", Addr: "127.0.0.1:0", Handler: text("ok"), Uncapped: true},
	}
	if err := s.Apply(specs, Options{MaxConns: 2}, time.Second); err != nil {
		t.Fatal(err)
	}
	a, b := s.Addr("http").String(), s.Addr("https-ish").String()
	first, ok := served(t, a, 5*time.Second)
	if !ok {
		t.Fatal("first connection not served")
	}
	if _, ok := served(t, b, 5*time.Second); !ok {
		t.Fatal("second connection (other listener) not served")
	}
	if _, ok := served(t, s.Addr("admin").String(), 5*time.Second); !ok {
		t.Fatal("admin listener not served while the cap is full")
	}
	waiting, ok := served(t, b, 300*time.Millisecond)
	if ok {
		t.Fatal("third capped connection served, want it to wait: the cap is 2 across listeners")
	}
	// A freed slot lets it in: its request is answered.
	first.Close()
	waiting.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := waiting.Read(make([]byte, 256)); err != nil {
		t.Fatalf("waiting connection after a slot freed: %v", err)
	}
	// Full again (2 open); a reload to 3 admits one more at once.
	next, ok := served(t, a, 300*time.Millisecond)
	if ok {
		t.Fatal("connection over the cap served")
	}
	if err := s.Apply(specs, Options{MaxConns: 3}, time.Second); err != nil {
		t.Fatal(err)
	}
	next.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := next.Read(make([]byte, 256)); err != nil {
		t.Fatalf("waiting connection after the cap was raised: %v", err)
	}
	// Shutdown does not wait for a slot: the held connection is closed.
	held, ok := served(t, a, 300*time.Millisecond)
	if ok {
		t.Fatal("connection over the raised cap served")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	s.Shutdown(ctx)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Shutdown took %v with a connection waiting for a slot", d)
	}
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := held.Read(make([]byte, 256)); err == nil {
		t.Errorf("held connection was served %d bytes during shutdown, want it closed", n)
	}
}

// TestShutdownEndsRetiredListeners: a listener that an Apply retired (its
// name dropped, or its address moved) and that is still draining a
// request is part of Shutdown: when Shutdown returns, within its own
// deadline and not the longer drain, the retired listener's connection is
// closed too.
func TestShutdownEndsRetiredListeners(t *testing.T) {
	for _, tc := range []struct {
		name string
		next Listener
	}{
		{"name dropped", Listener{Name: "other", Addr: "127.0.0.1:0", Handler: text("ok")}},
		{"address moved", Listener{Name: "http", Addr: "localhost:0", Handler: text("ok")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(quietLog())
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			defer close(release)
			stuck := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-release // a handler that does not watch its context
			})
			if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: stuck}}, Options{}, time.Minute); err != nil {
				t.Fatal(err)
			}
			c, err := net.Dial("tcp", s.Addr("http").String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			<-entered
			// Retired with a minute to drain.
			if err := s.Apply([]Listener{tc.next}, Options{}, time.Minute); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			start := time.Now()
			s.Shutdown(ctx)
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("Shutdown took %v, want about its 200ms deadline", d)
			}
			// Shutdown has returned: the retired listener's connection is
			// closed already, so this read ends at once, not at the
			// deadline.
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadAll(c); err != nil {
				t.Errorf("retired listener's connection after Shutdown: %v, want it closed", err)
			}
		})
	}
}

// TestWaitSlotClosedListener: a listener being closed admits no
// connection, even when a slot is free by then (Shutdown closes the
// listeners, then idle connections, which frees slots): a connection
// waiting for a slot at shutdown is closed, never served.
func TestWaitSlotClosedListener(t *testing.T) {
	cl := newConnLimits()
	cl.set(1, 0)
	done := make(chan struct{})
	close(done)
	if cl.waitSlot(done) {
		t.Error("waitSlot on a closed listener took the free slot")
	}
	if cl.open != 0 {
		t.Fatalf("open = %d after a refused wait, want 0", cl.open)
	}
	if !cl.waitSlot(make(chan struct{})) {
		t.Error("waitSlot on an open listener refused the free slot")
	}
}
