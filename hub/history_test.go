package hub

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"
)

func TestRecoveryWithSince(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ history: { size: 5, ttl: 1m } }`)
	c := e.connect(t, "orders")
	var seqs []uint64
	for i := 1; i <= 3; i++ {
		seqs = append(seqs, e.publish(t, "orders", fmt.Sprint(i)))
		expect(t, c, "message")
	}
	c.Close()
	for i := 4; i <= 5; i++ {
		seqs = append(seqs, e.publish(t, "orders", fmt.Sprint(i)))
	}

	resubscribe := func(since uint64, epoch string) (*frameConn, frame) {
		c := e.connect(t)
		send(t, c, map[string]any{"type": "subscribe", "channel": "orders", "since": since, "epoch": epoch})
		return &frameConn{c}, expect(t, c, "subscribed")
	}
	// Missed 4 and 5: replayed in order, then live messages follow.
	fc, ack := resubscribe(seqs[2], e.n.Epoch())
	if ack["recovered"] != true || ack.seq() != seqs[4] {
		t.Errorf("subscribed = %v, want recovered at seq %d", ack, seqs[4])
	}
	fc.expectData(t, 4, 5)
	e.publish(t, "orders", "6")
	fc.expectData(t, 6)

	// From further back, still within the history.
	fc, _ = resubscribe(seqs[0], e.n.Epoch())
	fc.expectData(t, 2, 3, 4, 5, 6)

	// Up to date: recovered, nothing replayed.
	last := e.publish(t, "orders", "7")
	fc.expectData(t, 7)
	fc, ack = resubscribe(last, "")
	if ack["recovered"] != true {
		t.Errorf("up to date: %v, want recovered", ack)
	}
	e.publish(t, "orders", "8")
	fc.expectData(t, 8)

	// History overflow: 5 kept, 10 missed → gap.
	for i := range 10 {
		e.publish(t, "orders", fmt.Sprint(100+i))
	}
	fc, ack = resubscribe(last, e.n.Epoch())
	if ack["recovered"] != false {
		t.Errorf("after overflow: %v, want recovered false", ack)
	}
	if g := expect(t, fc.Conn, "gap"); g.str("reason") != "history" || g.seq() != ack.seq() {
		t.Errorf("gap = %v, want reason history at seq %d", g, ack.seq())
	}

	// Another epoch (another node, or a restart): gap.
	fc, _ = resubscribe(last, "someone-else")
	if g := expect(t, fc.Conn, "gap"); g.str("reason") != "epoch" {
		t.Errorf("gap = %v, want reason epoch", g)
	}
	// A since from the future: gap rather than silence.
	fc, _ = resubscribe(1<<40, e.n.Epoch())
	expect(t, fc.Conn, "gap")
}

type frameConn struct{ Conn *websocket.Conn }

// expectData reads data messages and checks their payloads.
func (fc *frameConn) expectData(t *testing.T, want ...int) {
	t.Helper()
	for _, w := range want {
		m := expect(t, fc.Conn, "message")
		if m["data"] != float64(w) {
			t.Fatalf("got %v, want data %d", m, w)
		}
	}
}

// TestRouteHistoryLimits: a route keeping less history than the node
// retains (for another route) does not replay beyond its own limit.
func TestRouteHistoryLimits(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ history: { size: 50 } }`)
	small := e.route(t, "/small/", `{ history: { size: 2 } }`, nil)
	none := e.route(t, "/none/", `{ history: { size: 0 } }`, nil)
	since := e.publish(t, "feed", "0")
	for i := 1; i <= 3; i++ {
		e.publish(t, "feed", fmt.Sprint(i))
	}
	for _, tc := range []struct {
		url       string
		recovered bool
	}{{e.ws, true}, {small, false}, {none, false}} {
		c := dial(t, tc.url, nil)
		expect(t, c, "welcome")
		send(t, c, map[string]any{"type": "subscribe", "channel": "feed", "since": since})
		if ack := expect(t, c, "subscribed"); ack["recovered"] != tc.recovered {
			t.Errorf("%s: recovered = %v, want %v", tc.url, ack["recovered"], tc.recovered)
		}
	}
}

// TestHistoryTTLAndSweep runs the node's sweeper on synctest's fake clock:
// history ages out, idle channel state is dropped, and a since from
// before the drop yields a gap while an up-to-date one does not.
func TestHistoryTTLAndSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n, err := NewNode(NodeOptions{SweepInterval: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		n.Route("/s/", parseHub(t, `{ history: { size: 10, ttl: 1m } }`), nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { n.Run(ctx); close(done) }()
		synctest.Wait()
		if err := n.Healthy(); err != nil {
			t.Fatal(err)
		}
		pub := func(p string) uint64 {
			seq, err := n.Publish(ctx, "a", []byte(p))
			if err != nil {
				t.Fatal(err)
			}
			return seq
		}
		missed := func(since uint64) ([]*message, string) {
			ch := n.channel("a")
			ch.mu.Lock()
			defer ch.mu.Unlock()
			req := &subscribeRequest{n: n, since: since, hasSince: true, route: histLimits{size: 10, ttl: time.Minute}, now: time.Now()}
			return ch.missedLocked(req)
		}

		s1 := pub("1")
		time.Sleep(40 * time.Second)
		s2 := pub("2")
		if m, gap := missed(s1 - 1); gap != "" || len(m) != 2 {
			t.Fatalf("at 40s: missed %d, gap %q; want both messages", len(m), gap)
		}
		time.Sleep(55 * time.Second) // 95s: the sweep at 90s dropped message 1
		synctest.Wait()
		if _, gap := missed(s1 - 1); gap != "history" {
			t.Errorf("at 95s, since before message 1: gap %q, want history", gap)
		}
		if m, gap := missed(s1); gap != "" || len(m) != 1 || m[0].seq != s2 {
			t.Errorf("at 95s, since message 1: %d missed, gap %q; want message 2", len(m), gap)
		}
		time.Sleep(60 * time.Second) // 155s: message 2 aged out at 120s
		synctest.Wait()
		n.mu.RLock()
		left := len(n.channels)
		n.mu.RUnlock()
		if left != 0 {
			t.Errorf("%d channel states left, want the idle one dropped", left)
		}
		// New state for "a": starts at the node's count.
		if _, gap := missed(s2); gap != "" {
			t.Errorf("up-to-date since after the drop: gap %q, want none", gap)
		}
		if _, gap := missed(s1); gap != "history" {
			t.Errorf("old since after the drop: gap %q, want history", gap)
		}
		cancel()
		<-done
	})
}

// TestHistoryQueueStaysSmall: messages that leave the history by its size
// limit (never by max_bytes) do not pile up in the node-wide queue.
func TestHistoryQueueStaysSmall(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ history: { size: 10 } }`)
	for i := range 5000 {
		e.publish(t, fmt.Sprintf("q-%d", i%3), "1")
	}
	h := &e.n.hist
	h.mu.Lock()
	queued := len(h.q) - h.head
	h.mu.Unlock()
	if live := h.live.Load(); live != 30 || queued > 2*30+compactSlack {
		t.Errorf("%d held, %d queued; want 30 held and at most %d queued", live, queued, 2*30+compactSlack)
	}
}
