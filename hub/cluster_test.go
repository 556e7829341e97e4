package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"edge/config"
	"edge/internal/testpeer"
)

// subscribeSince subscribes c to channel with since and epoch and returns
// the "subscribed" reply.
func subscribeSince(t *testing.T, c *websocket.Conn, channel string, since uint64, epoch string) frame {
	t.Helper()
	send(t, c, map[string]any{"type": "subscribe", "channel": channel, "since": since, "epoch": epoch})
	return expect(t, c, "subscribed")
}

// TestRecoveryAcrossNodes: a client subscribed on node 1 goes away; 20
// messages are published through node 2's admin API, through Redis'
// FCALL edge_publish (a backend) and through the CLI's path; it comes back
// on node 3, which never saw the channel, with since: exactly the 20, in
// order, no gap, then live messages. Every node delivers the same seq, and
// a restarted node keeps the epoch.
func TestRecoveryAcrossNodes(t *testing.T) {
	s := testpeer.StartRedis(t)
	e1 := newEnv(t, redisNode(s, "n1"), "")
	e2 := newEnv(t, redisNode(s, "n2"), "")
	e3 := newEnv(t, redisNode(s, "n3"), "")
	if e1.n.Epoch() != e2.n.Epoch() || e2.n.Epoch() != e3.n.Epoch() {
		t.Fatalf("epochs differ: %s %s %s", e1.n.Epoch(), e2.n.Epoch(), e3.n.Epoch())
	}
	c1 := e1.connect(t, "orders")
	c2 := e2.connect(t, "orders")
	seq0 := e2.publish(t, "orders", `"first"`)
	m1, m2 := expect(t, c1, "message"), expect(t, c2, "message")
	if m1.seq() != seq0 || m2.seq() != seq0 {
		t.Fatalf("seq: publish %d, node 1 %d, node 2 %d: want one seq everywhere", seq0, m1.seq(), m2.seq())
	}
	epoch := e1.n.Epoch()
	c1.Close()

	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	ctx := context.Background()
	var want []string
	for i := range 20 {
		p := fmt.Sprintf(`"m%d"`, i)
		want = append(want, fmt.Sprintf("m%d", i))
		switch i % 3 {
		case 0:
			resp, err := http.Post(e2.http+"/publish/orders", "application/json", strings.NewReader(p))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("publish API: %d", resp.StatusCode)
			}
		case 1:
			if err := rdb.FCall(ctx, "edge_publish", []string{"orders"}, p).Err(); err != nil {
				t.Fatalf("FCALL edge_publish: %v", err)
			}
		case 2:
			if err := PublishRedis(ctx, &config.Redis{URL: s.URL(), Prefix: "edge:"}, "orders", []byte(p)); err != nil {
				t.Fatalf("PublishRedis: %v", err)
			}
		}
	}
	// Node 2's live client saw them; their seqs are the reference.
	var seqs []uint64
	for range 20 {
		seqs = append(seqs, expect(t, c2, "message").seq())
	}

	c3 := e3.connect(t)
	if f := subscribeSince(t, c3, "orders", seq0, epoch); f["recovered"] != true || f.seq() != seqs[19] {
		t.Fatalf("subscribed = %v, want recovered true at seq %d", f, seqs[19])
	}
	var got []string
	for i := range 20 {
		m := expect(t, c3, "message")
		got = append(got, fmt.Sprint(m["data"]))
		if m.seq() != seqs[i] {
			t.Errorf("replayed message %d has seq %d, node 2 delivered it with %d", i, m.seq(), seqs[i])
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("replayed %v, want %v", got, want)
	}
	e1.publish(t, "orders", `"live"`)
	if m := expect(t, c3, "message"); m["data"] != "live" || m.seq() <= seqs[19] {
		t.Errorf("after the replay got %v, want the live message", m)
	}

	// A node that starts later shares the epoch: a node restart is not a
	// lost history.
	e4 := newEnv(t, redisNode(s, "n4"), "")
	if e4.n.Epoch() != epoch {
		t.Errorf("new node's epoch %s, want the cluster's %s", e4.n.Epoch(), epoch)
	}
	// And recovers from the same history.
	c4 := e4.connect(t)
	if f := subscribeSince(t, c4, "orders", seqs[17], epoch); f["recovered"] != true {
		t.Fatalf("node 4: subscribed = %v, want recovered", f)
	}
	for _, w := range []string{"m18", "m19", "live"} {
		if m := expect(t, c4, "message"); m["data"] != w {
			t.Errorf("node 4 replayed %v, want %s", m, w)
		}
	}
}

// TestRecoveryAcrossNodesHonestGap: what Redis no longer holds is a gap,
// not a silent loss: since older than the route's history.size, since
// from another epoch, and plain PUBLISH messages, which are live only.
func TestRecoveryAcrossNodesHonestGap(t *testing.T) {
	s := testpeer.StartRedis(t)
	hubYAML := `{ history: { size: 5 } }`
	e1 := newEnv(t, redisNode(s, "n1"), hubYAML)
	e2 := newEnv(t, redisNode(s, "n2"), hubYAML)
	first := e1.publish(t, "orders", `0`)
	for i := range 10 {
		e1.publish(t, "orders", fmt.Sprint(i+1))
	}
	c := e2.connect(t)
	if f := subscribeSince(t, c, "orders", first, e2.n.Epoch()); f["recovered"] != false {
		t.Errorf("10 missed with history.size 5: subscribed = %v, want recovered false", f)
	}
	if g := expect(t, c, "gap"); g.str("reason") != "history" {
		t.Errorf("gap = %v, want reason history", g)
	}

	c2 := e2.connect(t)
	subscribeSince(t, c2, "other", 1, "not-the-epoch")
	if g := expect(t, c2, "gap"); g.str("reason") != "epoch" || g.str("epoch") != e2.n.Epoch() {
		t.Errorf("gap = %v, want reason epoch with the cluster's epoch", g)
	}

	// A plain PUBLISH is delivered live, with the position unchanged, and
	// is not in the history.
	live := e1.connect(t, "plain")
	pos := e1.publish(t, "plain", `"kept"`)
	expect(t, live, "message")
	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	rdb.Publish(context.Background(), "edge:plain", `"live only"`)
	if m := expect(t, live, "message"); m["data"] != "live only" || m.seq() != pos {
		t.Errorf("plain PUBLISH delivered %v, want it with the channel's seq %d", m, pos)
	}
	c3 := e2.connect(t)
	if f := subscribeSince(t, c3, "plain", pos, e2.n.Epoch()); f["recovered"] != true {
		t.Errorf("subscribed = %v", f)
	}
	e1.publish(t, "plain", `"next"`)
	if m := expect(t, c3, "message"); m["data"] != "next" {
		t.Errorf("got %v, want the next message (the plain one is not replayed)", m)
	}
}

// TestNodeCrash: one of three nodes dies without cleaning up. Its presence
// disappears within the TTL, and its clients reconnect to another node and
// recover what was published meanwhile with since.
func TestNodeCrash(t *testing.T) {
	s := testpeer.StartRedis(t)
	e1 := newEnv(t, redisNode(s, "n1"), "")
	e2 := newEnv(t, redisNode(s, "n2"), "")
	e3 := newEnv(t, redisNode(s, "n3"), "")
	_ = e3
	c := e1.connect(t, "room")
	seq := e2.publish(t, "room", `"before"`)
	expect(t, c, "message")
	epoch := e1.n.Epoch()
	ctx := context.Background()
	waitFor(t, 10*time.Second, "presence of 3 nodes", func() bool {
		p, err := e2.n.Presence(ctx)
		return err == nil && p.Nodes == 3 && p.Channels["room"].Subscribers == 1
	})

	// The crash: connections cut, no cleanup in Redis.
	e1.n.skipPresenceCleanup = true
	e1.srv.CloseClientConnections()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	e1.n.Close(cctx)
	crashed := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("client still connected to the crashed node")
	}

	for i := range 5 {
		e3.publish(t, "room", fmt.Sprint(i))
	}
	// The client reconnects to node 2.
	c2 := e2.connect(t)
	if f := subscribeSince(t, c2, "room", seq, epoch); f["recovered"] != true {
		t.Fatalf("subscribed = %v, want recovered", f)
	}
	for i := range 5 {
		if m := expect(t, c2, "message"); m["data"] != float64(i) {
			t.Errorf("recovered %v, want %d", m, i)
		}
	}
	waitFor(t, 10*time.Second, "crashed node's presence to expire", func() bool {
		p, err := e2.n.Presence(ctx)
		return err == nil && p.Nodes == 2
	})
	if d := time.Since(crashed); d > 3*time.Second {
		t.Errorf("crashed node's presence lasted %s, TTL 1.5s", d)
	}
}

// sentinelNode returns options for a node that finds Redis through the
// sentinels.
func sentinelNode(sentinels []*testpeer.RedisServer, id string) NodeOptions {
	o := NodeOptions{
		Redis:          &config.Redis{Prefix: "edge:", Sentinel: &config.RedisSentinel{Master: "mymaster"}},
		NodeID:         id,
		CanaryInterval: 200 * time.Millisecond,
		ReconnectMin:   20 * time.Millisecond,
		ReconnectMax:   200 * time.Millisecond,
		PresenceTTL:    1500 * time.Millisecond,
	}
	for _, s := range sentinels {
		o.Redis.Sentinel.Addrs = append(o.Redis.Sentinel.Addrs, s.Addr)
	}
	return o
}

// event is what a client received: a message or a gap.
type event struct {
	gap  bool
	seq  uint64
	data string
	at   time.Time
}

// TestSentinelFailover: master, replica, three sentinels, three nodes.
// Messages are published at 50/s across the nodes; the master is killed.
// Every client stays connected, and every message whose publish succeeded
// is delivered once, in order, or covered by a gap. The time from the kill
// to the first delivery after the failover is logged.
func TestSentinelFailover(t *testing.T) {
	master := testpeer.StartRedis(t)
	replica := testpeer.StartReplica(t, master)
	sentinels := testpeer.StartSentinels(t, master, "mymaster", 3)
	var envs []*env
	var clients []*websocket.Conn
	for i := range 3 {
		e := newEnv(t, sentinelNode(sentinels, fmt.Sprintf("n%d", i+1)), "")
		envs = append(envs, e)
		clients = append(clients, e.connect(t, "ticks"))
	}

	// Readers: every client records what it gets until the test ends.
	var evMu sync.Mutex
	events := make([][]event, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for {
				c.SetReadDeadline(time.Now().Add(15 * time.Second))
				_, data, err := c.ReadMessage()
				if err != nil {
					return
				}
				var f frame
				if err := json.Unmarshal(data, &f); err != nil {
					t.Errorf("client %d: %q is not JSON", i, data)
					return
				}
				evMu.Lock()
				switch f.str("type") {
				case "":
					events[i] = append(events[i], event{seq: f.seq(), data: fmt.Sprint(f["data"]), at: time.Now()})
				case "gap":
					events[i] = append(events[i], event{gap: true, seq: f.seq(), at: time.Now()})
				}
				evMu.Unlock()
			}
		})
	}

	// The publisher: 50/s, round robin over the nodes.
	type published struct {
		seq  uint64
		data string
	}
	var (
		mu       sync.Mutex
		accepted []published
		failed   int
	)
	stop := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			data := fmt.Sprint(i)
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			seq, err := envs[i%3].n.Publish(ctx, "ticks", []byte(data))
			cancel()
			mu.Lock()
			if err != nil {
				failed++
			} else {
				accepted = append(accepted, published{seq, data})
			}
			mu.Unlock()
		}
	})

	time.Sleep(time.Second) // steady traffic before the failover
	master.Kill()
	killed := time.Now()
	waitFor(t, 20*time.Second, "nodes unhealthy", func() bool { return envs[0].n.Healthy() != nil })
	waitFor(t, 30*time.Second, "failover", func() bool {
		for _, e := range envs {
			if e.n.Healthy() != nil {
				return false
			}
		}
		mu.Lock()
		defer mu.Unlock()
		return len(accepted) > 0 && accepted[len(accepted)-1].seq > uint64(killed.UnixMicro())
	})
	time.Sleep(time.Second) // steady traffic after it
	close(stop)
	pwg.Wait()
	// The end marker, then the readers stop at their deadline or at close.
	end := envs[0].publish(t, "ticks", `"end"`)
	waitFor(t, 10*time.Second, "end marker everywhere", func() bool {
		evMu.Lock()
		defer evMu.Unlock()
		for i := range clients {
			if !seen(events, i, end) {
				return false
			}
		}
		return true
	})
	for _, c := range clients {
		c.Close()
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("published %d, failed during the failover %d, replica %s promoted", len(accepted), failed, replica.Addr)
	if failed == 0 || len(accepted) < 50 {
		t.Errorf("accepted %d, failed %d: the failover did not happen under load", len(accepted), failed)
	}
	for i, evs := range events {
		var last uint64
		got := map[uint64]string{}
		var gaps []uint64
		var firstAfter time.Time
		for _, ev := range evs {
			if ev.gap {
				gaps = append(gaps, ev.seq)
				continue
			}
			if ev.seq <= last {
				t.Errorf("client %d: seq %d after %d: out of order or twice", i, ev.seq, last)
			}
			last = ev.seq
			got[ev.seq] = ev.data
			if firstAfter.IsZero() && ev.at.After(killed) && ev.seq > uint64(killed.UnixMicro()) {
				firstAfter = ev.at
			}
		}
		lost := 0
		for _, p := range accepted {
			if d, ok := got[p.seq]; ok {
				if d != p.data {
					t.Errorf("client %d: seq %d carried %q, published %q", i, p.seq, d, p.data)
				}
				continue
			}
			covered := false
			for _, g := range gaps {
				covered = covered || g >= p.seq
			}
			if !covered {
				lost++
			}
		}
		if lost > 0 {
			t.Errorf("client %d: %d accepted messages neither delivered nor covered by a gap", i, lost)
		}
		t.Logf("client %d (node %d): %d messages, %d gaps, first delivery after failover %s after the kill",
			i, i+1, len(got), len(gaps), firstAfter.Sub(killed).Round(time.Millisecond))
	}
}

// seen reports whether client i got seq.
func seen(events [][]event, i int, seq uint64) bool {
	for _, ev := range events[i] {
		if !ev.gap && ev.seq == seq {
			return true
		}
	}
	return false
}

// TestCatchUpAfterSubscriptionLoss: Redis drops every node's subscription
// and messages are published before the nodes are back: the nodes replay
// them from Redis' history to their live clients, once, in order, with no
// gap.
func TestCatchUpAfterSubscriptionLoss(t *testing.T) {
	s := testpeer.StartRedis(t)
	e1 := newEnv(t, redisNode(s, "n1"), "")
	e2 := newEnv(t, redisNode(s, "n2"), "")
	c1 := e1.connect(t, "orders")
	c2 := e2.connect(t, "orders")
	e1.publish(t, "orders", `"before"`)
	expect(t, c1, "message")
	expect(t, c2, "message")

	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	ctx := context.Background()
	// One round trip: the subscriptions die, then 10 messages go into the
	// history while no node is subscribed (they come back after at least
	// 10ms of backoff).
	_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.ClientKillByFilter(ctx, "TYPE", "pubsub")
		for i := range 10 {
			p.FCall(ctx, "edge_publish", []string{"orders"}, fmt.Sprint(i))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "subscriptions lost and back", func() bool {
		return e1.n.stats.brokerLost.Load() == 1 && e2.n.stats.brokerLost.Load() == 1 &&
			e1.n.Healthy() == nil && e2.n.Healthy() == nil
	})
	e2.publish(t, "orders", `"after"`)
	for i, c := range []*websocket.Conn{c1, c2} {
		var got []string
		for range 11 {
			f := read(t, c, 5*time.Second)
			if f.str("type") != "" {
				t.Fatalf("client %d got %v, want the missed messages and no gap", i+1, f)
			}
			got = append(got, fmt.Sprint(f["data"]))
		}
		if g := fmt.Sprint(got); g != "[0 1 2 3 4 5 6 7 8 9 after]" {
			t.Errorf("client %d got %s", i+1, g)
		}
	}
}

// TestSentinelsDown: every sentinel unreachable. The node runs, retries,
// and its health (/readyz) says why.
func TestSentinelsDown(t *testing.T) {
	s := testpeer.StartRedis(t)
	dead := testpeer.StartRedis(t)
	dead.Kill()
	o := sentinelNode([]*testpeer.RedisServer{s}, "n1")
	o.Redis.Sentinel.Addrs = []string{dead.Addr, dead.Addr}
	n, err := NewNode(o)
	if err != nil {
		t.Fatal(err)
	}
	runNode(t, n)
	// The reason is go-redis': "all sentinels … are unreachable", or a
	// deadline when the sentinels are slow to refuse.
	waitFor(t, 20*time.Second, "health saying why", func() bool {
		err := n.Healthy()
		return err != nil && strings.Contains(err.Error(), "psubscribe: ")
	})
	t.Logf("health: %v", n.Healthy())
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := n.Publish(ctx, "orders", []byte("x")); err == nil {
		t.Error("publish succeeded without a master")
	}
}

// TestForgedHistoryMessages: malformed numbered messages on the history's
// pub/sub channel are dropped and counted, never delivered; a bad FCALL is
// refused by Redis.
func TestForgedHistoryMessages(t *testing.T) {
	s := testpeer.StartRedis(t)
	e := newEnv(t, redisNode(s, "n1"), "")
	c := e.connect(t, "orders")
	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	ctx := context.Background()
	for _, p := range []string{"garbage", "12 \nno epoch", "abc e\nx", "0 e\nzero", "99999999999999999999999 e\ntoo big"} {
		rdb.Publish(ctx, "edge:!s:orders", p)
	}
	rdb.Publish(ctx, "edge:!s:bad name", "1 e\nx")
	if err := rdb.FCall(ctx, "edge_publish", []string{"orders"}).Err(); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("FCALL without payload: %v, want a usage error", err)
	}
	for _, name := range []string{"bad name", "a!b", strings.Repeat("x", 129), "é"} {
		if err := rdb.FCall(ctx, "edge_publish", []string{name}, "x").Err(); err == nil || !strings.Contains(err.Error(), "invalid channel name") {
			t.Errorf("FCALL edge_publish %q: %v, want invalid channel name", name, err)
		}
	}
	if err := rdb.FCall(ctx, "edge_publish", []string{"a.b:c/d-e_" + strings.Repeat("x", 118)}, "x").Err(); err != nil {
		t.Errorf("FCALL with a valid 128-character name: %v", err)
	}
	e.publish(t, "orders", `"good"`)
	if m := read(t, c, 5*time.Second); m["data"] != "good" {
		t.Errorf("got %v, want only the good message", m)
	}
	if got := e.n.redis.invalid.Load(); got != 6 {
		t.Errorf("invalid counted %d, want 6", got)
	}
}

// balancer is a TCP load balancer on loopback that sends new connections
// to one backend, switchable, as DNS or a load balancer would after a
// node's health check fails.
type balancer struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
}

func newBalancer(t *testing.T, target string) *balancer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			target := b.target
			b.mu.Unlock()
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer u.Close()
				go func() { io.Copy(u, c); u.Close() }()
				io.Copy(c, u)
			}()
		}
	}()
	return b
}

func (b *balancer) point(target string) {
	b.mu.Lock()
	b.target = target
	b.mu.Unlock()
}

// TestClientJSCluster: client.js under Node, behind a balancer in front of
// three nodes; the node it uses crashes, the balancer moves to another,
// and client.js resubscribes with since and gets what was published
// meanwhile (testdata/node/cluster.test.mjs).
func TestClientJSCluster(t *testing.T) {
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command (make test or .ci/run) installs Node 20 and npm", bin)
		}
	}
	npmCI(t)
	s := testpeer.StartRedis(t)
	var envs []*env
	for i := range 3 {
		envs = append(envs, newEnv(t, redisNode(s, fmt.Sprintf("n%d", i+1)), ""))
	}
	lb := newBalancer(t, strings.TrimPrefix(envs[0].http, "http://"))
	ctl := http.NewServeMux()
	ctl.HandleFunc("POST /publish", func(w http.ResponseWriter, r *http.Request) {
		if _, err := envs[1].n.Publish(r.Context(), "room", []byte(`"`+r.URL.Query().Get("data")+`"`)); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ctl.HandleFunc("POST /crash", func(w http.ResponseWriter, r *http.Request) {
		lb.point(strings.TrimPrefix(envs[1].http, "http://"))
		e := envs[0]
		e.n.skipPresenceCleanup = true
		e.srv.CloseClientConnections()
		cctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		e.n.Close(cctx)
		for i := range 5 {
			if _, err := envs[2].n.Publish(r.Context(), "room", []byte(fmt.Sprint(i))); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ctlSrv := httptest.NewServer(ctl)
	defer ctlSrv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "cluster.test.mjs")
	cmd.Dir = nodeDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "EDGE_LB=http://"+lb.ln.Addr().String(), "EDGE_CTL="+ctlSrv.URL)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node cluster.test.mjs: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("%s", out)
	}
}
