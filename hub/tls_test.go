package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Over TLS a client's socket is a *tls.Conn, not a plain socket: the
// fan-out cannot write to it without blocking (client.sock is nil), so
// every delivery goes through the writer role's hand-off to a writeLoop
// goroutine (conn.go, flush.go). The browser test covers that path with
// one client; these tests put many wss clients on it at once.

// tlsEnv is a Node behind an httptest TLS server.
type tlsEnv struct {
	n   *Node
	wss string // wss://…/socket/
	d   *websocket.Dialer
}

func newTLSEnv(t *testing.T, hubYAML string) *tlsEnv {
	t.Helper()
	n, err := NewNode(NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/socket/", n.Route("/socket/", parseHub(t, hubYAML), nil))
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	runNode(t, n)
	waitFor(t, 10*time.Second, "node healthy", func() bool { return n.Healthy() == nil })
	tr := srv.Client().Transport.(*http.Transport)
	return &tlsEnv{
		n:   n,
		wss: "wss" + strings.TrimPrefix(srv.URL, "https") + "/socket/",
		d:   &websocket.Dialer{TLSClientConfig: tr.TLSClientConfig, HandshakeTimeout: 5 * time.Second},
	}
}

// dial opens a wss connection subscribed to channel, with the socket's
// receive buffer set to rcvbuf bytes when not 0, and reads the welcome and
// the subscription's acknowledgement.
func (e *tlsEnv) dial(t *testing.T, channel string, rcvbuf int) *websocket.Conn {
	t.Helper()
	d := *e.d
	if rcvbuf > 0 {
		d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			var nd net.Dialer
			nc, err := nd.DialContext(ctx, network, addr)
			if err == nil {
				nc.(*net.TCPConn).SetReadBuffer(rcvbuf)
			}
			return nc, err
		}
	}
	c, _, err := d.Dial(e.wss+"?channel="+channel, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", e.wss, err)
	}
	t.Cleanup(func() { c.Close() })
	expect(t, c, "welcome")
	expect(t, c, "subscribed")
	return c
}

// publish publishes through the node.
func (e *tlsEnv) publish(t *testing.T, channel, payload string) {
	t.Helper()
	if _, err := e.n.Publish(t.Context(), channel, []byte(payload)); err != nil {
		t.Fatalf("Publish(%q): %v", channel, err)
	}
}

// plainSockets counts the hub's clients that have a plain socket.
func (e *tlsEnv) plainSockets() (clients, plain int) {
	e.n.mu.RLock()
	rt := e.n.routes["/socket/"]
	e.n.mu.RUnlock()
	for _, c := range rt.snapshot() {
		clients++
		if c.sock != nil {
			plain++
		}
	}
	return clients, plain
}

// dataMsg is a data message of the TLS tests: i counts the messages
// published, pad makes them large.
type dataMsg struct {
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	Type    string `json:"type"`
	Data    struct {
		I int `json:"i"`
	} `json:"data"`
}

// readInOrder reads messages from c until it has the data message with
// i == last, checking that data messages come in publishing order from
// i == first (from the first one it sees when first is -1); other
// messages (pong) are skipped.
func readInOrder(c *websocket.Conn, first, last int, d time.Duration) error {
	return readInOrderProgress(c, first, last, d, nil)
}

// readInOrderProgress is readInOrder that stores the i of each data
// message read in progress.
func readInOrderProgress(c *websocket.Conn, first, last int, d time.Duration, progress *atomic.Int64) error {
	c.SetReadDeadline(time.Now().Add(d))
	next := first
	for {
		_, p, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("after message %d: %w", next-1, err)
		}
		var m dataMsg
		if err := json.Unmarshal(p, &m); err != nil {
			return fmt.Errorf("message %.80q: %v", p, err)
		}
		if m.Type != "" {
			continue
		}
		if next >= 0 && m.Data.I != next {
			return fmt.Errorf("data message %d after %d", m.Data.I, next-1)
		}
		if progress != nil {
			progress.Store(int64(m.Data.I))
		}
		if m.Data.I == last {
			return nil
		}
		next = m.Data.I + 1
	}
}

// TestTLSSlowClientDropped checks, over TLS, that a wss client that stops
// reading is dropped as slow (1013, queue_full) while the others get
// every message in order, and that publishing never waits for it.
func TestTLSSlowClientDropped(t *testing.T) {
	const (
		queue = 32
		round = 8 // messages published before the fast clients catch up
		msgs  = 400
	)
	e := newTLSEnv(t, fmt.Sprintf(`{ queue_size: %d }`, queue))
	const fast = 4
	var cs []*websocket.Conn
	for range fast {
		cs = append(cs, e.dial(t, "tls", 0))
	}
	slow := e.dial(t, "tls", 4096) // never read again
	if clients, plain := e.plainSockets(); clients != fast+1 || plain != 0 {
		t.Fatalf("%d clients, %d with a plain socket: want %d, none (TLS)", clients, plain, fast+1)
	}

	// Enough bytes to fill the slow client's socket buffers on both sides
	// and then its queue. Publishing goes in rounds that the fast clients
	// keep up with, so only the slow client's queue can fill.
	pad := strings.Repeat("x", 32<<10)
	errs := make(chan error, fast)
	progress := make([]atomic.Int64, fast)
	var wg sync.WaitGroup
	for k, c := range cs {
		progress[k].Store(-1)
		wg.Go(func() { errs <- readInOrderProgress(c, 0, msgs-1, 60*time.Second, &progress[k]) })
	}
	for i := range msgs {
		start := time.Now()
		e.publish(t, "tls", fmt.Sprintf(`{"i":%d,"pad":%q}`, i, pad))
		if d := time.Since(start); d > time.Second {
			t.Fatalf("publishing message %d took %s: the fan-out waited for a client", i, d)
		}
		if i%round == round-1 {
			waitFor(t, 20*time.Second, "fast clients caught up", func() bool {
				for k := range progress {
					if progress[k].Load() < int64(i) {
						return false
					}
				}
				return true
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("fast client: %v", err)
		}
	}
	waitFor(t, 10*time.Second, "slow client dropped", func() bool { return e.n.stats.slow.Load() == 1 })
	if got := e.n.stats.droppedBy[dropQueueFull].Load(); got == 0 {
		t.Errorf("queue_full drops = 0, want the slow client's")
	}
	// The hub let go of it: with the 1013 close frame when its write got
	// through, else cut after closeGrace. (The client is not read: with
	// its tiny receive window, draining what the kernel holds would take
	// long.)
	waitFor(t, 10*time.Second, "slow client's connection finished", func() bool { return e.n.stats.conns.Load() == fast })
	slow.Close()
}

// TestTLSOrderUnderPingsAndCloses checks that what the hub writes to wss
// clients stays valid TLS records with every message in order while
// server pings, client pings (pong replies) and closing handshakes of
// other clients interleave with the deliveries.
func TestTLSOrderUnderPingsAndCloses(t *testing.T) {
	e := newTLSEnv(t, `{ ping_interval: 5ms, idle_timeout: 30s, queue_size: 4096 }`)
	const (
		readers = 4
		msgs    = 5000
		churns  = 10
	)
	var cs []*websocket.Conn
	for range readers {
		cs = append(cs, e.dial(t, "order", 0))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*readers+1)
	for _, c := range cs {
		done := make(chan struct{})
		wg.Go(func() {
			defer close(done)
			if err := readInOrder(c, 0, msgs-1, 60*time.Second); err != nil {
				errs <- fmt.Errorf("reader: %w", err)
			}
		})
		// Client pings, answered by pong replies queued among the data,
		// until the reader has everything.
		wg.Go(func() {
			for i := range 500 {
				select {
				case <-done:
					return
				default:
				}
				c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if err := c.WriteJSON(map[string]any{"type": "ping", "id": i}); err != nil {
					errs <- fmt.Errorf("client ping: %w", err)
					return
				}
			}
		})
	}
	// Clients that connect, take some messages and close while the others
	// are being written to; the hub echoes their close code.
	wg.Go(func() {
		for range churns {
			if err := churn(e); err != nil {
				errs <- err
				return
			}
		}
	})
	for i := range msgs {
		e.publish(t, "order", fmt.Sprintf(`{"i":%d,"pad":"%0200d"}`, i, i))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if slow := e.n.stats.slow.Load(); slow != 0 {
		t.Errorf("%d clients dropped as slow, want none", slow)
	}
}

// churn connects to the "order" channel, reads until the pong of a ping,
// closes with 1000 and checks that the hub echoes it.
func churn(e *tlsEnv) error {
	c, _, err := e.d.Dial(e.wss+"?channel=order", nil)
	if err != nil {
		return fmt.Errorf("churn dial: %w", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	// welcome, subscribed, and data until the pong of a ping: a client
	// that joins after the last message still closes in the middle of
	// the server's pings.
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteJSON(map[string]any{"type": "ping"}); err != nil {
		return fmt.Errorf("churn ping: %w", err)
	}
	for pong := false; !pong; {
		_, p, err := c.ReadMessage()
		if err != nil {
			return fmt.Errorf("churn read: %w", err)
		}
		pong = strings.Contains(string(p), `"type":"pong"`)
	}
	c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"), time.Now().Add(5*time.Second))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !asCloseError(err, &ce) || ce.Code != websocket.CloseNormalClosure {
			return fmt.Errorf("churn close: %v, want the 1000 echoed", err)
		}
		return nil
	}
}
