package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/server"
)

// Over TLS a client's socket is a *tls.Conn, not a plain socket. Behind
// edge's own HTTPS listener (server package) the connection under the TLS
// layer is a sealer: the fan-out seals a frame into its buffer and sends it
// without blocking (flush.go). Behind any other TLS front (httptest here)
// every delivery goes through the writer role's hand-off to a writeLoop
// goroutine (conn.go). The browser test covers one client; these tests put
// many wss clients on both paths at once.

// tlsFronts are the TLS servers the hub's TLS tests run behind.
var tlsFronts = []string{"edge", "httptest"}

// tlsEnv is a Node behind a TLS server: edge's server package, or
// httptest's.
type tlsEnv struct {
	n   *Node
	wss string // wss://…/socket/
	d   *websocket.Dialer
}

func newTLSEnv(t testing.TB, front, hubYAML string) *tlsEnv {
	t.Helper()
	n, err := NewNode(NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/socket/", n.Route("/socket/", parseHub(t, hubYAML), nil))
	srv := httptest.NewTLSServer(mux)
	t.Cleanup(srv.Close)
	url := srv.URL
	if front == "edge" {
		s := server.New(slog.New(slog.NewTextHandler(io.Discard, nil)))
		t.Cleanup(func() { s.Shutdown(context.Background()) })
		conf := srv.TLS.Clone()
		conf.NextProtos = []string{"h2", "http/1.1"}
		if err := s.Apply([]server.Listener{{Name: "https", Addr: "127.0.0.1:0", TLS: conf, Handler: mux}},
			server.Options{}, time.Second); err != nil {
			t.Fatal(err)
		}
		url = "https://" + s.Addr("https").String()
	}
	runNode(t, n)
	waitFor(t, 10*time.Second, "node healthy", func() bool { return n.Healthy() == nil })
	tr := srv.Client().Transport.(*http.Transport)
	return &tlsEnv{
		n:   n,
		wss: "wss" + strings.TrimPrefix(url, "https") + "/socket/",
		d:   &websocket.Dialer{TLSClientConfig: tr.TLSClientConfig, HandshakeTimeout: 5 * time.Second},
	}
}

// dial opens a wss connection subscribed to channel, with the socket's
// receive buffer set to rcvbuf bytes when not 0, and reads the welcome and
// the subscription's acknowledgement.
func (e *tlsEnv) dial(t testing.TB, channel string, rcvbuf int) *websocket.Conn {
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

// sockets counts the hub's clients, those with a plain socket and those
// with a sealer.
func (e *tlsEnv) sockets() (clients, plain, sealed int) {
	e.n.mu.RLock()
	rt := e.n.routes["/socket/"]
	e.n.mu.RUnlock()
	for _, c := range rt.snapshot() {
		clients++
		if c.sock != nil {
			plain++
		}
		if c.sealer != nil {
			sealed++
		}
	}
	return clients, plain, sealed
}

// checkSockets fails t unless every one of want clients is on the path
// front gives it: a sealer behind edge's server, neither behind httptest.
func (e *tlsEnv) checkSockets(t *testing.T, front string, want int) {
	t.Helper()
	clients, plain, sealed := e.sockets()
	wantSealed := 0
	if front == "edge" {
		wantSealed = want
	}
	if clients != want || plain != 0 || sealed != wantSealed {
		t.Fatalf("%d clients, %d with a plain socket, %d with a sealer: want %d, 0, %d", clients, plain, sealed, want, wantSealed)
	}
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
	for _, front := range tlsFronts {
		t.Run(front, func(t *testing.T) { testTLSSlowClientDropped(t, front) })
	}
}

func testTLSSlowClientDropped(t *testing.T, front string) {
	const (
		queue = 32
		round = 8 // messages published before the fast clients catch up
		msgs  = 400
	)
	e := newTLSEnv(t, front, fmt.Sprintf(`{ queue_size: %d }`, queue))
	const fast = 4
	var cs []*websocket.Conn
	for range fast {
		cs = append(cs, e.dial(t, "tls", 0))
	}
	slow := e.dial(t, "tls", 4096) // never read again
	e.checkSockets(t, front, fast+1)

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
	for _, front := range tlsFronts {
		t.Run(front, func(t *testing.T) { testTLSOrderUnderPingsAndCloses(t, front) })
	}
}

func testTLSOrderUnderPingsAndCloses(t *testing.T, front string) {
	e := newTLSEnv(t, front, `{ ping_interval: 5ms, idle_timeout: 30s, queue_size: 4096 }`)
	const (
		readers = 4
		msgs    = 5000
		churns  = 10
	)
	var cs []*websocket.Conn
	for range readers {
		cs = append(cs, e.dial(t, "order", 0))
	}
	e.checkSockets(t, front, readers)
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

// TestTLSSealedFanout checks that behind edge's server a wss delivery to a
// client that keeps up is written by the flushing goroutine itself (sealed
// and sent without blocking), as over plain ws, and behind another TLS
// front by a writeLoop; every message arrives in order either way.
func TestTLSSealedFanout(t *testing.T) {
	for _, front := range tlsFronts {
		t.Run(front, func(t *testing.T) {
			e := newTLSEnv(t, front, `{}`)
			const clients, msgs = 8, 200
			var cs []*websocket.Conn
			for range clients {
				cs = append(cs, e.dial(t, "sealed", 0))
			}
			e.checkSockets(t, front, clients)
			direct0 := e.n.stats.direct.Load()
			for i := range msgs {
				e.publish(t, "sealed", fmt.Sprintf(`{"i":%d}`, i))
				for _, c := range cs { // paced: every client has it before the next
					if err := readInOrder(c, i, i, 10*time.Second); err != nil {
						t.Fatalf("message %d: %v", i, err)
					}
				}
			}
			direct := e.n.Stats(t.Context()).WrittenDirect - direct0
			switch {
			case front == "edge" && direct < clients*msgs*9/10:
				t.Errorf("%d of %d deliveries written directly, want at least 90%%", direct, clients*msgs)
			case front != "edge" && direct != 0:
				t.Errorf("%d deliveries written directly without a sealer, want 0", direct)
			}
			t.Logf("%s: %d of %d deliveries written by the flushing goroutine", front, direct, clients*msgs)
		})
	}
}
