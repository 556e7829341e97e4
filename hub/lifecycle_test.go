package hub

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/internal/wsframe"
)

// smallBufferDialer dials with a 4 KiB receive buffer, so that the kernel
// fills up after a few frames and the hub's queue has to hold the rest.
var smallBufferDialer = websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
	c, err := net.Dial(network, addr)
	if err == nil {
		c.(*net.TCPConn).SetReadBuffer(4096)
	}
	return c, err
}}

// TestSlowClientDropped: a client that stops reading is closed once its
// queue is full, counted, and never delays the others or the publisher.
func TestSlowClientDropped(t *testing.T) {
	// The queue is deep enough that a fast reader on a busy machine (the
	// whole suite runs in parallel) is not taken for a slow one.
	e := newEnv(t, NodeOptions{}, `{ queue_size: 48 }`)
	fast := e.connect(t, "feed")
	// The slow client's socket gets a small receive buffer, so that the
	// kernel fills up quickly and the hub's queue has to absorb the rest.
	slow, _, err := smallBufferDialer.Dial(e.ws+"?channel=feed", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()

	const n = 300
	payload := `"` + strings.Repeat("x", 32<<10) + `"`
	got := make(chan int, 1)
	go func() {
		count := 0
		for count < n {
			fast.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := fast.ReadMessage()
			if err != nil {
				break
			}
			if strings.HasPrefix(string(data), `{"channel"`) {
				count++
			}
		}
		got <- count
	}()
	start := time.Now()
	for range n {
		e.publish(t, "feed", payload)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("publishing %d messages took %s: the hub waited on a client", n, d)
	}
	select {
	case c := <-got:
		if c != n {
			t.Fatalf("fast client got %d of %d messages", c, n)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("fast client starved")
	}
	t.Logf("fast client got %d×32KiB in %s with a stalled peer", n, time.Since(start).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "slow client dropped", func() bool {
		return e.n.stats.slow.Load() == 1 && e.n.stats.conns.Load() == 1
	})
	if st := e.n.Stats(context.Background()); st.Dropped == 0 || st.SlowClients != 1 || st.DroppedBy["queue_full"] == 0 {
		t.Errorf("stats dropped=%d by %v slow=%d, want queue_full drops", st.Dropped, st.DroppedBy, st.SlowClients)
	}
}

func TestCloseSendsGoingAway(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	var cs []*websocket.Conn
	for range 3 {
		cs = append(cs, e.connect(t, "orders"))
	}
	// One client never reads: Close must not wait on it beyond its bound.
	mute := dial(t, e.ws+"?channel=orders", nil)
	_ = mute

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	closed := make(chan error, 1)
	go func() { closed <- e.n.Close(ctx) }()
	for i, c := range cs {
		if code, reason := expectClose(t, c, 5*time.Second); code != wsframe.CloseGoingAway || reason != "going away" {
			t.Errorf("client %d: close %d %q, want 1001 going away", i, code, reason)
		}
	}
	if err := <-closed; err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %s", time.Since(start).Round(time.Millisecond))
	if got := e.n.stats.conns.Load(); got != 0 {
		t.Errorf("%d connections left after Close", got)
	}
	if p := e.n.LocalPresence(); len(p.Channels) != 0 {
		t.Errorf("subscriptions left after Close: %+v", p)
	}
	if err := e.n.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := e.n.Publish(ctx, "orders", []byte("x")); err != ErrClosed {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}

// TestCloseBoundedByContext: clients that do not finish the closing
// handshake are cut when ctx ends.
func TestCloseBoundedByContext(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	for range 3 {
		dial(t, e.ws, nil) // never read: no close reply
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := e.n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %s with a 100ms context", d)
	}
	if got := e.n.stats.conns.Load(); got != 0 {
		t.Errorf("%d connections left", got)
	}
}

func TestReloadKeepsClientsAndRetireCloses(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ origins: ["https://a.example"] }`)
	c := dial(t, e.ws+"?channel=orders", origin("https://a.example"))
	expect(t, c, "welcome")
	expect(t, c, "subscribed")

	h := e.n.Route("/socket/", parseHub(t, `{ origins: ["https://b.example"], queue_size: 10 }`), nil)
	if h != http.Handler(e.n.routes["/socket/"]) {
		t.Error("Route returned a new handler for an existing path")
	}
	// Not committed yet: a reload that fails after Route changes nothing.
	runAuthCases(t, []authCase{{"old origin until the reload commits", e.ws, origin("https://a.example"), 101, ""}})
	e.n.Retire([]string{"/socket/"})
	e.publish(t, "orders", "1")
	expect(t, c, "message") // still connected, still subscribed
	runAuthCases(t, []authCase{
		{"old origin refused after reload", e.ws, origin("https://a.example"), 403, "origin not allowed"},
		{"new origin allowed after reload", e.ws, origin("https://b.example"), 101, ""},
	})

	e.n.Retire([]string{"/elsewhere/"})
	if code, reason := expectClose(t, c, 5*time.Second); code != wsframe.CloseGoingAway || reason != "route removed" {
		t.Errorf("close %d %q, want 1001 route removed", code, reason)
	}
	runAuthCases(t, []authCase{{"retired route", e.ws, nil, 503, "shutting down"}})
}

func TestIdleTimeoutAndPings(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ ping_interval: 100ms, idle_timeout: 400ms }`)

	// A live client answers pings (gorilla does while reading) and stays.
	live := dial(t, e.ws, nil)
	var pings atomic.Int32
	live.SetPingHandler(func(data string) error {
		pings.Add(1)
		return live.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
	})
	// A dead one never reads, so it never answers.
	dead := dial(t, e.ws, nil)

	live.SetReadDeadline(time.Now().Add(1200 * time.Millisecond))
	for {
		if _, _, err := live.ReadMessage(); err != nil {
			if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatalf("live client: %v, want to still be connected", err)
			}
			break
		}
	}
	if p := pings.Load(); p < 5 {
		t.Errorf("%d pings in 1.2s, want about 12 (every 100ms)", p)
	}
	if got := e.n.stats.conns.Load(); got != 1 {
		t.Errorf("%d connections, want 1: the dead one closed after idle_timeout", got)
	}
	// Reading now would answer the queued pings on a closed socket; the
	// close frame behind them is what matters.
	dead.SetPingHandler(func(string) error { return nil })
	code, reason := expectClose(t, dead, 2*time.Second)
	if code != wsframe.CloseGoingAway || reason != "idle timeout" {
		t.Errorf("dead client: close %d %q, want 1001 idle timeout", code, reason)
	}
}

func TestAdminAPI(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	admin := http.NewServeMux()
	h := e.n.AdminHandler() // the key is the admin listener's (cmd/edge)
	admin.Handle("/publish/", h)
	admin.Handle("/hub/", h)
	e.mux.Handle("/admin/", http.StripPrefix("/admin", admin))
	c := e.connect(t, "orders")

	post := func(path, key, body string) (int, map[string]any) {
		req, _ := http.NewRequest("POST", e.http+"/admin"+path, strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	if s, _ := post("/publish/bad%20name", "s3cret", "x"); s != 400 {
		t.Errorf("bad channel: %d, want 400", s)
	}
	if s, _ := post("/publish/orders", "s3cret", strings.Repeat("x", maxPublishBody+1)); s != 413 {
		t.Errorf("too large: %d, want 413", s)
	}
	s, v := post("/publish/orders", "s3cret", `{"n":1}`)
	if s != 202 || v["seq"] == nil || v["channel"] != "orders" {
		t.Errorf("publish: %d %v, want 202 with seq", s, v)
	}
	if m := expect(t, c, "message"); m.seq() != uint64(v["seq"].(float64)) {
		t.Errorf("delivered %v, API said seq %v", m, v["seq"])
	}
	resp, err := http.Get(e.http + "/admin/publish/orders")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET publish: %d, want 405", resp.StatusCode)
	}
	resp, err = http.Get(e.http + "/admin/hub/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if !st.Healthy || st.Broker != "memory" || st.Connections != 1 || st.Published != 1 ||
		st.Local.Channels["orders"].Subscribers != 1 || st.Epoch != e.n.Epoch() {
		t.Errorf("stats = %+v", st)
	}
}

func TestClientJSServed(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	resp, err := http.Get(e.http + "/socket/client.js")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Fatalf("client.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if string(body) != string(clientSource) {
		t.Error("client.js body differs from the embedded source")
	}
	etag := resp.Header.Get("ETag")
	req, _ := http.NewRequest("GET", e.http+"/socket/client.js", nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if etag == "" || resp.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation with ETag %q: %d, want 304", etag, resp.StatusCode)
	}
	resp, err = http.Get(e.http + "/socket/client.mjs")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "export { EdgeHub }") || resp.Header.Get("ETag") == etag {
		t.Errorf("client.mjs: want ES exports and its own ETag")
	}
}
