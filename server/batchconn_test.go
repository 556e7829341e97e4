package server

import (
	"bytes"
	cryptotls "crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"edge/config"
	"edge/internal/testutil"
)

// tcpPair returns both ends of a loopback TCP connection; the server end is
// wrapped in a batching batchConn.
func tcpPair(t *testing.T) (*batchConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b := newBatchConn(c)
	b.batch()
	t.Cleanup(func() { b.Close(); peer.Close() })
	return b, peer
}

// Many small writes, as the HTTP/2 server makes them, arrive complete and in
// order, and the connection's writer goroutine ends once the queue drains.
func TestBatchConnKeepsOrder(t *testing.T) {
	b, peer := tcpPair(t)
	var want bytes.Buffer
	got := make(chan []byte)
	go func() {
		all, _ := io.ReadAll(peer)
		got <- all
	}()
	for i := range 20000 {
		frame := bytes.Repeat([]byte{byte(i)}, 1+i%300)
		want.Write(frame)
		if n, err := b.Write(frame); err != nil || n != len(frame) {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if all := <-got; !bytes.Equal(all, want.Bytes()) {
		t.Fatalf("peer read %d bytes, want %d in order", len(all), want.Len())
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.writing {
		t.Fatal("writer goroutine still running after Close")
	}
}

// Close sends what is still queued (a GOAWAY, a close_notify alert) before
// it closes.
func TestBatchConnCloseFlushes(t *testing.T) {
	b, peer := tcpPair(t)
	msg := bytes.Repeat([]byte("goaway"), 5000)
	b.Write(msg)
	b.Close()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	all, err := io.ReadAll(peer)
	if err != nil || !bytes.Equal(all, msg) {
		t.Fatalf("peer read %d bytes (%v), want %d then EOF", len(all), err, len(msg))
	}
}

// A peer that stops reading meets backpressure: Write blocks once the
// queue is full, and a write deadline ends the wait. Close then returns
// within its linger time although the peer never reads.
func TestBatchConnPeerNotReading(t *testing.T) {
	b, _ := tcpPair(t)
	b.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	chunk := make([]byte, 16<<10)
	var written int
	start := time.Now()
	var err error
	for time.Since(start) < 10*time.Second {
		var n int
		if n, err = b.Write(chunk); err != nil {
			break
		}
		written += n
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after %d bytes: %v, want a deadline error", written, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the write deadline ended the wait after %v", d)
	}
	b.SetWriteDeadline(time.Time{})
	start = time.Now()
	b.Close()
	if d := time.Since(start); d > closeLinger+2*time.Second {
		t.Fatalf("Close took %v with a peer that does not read", d)
	}
}

// A peer that is gone makes the next writes fail instead of queueing
// without end.
func TestBatchConnPeerGone(t *testing.T) {
	b, peer := tcpPair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	chunk := make([]byte, 4<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := b.Write(chunk); err != nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a reset connection kept succeeding")
		}
	}
}

// Before batch (the TLS handshake, HTTP/1.1 connections) writes go straight
// to the socket.
func TestBatchConnPassThrough(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	b := newBatchConn(c)
	defer b.Close()
	b.Write([]byte("hello"))
	if b.writing || b.queued() != 0 {
		t.Fatal("a write before batch was queued")
	}
	buf := make([]byte, 5)
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

// tryPair is tcpPair with the hub's switch (BatchWrites) instead of batch.
func tryPair(t *testing.T) (*batchConn, net.Conn) {
	t.Helper()
	b, peer := tcpPair(t)
	b.mu.Lock()
	b.batching = false
	b.mu.Unlock()
	if !b.BatchWrites() {
		t.Fatal("BatchWrites on a TCP connection reported false")
	}
	return b, peer
}

// The hub's fan-out over TLS: TryWrite sends at once when nothing waits,
// and never blocks on a peer that stops reading. Once bytes wait, it
// declines without calling write, and the caller writes the blocking way;
// the peer still receives everything in order.
func TestBatchConnTryWrite(t *testing.T) {
	b, peer := tryPair(t)
	var want bytes.Buffer
	frame := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 4000) }

	sent, declined := 0, 0
	start := time.Now()
	for i := 0; declined == 0; i++ {
		if time.Since(start) > 10*time.Second {
			t.Fatal("TryWrite kept accepting with a peer that does not read")
		}
		f := frame(i)
		ok, err := b.TryWrite(func() error {
			_, err := b.Write(f)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			declined++
			// The caller's blocking path: a plain Write, queued behind.
			if _, err := b.Write(f); err != nil {
				t.Fatal(err)
			}
		} else {
			sent++
		}
		want.Write(f)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("TryWrite took %v in all: it waited for the peer", d)
	}
	if sent == 0 {
		t.Fatal("no TryWrite was sent at once")
	}
	peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, want.Len())
	if _, err := io.ReadFull(peer, got); err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("peer read %v: bytes out of order or missing", err)
	}
	t.Logf("%d frames sent at once before the socket filled", sent)
}

// crypto/tls's Close queues close_notify and then sets a write deadline of
// now, so that later writes fail. That deadline must not reach the socket
// while queued bytes (a WebSocket close frame, a GOAWAY) are still being
// written: the peer would see the connection end without them.
func TestBatchConnDeadlineNowKeepsQueuedBytes(t *testing.T) {
	b, peer := tcpPair(t)
	// Fill the socket buffers and the queue while the peer does not read,
	// so that the writer is blocked in write(2).
	var accepted bytes.Buffer
	var mu sync.Mutex
	go func() {
		chunk := make([]byte, 8<<10)
		for i := 0; ; i++ {
			for k := range chunk {
				chunk[k] = byte(i)
			}
			mu.Lock()
			_, err := b.Write(chunk)
			if err == nil {
				accepted.Write(chunk)
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		full := b.queued() >= batchMax
		b.mu.Unlock()
		if full {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue never filled")
		}
		time.Sleep(time.Millisecond)
	}
	b.SetWriteDeadline(time.Now())    // as tls.Conn.Close does after close_notify
	time.Sleep(20 * time.Millisecond) // a deadline on the socket would fail the blocked write(2) now
	got := make(chan []byte)
	go func() {
		peer.SetReadDeadline(time.Now().Add(10 * time.Second))
		all, _ := io.ReadAll(peer)
		got <- all
	}()
	b.Close()
	all := <-got
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(all, accepted.Bytes()) {
		t.Fatalf("peer read %d of the %d bytes Write accepted", len(all), accepted.Len())
	}
}

// An HTTP/2 client that opens many streams for large responses, grants
// the server every flow-control window, and then never reads: the
// server's writes back up. The batching queue stays bounded, the
// connection holds no more than a few windows' worth, other clients are
// served meanwhile, and closing the attacker's connection frees it all.
func TestHostileHTTP2ClientNeverReads(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 256<<10)
	var done atomic.Int64 // big responses written in full by their handler
	build := func(*config.Site, *config.Route) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/big" {
				if _, err := w.Write(big); err == nil {
					done.Add(1)
				}
				return
			}
			io.WriteString(w, "ok")
		}), nil
	}
	sconf, cconf := selfSigned(t)
	addr := edgeListener(t, plainYAML, build, nil, Options{}, sconf)
	mustGet200TLS(t, cconf, addr)
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	g0 := runtime.NumGoroutine()

	cc := cconf.Clone()
	cc.NextProtos = []string{"h2"}
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.(*net.TCPConn).SetReadBuffer(4 << 10)
	c := cryptotls.Client(raw, cc)
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1<<31 - 1})
	fr.WriteWindowUpdate(0, 1<<31-1-65535)
	const streams = 100
	for i := range streams {
		var block bytes.Buffer
		enc := hpack.NewEncoder(&block)
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/big"}} {
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true})
	}
	// 100 × 256 KiB asked for, nothing read. Others are still served.
	start := time.Now()
	for range 5 {
		mustGet200TLS(t, cconf, addr)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("5 requests of another client took %v while the attacker's writes were stuck", d)
	}
	// Unbounded buffering would take every response at once and let all
	// handlers finish; bounded, they wait for the attacker to read.
	for deadline := time.Now().Add(300 * time.Millisecond); time.Now().Before(deadline); {
		if done.Load() == streams {
			t.Fatalf("all %d handlers wrote 256 KiB to a client that reads nothing: buffers are not bounded", streams)
		}
		runtime.Gosched()
	}
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	grown := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("heap grew %d KiB with %d stuck streams of 256 KiB; %d handlers finished", grown>>10, streams, done.Load())
	if grown > 2<<20 {
		t.Errorf("heap grew %d KiB while the attacker read nothing: buffers are not bounded", grown>>10)
	}
	c.Close()
	testutil.WaitFor(t, 10*time.Second, "the attacker's goroutines end", func() bool { return runtime.NumGoroutine() <= g0+2 })
}
