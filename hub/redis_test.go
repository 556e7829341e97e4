package hub

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"edge/config"
	"edge/internal/testpeer"
)

// redisNode returns options for a node on s with short timings.
func redisNode(s *testpeer.RedisServer, id string) NodeOptions {
	return NodeOptions{
		Redis:          &config.Redis{URL: s.URL(), Prefix: "edge:"},
		NodeID:         id,
		CanaryInterval: 200 * time.Millisecond,
		ReconnectMin:   20 * time.Millisecond,
		ReconnectMax:   200 * time.Millisecond,
		PresenceTTL:    1500 * time.Millisecond,
	}
}

// readMessages reads data messages until one carries the payload "end",
// and returns the payloads before it; control messages are skipped.
func readMessages(t *testing.T, c *websocket.Conn) []string {
	t.Helper()
	var got []string
	for {
		f := read(t, c, 10*time.Second)
		if f.str("type") != "" {
			continue
		}
		d := fmt.Sprint(f["data"])
		if d == "end" {
			return got
		}
		got = append(got, d)
	}
}

// TestTwoNodesOneRedis: a message published on either node, or straight
// into Redis by another program, is delivered once by both nodes.
func TestTwoNodesOneRedis(t *testing.T) {
	s := testpeer.StartRedis(t)
	e1 := newEnv(t, redisNode(s, "n1"), "")
	e2 := newEnv(t, redisNode(s, "n2"), "")
	c1 := e1.connect(t, "orders")
	c2 := e2.connect(t, "orders")

	// Through node 1's admin API.
	resp, err := http.Post(e1.http+"/publish/orders", "application/json", strings.NewReader(`"api"`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("publish API: %d, want 202", resp.StatusCode)
	}
	// Through node 2.
	e2.publish(t, "orders", `"node2"`)
	// Straight into Redis, as a PHP backend would.
	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	rdb.Publish(context.Background(), "edge:orders", `"backend"`)
	// And with the CLI helper.
	if err := PublishRedis(context.Background(), &config.Redis{URL: s.URL(), Prefix: "edge:"}, "orders", []byte(`"cli"`)); err != nil {
		t.Fatalf("PublishRedis: %v", err)
	}
	rdb.Publish(context.Background(), "edge:orders", `"end"`)

	want := "[api node2 backend cli]"
	for i, c := range []*websocket.Conn{c1, c2} {
		if got := fmt.Sprint(readMessages(t, c)); got != want {
			t.Errorf("node %d delivered %s, want %s exactly once each", i+1, got, want)
		}
	}
}

// TestRedisRestart: Redis dies and comes back empty; clients stay
// connected, the node reports unhealthy meanwhile, resubscribes, and
// reports the lost history as a gap (epoch: Redis lost its epoch with the
// history).
func TestRedisRestart(t *testing.T) {
	s := testpeer.StartRedis(t)
	e := newEnv(t, redisNode(s, "n1"), "")
	c := e.connect(t, "orders")
	e.publish(t, "orders", `"before"`)
	before := expect(t, c, "message")
	oldEpoch := e.n.Epoch()

	s.Kill()
	waitFor(t, 10*time.Second, "unhealthy", func() bool { return e.n.Healthy() != nil })
	if _, err := e.n.Publish(context.Background(), "orders", []byte(`"lost"`)); err == nil {
		t.Error("Publish succeeded with Redis down")
	}
	resp, err := http.Post(e.http+"/publish/orders", "text/plain", strings.NewReader("x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("publish API with Redis down: %d, want 503", resp.StatusCode)
	}
	// The client is still connected and served.
	send(t, c, map[string]string{"type": "ping"})
	expect(t, c, "pong")

	s.Restart()
	waitFor(t, 10*time.Second, "healthy again", func() bool { return e.n.Healthy() == nil })
	gap := expect(t, c, "gap")
	if gap.str("channel") != "orders" || gap.str("reason") != "epoch" || gap.str("epoch") == oldEpoch {
		t.Errorf("gap = %v, want channel orders, reason epoch, a new epoch", gap)
	}
	e.publish(t, "orders", `"after"`)
	if m := expect(t, c, "message"); m.str("data") != "after" || m.seq() <= gap.seq() {
		t.Errorf("after restart got %v, want \"after\" with seq above the gap's", m)
	}

	// A client that was away across the outage cannot recover: gap.
	c2 := e.connect(t)
	send(t, c2, map[string]any{"type": "subscribe", "channel": "orders", "since": before.seq(), "epoch": oldEpoch})
	if f := expect(t, c2, "subscribed"); f["recovered"] != false {
		t.Errorf("subscribed = %v, want recovered false", f)
	}
	if g := expect(t, c2, "gap"); g.str("reason") != "epoch" {
		t.Errorf("gap = %v", g)
	}
	st := e.n.Stats(context.Background())
	if st.BrokerLost != 1 || st.Reconnects < 1 {
		t.Errorf("stats broker_lost=%d reconnects=%d, want 1 and ≥1", st.BrokerLost, st.Reconnects)
	}
}

// TestRedisRestartBeforeStart: Redis down when the node starts; the node
// runs, reports unhealthy, and subscribes once Redis appears.
func TestRedisDownAtStart(t *testing.T) {
	s := testpeer.StartRedis(t)
	s.Kill()
	n, err := NewNode(redisNode(s, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	runNode(t, n)
	time.Sleep(300 * time.Millisecond) // a few failed attempts
	if n.Healthy() == nil {
		t.Fatal("healthy without Redis")
	}
	s.Restart()
	waitFor(t, 10*time.Second, "healthy once Redis is up", func() bool { return n.Healthy() == nil })
}

// TestCanaryDetectsSilentSubscription: Redis stops answering without
// closing connections (SIGSTOP), the way a failover can leave a dead
// subscription on a live TCP connection. Only the canary notices. Redis
// kept its history and nothing was published meanwhile: no gap.
func TestCanaryDetectsSilentSubscription(t *testing.T) {
	s := testpeer.StartRedis(t)
	e := newEnv(t, redisNode(s, "n1"), "")
	c := e.connect(t, "orders")
	e.publish(t, "orders", `1`)
	expect(t, c, "message")

	s.Pause()
	start := time.Now()
	waitFor(t, 10*time.Second, "unhealthy", func() bool { return e.n.Healthy() != nil })
	t.Logf("silent subscription detected after %s (canary interval 200ms)", time.Since(start).Round(time.Millisecond))
	s.Resume()
	waitFor(t, 15*time.Second, "healthy again", func() bool { return e.n.Healthy() == nil })
	if e.n.redis.canaryFailures.Load() == 0 {
		t.Error("no canary failure counted")
	}
	e.publish(t, "orders", `2`)
	if m := read(t, c, 5*time.Second); m.str("type") != "" || m["data"] != 2.0 {
		t.Errorf("after resume got %v, want message 2 and no gap (nothing was lost)", m)
	}
}

// TestPresenceAcrossNodes: presence sums over nodes, lists subjects, and a
// crashed node's counts expire with its hash's TTL.
func TestPresenceAcrossNodes(t *testing.T) {
	s := testpeer.StartRedis(t)
	secret := []byte("presence-test-secret-0123456789abcdef")
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, secret, 0o600)
	hubYAML := fmt.Sprintf(`{ presence_subs: true, auth: { mode: jwt, secret_file: %q } }`, secretFile)
	e1 := newEnv(t, redisNode(s, "n1"), hubYAML)
	e2 := newEnv(t, redisNode(s, "n2"), hubYAML)
	e3 := newEnv(t, redisNode(s, "n3"), hubYAML)
	connect := func(e *env, sub string, channels ...string) {
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub}).SignedString(secret)
		q := "?token=" + tok
		for _, ch := range channels {
			q += "&channel=" + ch
		}
		c := dial(t, e.ws+q, nil)
		expect(t, c, "welcome")
		for range channels {
			expect(t, c, "subscribed")
		}
	}
	connect(e1, "alice", "room")
	connect(e1, "bob", "room")
	connect(e2, "carol", "room", "other")
	connect(e2, "alice", "other")
	connect(e3, "dave", "room")

	ctx := context.Background()
	presence := func() Presence {
		p, err := e1.n.Presence(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	waitFor(t, 10*time.Second, "presence of 3 nodes", func() bool {
		p := presence()
		return p.Nodes == 3 && p.Connections == 5 && p.Channels["room"].Subscribers == 4
	})
	p := presence()
	if got := fmt.Sprint(p.Channels["room"].Subs); got != "[alice bob carol dave]" {
		t.Errorf("room subs = %s", got)
	}
	if got := p.Channels["other"]; got.Subscribers != 2 || fmt.Sprint(got.Subs) != "[alice carol]" {
		t.Errorf("other = %+v", got)
	}
	if lp := e1.n.LocalPresence(); lp.Connections != 2 || lp.Channels["room"].Subscribers != 2 {
		t.Errorf("local presence of n1 = %+v", lp)
	}

	// A clean shutdown removes the node's hash at once.
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e3.n.Close(cctx)
	if p := presence(); p.Nodes != 2 || p.Channels["room"].Subscribers != 3 {
		t.Errorf("after a clean shutdown of n3: %+v, want its counts gone at once", p)
	}

	// A crash leaves the hash behind until its TTL runs out.
	e2.n.skipPresenceCleanup = true
	e2.n.Close(cctx)
	if p := presence(); p.Nodes != 2 {
		t.Errorf("right after n2 crashed: %d nodes, want its hash still there", p.Nodes)
	}
	start := time.Now()
	waitFor(t, 10*time.Second, "crashed node's presence to expire", func() bool {
		p := presence()
		return p.Nodes == 1 && p.Channels["room"].Subscribers == 2 && p.Channels["other"].Subscribers == 0
	})
	t.Logf("crashed node's presence expired %s after the crash (TTL 1.5s)", time.Since(start).Round(time.Millisecond))
}
