package proxy

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
)

func testPool(t *testing.T, snippet string) *upstreams {
	t.Helper()
	p, err := newUpstreams(proxyConfig(t, snippet))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func picks(p *upstreams, n int, client netip.Addr) string {
	var b strings.Builder
	for range n {
		s := p.pick(client, nil)
		if s == nil {
			b.WriteString("-")
			continue
		}
		b.WriteString(s.name[len("http://") : len("http://")+1])
	}
	return b.String()
}

func TestBalancing(t *testing.T) {
	var none netip.Addr
	for _, tc := range []struct {
		name, conf, want string
	}{
		{"round robin", "upstreams: [http://a:1, http://b:1, http://c:1]", "abcabc"},
		{"first", "upstreams: [http://a:1, http://b:1]\nbalance: first", "aaaa"},
		{"backup unused while primaries are up", "upstreams: [http://a:1, {url: http://z:1, backup: true}]", "aaa"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPool(t, tc.conf)
			if got := picks(p, len(tc.want), none); got != tc.want {
				t.Errorf("picks = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestSmoothWeightedRoundRobin(t *testing.T) {
	p := testPool(t, "upstreams: [{url: http://a:1, weight: 5}, http://b:1, http://c:1]")
	// nginx's sequence for weights 5, 1, 1.
	if got := picks(p, 14, netip.Addr{}); got != "aabacaaaabacaa" {
		t.Errorf("picks = %s, want aabacaaaabacaa", got)
	}
}

func TestLeastConn(t *testing.T) {
	p := testPool(t, "upstreams: [http://a:1, {url: http://b:1, weight: 2}, http://c:1]\nbalance: least_conn")
	a, b, c := p.list[0], p.list[1], p.list[2]
	a.active.Store(3)
	b.active.Store(5) // 2.5 per weight
	c.active.Store(2)
	if s := p.pick(netip.Addr{}, nil); s != c {
		t.Errorf("picked %s, want c (2 active)", s.name)
	}
	c.active.Store(4)
	if s := p.pick(netip.Addr{}, nil); s != b {
		t.Errorf("picked %s, want b (5 active over weight 2)", s.name)
	}
	// Ties rotate.
	a.active.Store(0)
	b.active.Store(0)
	c.active.Store(0)
	seen := map[*upstream]bool{}
	for range 3 {
		seen[p.pick(netip.Addr{}, nil)] = true
	}
	if len(seen) != 3 {
		t.Errorf("idle pool: %d servers used in 3 picks, want 3", len(seen))
	}
}

func TestIPHashConsistency(t *testing.T) {
	p := testPool(t, "upstreams: [http://a:1, http://b:1, http://c:1, http://d:1]\nbalance: ip_hash")
	clients := make([]netip.Addr, 400)
	before := make([]*upstream, len(clients))
	count := map[*upstream]int{}
	for i := range clients {
		clients[i] = netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 7})
		before[i] = p.pick(clients[i], nil)
		count[before[i]]++
		if again := p.pick(clients[i], nil); again != before[i] {
			t.Fatalf("client %s moved from %s to %s", clients[i], before[i].name, again.name)
		}
	}
	for _, s := range p.list {
		if count[s] < 60 {
			t.Errorf("%s got %d of 400 clients: uneven", s.name, count[s])
		}
	}
	// Take b down: only b's clients move, and they come back.
	b := p.list[1]
	b.healthy = false
	for i, c := range clients {
		s := p.pick(c, nil)
		if before[i] != b && s != before[i] {
			t.Errorf("client %s moved from %s to %s when b went down", c, before[i].name, s.name)
		}
		if s == b {
			t.Errorf("client %s sent to b while down", c)
		}
	}
	b.healthy = true
	for i, c := range clients {
		if s := p.pick(c, nil); s != before[i] {
			t.Errorf("client %s on %s after b came back, want %s", c, s.name, before[i].name)
		}
	}
	// A retry goes to the client's next server, consistently.
	next := p.pick(clients[0], []*upstream{before[0]})
	if next == before[0] || p.pick(clients[0], []*upstream{before[0]}) != next {
		t.Error("retry target not consistent")
	}
}

func TestPassiveHealth(t *testing.T) {
	p := testPool(t, "upstreams: [http://a:1, http://b:1]\nmax_fails: 2\nfail_timeout: 10s")
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	a := p.list[0]
	if p.fail(a) || !p.up(a) {
		t.Fatal("one failure of max_fails 2 marked a down")
	}
	now = now.Add(11 * time.Second) // the first failure left the window
	if p.fail(a) {
		t.Fatal("failures in different windows added up")
	}
	now = now.Add(time.Second)
	if !p.fail(a) || p.up(a) {
		t.Fatal("two failures within fail_timeout did not mark a down")
	}
	if got := picks(p, 3, netip.Addr{}); got != "bbb" {
		t.Errorf("picks while a is down = %s", got)
	}
	now = now.Add(10 * time.Second)
	if !p.up(a) {
		t.Error("a still down after fail_timeout")
	}

	single := testPool(t, "upstreams: [http://a:1]")
	if single.fail(single.list[0]) || !single.up(single.list[0]) {
		t.Error("the only server was marked down (nginx ignores max_fails for one server)")
	}
	off := testPool(t, "upstreams: [http://a:1, http://b:1]\nmax_fails: 0")
	if off.fail(off.list[0]) || !off.up(off.list[0]) {
		t.Error("max_fails: 0 still marks servers down")
	}
}

func TestBackupTakesOverWhenPrimariesDown(t *testing.T) {
	p := testPool(t, "upstreams: [http://a:1, http://b:1, {url: http://z:1, backup: true}]")
	p.list[0].healthy = false
	if got := picks(p, 2, netip.Addr{}); got != "bb" {
		t.Errorf("picks = %s, want bb", got)
	}
	p.list[1].healthy = false
	if got := picks(p, 2, netip.Addr{}); got != "zz" {
		t.Errorf("picks = %s, want zz", got)
	}
	p.list[2].healthy = false
	if got := picks(p, 1, netip.Addr{}); got != "-" {
		t.Errorf("picks = %s, want none", got)
	}
}

// TestFailoverAndRecovery runs a dead and a live server: requests fail over
// to the live one at once, the dead one is marked down, and when it comes
// back it gets traffic again after fail_timeout.
func TestFailoverAndRecovery(t *testing.T) {
	live := newNamed(t, "live")
	dead := deadAddr(t)
	reg := prometheus.NewRegistry()
	log, _ := newLog(t)
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+dead+", "+live.URL+"]\nfail_timeout: 300ms"),
		Options{Registerer: reg, Log: log, Site: "s", Route: "app"})
	base := front(t, h, nil)
	for i := range 6 {
		if code, name, _ := get(t, http.DefaultClient, base+"/", nil); code != 200 || name != "live" {
			t.Fatalf("request %d: %d from %q", i, code, name)
		}
	}
	if upGauge(t, reg, "s", "app", "http://"+dead) != 0 || upGauge(t, reg, "s", "app", live.URL) != 1 {
		t.Errorf("edge_proxy_upstream_up: dead %v live %v, want 0 and 1",
			upGauge(t, reg, "s", "app", "http://"+dead), upGauge(t, reg, "s", "app", live.URL))
	}
	if v := metricValue(t, reg, "edge_proxy_upstream_errors_total", "s", "app", "http://"+dead, "connect_refused"); v != 1 {
		t.Errorf("errors for the dead server = %v, want 1 (then it is down)", v)
	}
	// The dead server comes back on its address.
	ln, err := net.Listen("tcp", dead)
	if err != nil {
		t.Fatalf("relisten on %s: %v", dead, err)
	}
	revived := &named{name: "revived"}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		revived.mu.Lock()
		revived.hits++
		revived.mu.Unlock()
		w.Header().Set("X-Backend", "revived")
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()
	waitFor(t, 5*time.Second, "the revived server to get traffic", func() bool {
		get(t, http.DefaultClient, base+"/", nil)
		return revived.count() > 0
	})
	if upGauge(t, reg, "s", "app", "http://"+dead) != 1 {
		t.Error("edge_proxy_upstream_up of the revived server is not 1")
	}

	// Without retries the failed request gets its 502, later ones go on.
	h0 := newHandler(t, proxyConfig(t, "upstreams: [http://"+deadAddr(t)+", "+live.URL+"]\nretries: 0"), Options{})
	base0 := front(t, h0, nil)
	if code, _, _ := get(t, http.DefaultClient, base0+"/", nil); code != 502 {
		t.Errorf("first request %d, want 502 (round robin starts with the dead server)", code)
	}
	for range 3 {
		if code, name, _ := get(t, http.DefaultClient, base0+"/", nil); code != 200 || name != "live" {
			t.Errorf("then %d from %q", code, name)
		}
	}
}

func TestRetryIncludesPOSTWhenNothingWasSent(t *testing.T) {
	var got atomic.Value
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 100)
		n, _ := r.Body.Read(b)
		got.Store(string(b[:n]))
	}))
	defer live.Close()
	h := newHandler(t, proxyConfig(t, "upstreams: [http://"+deadAddr(t)+", "+live.URL+"]\nbalance: first"), Options{})
	res, err := http.Post(front(t, h, nil)+"/form", "text/plain", strings.NewReader("payload"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || got.Load() != "payload" {
		t.Errorf("got %d, body at the upstream %q", res.StatusCode, got.Load())
	}
}

func TestActiveHealthCheck(t *testing.T) {
	var aOK atomic.Bool
	aOK.Store(true)
	var aHits atomic.Int64
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if r.Header.Get("User-Agent") != "edge-health-check" {
				t.Errorf("probe User-Agent %q", r.Header.Get("User-Agent"))
			}
			if !aOK.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		aHits.Add(1)
		w.Header().Set("X-Backend", "a")
	}))
	defer a.Close()
	b := newNamed(t, "b")
	log, _ := newLog(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+a.URL+", "+b.URL+"]\nhealth_check: {path: /healthz, interval: 100ms, timeout: 100ms, status: 200, fails: 2, passes: 2}"), Options{Log: log})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- h.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	base := front(t, h, nil)
	sa := h.upstreams.list[0]

	aOK.Store(false)
	waitFor(t, 5*time.Second, "a to be taken out", func() bool { return !h.upstreams.up(sa) })
	before := aHits.Load()
	for range 6 {
		if code, name, _ := get(t, http.DefaultClient, base+"/", nil); code != 200 || name != "b" {
			t.Fatalf("%d from %q while a is out", code, name)
		}
	}
	if aHits.Load() != before {
		t.Error("a got requests while out")
	}
	aOK.Store(true)
	waitFor(t, 5*time.Second, "a to come back", func() bool { return h.upstreams.up(sa) })
	seen := map[string]bool{}
	for range 4 {
		_, name, _ := get(t, http.DefaultClient, base+"/", nil)
		seen[name] = true
	}
	if !seen["a"] {
		t.Error("a gets no traffic after passing its health checks")
	}
}

// TestIPHashSticky sends requests from different client addresses: real
// loopback sources, and X-Forwarded-For through a trusted proxy.
func TestIPHashSticky(t *testing.T) {
	backends := []*named{newNamed(t, "a"), newNamed(t, "b"), newNamed(t, "c")}
	urls := make([]string, len(backends))
	for i, b := range backends {
		urls[i] = b.URL
	}
	cfg := proxyConfig(t, "upstreams: ["+strings.Join(urls, ", ")+"]\nbalance: ip_hash")

	t.Run("source address", func(t *testing.T) {
		h := newHandler(t, cfg, Options{})
		base := front(t, h, nil)
		for _, src := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
			c := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{
				LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext}}
			_, first, _ := get(t, c, base+"/", nil)
			for range 4 {
				if _, name, _ := get(t, c, base+"/", nil); name != first {
					t.Errorf("%s: went to %s, then %s", src, first, name)
				}
			}
		}
	})
	t.Run("trusted X-Forwarded-For", func(t *testing.T) {
		h := newHandler(t, cfg, Options{})
		base := front(t, trusting(h, "127.0.0.0/8"), nil)
		used := map[string]bool{}
		for i := range 30 {
			hdr := map[string]string{"X-Forwarded-For": fmt.Sprintf("198.51.100.%d", i)}
			_, first, _ := get(t, http.DefaultClient, base+"/", hdr)
			used[first] = true
			for range 2 {
				if _, name, _ := get(t, http.DefaultClient, base+"/", hdr); name != first {
					t.Errorf("client %d: went to %s, then %s", i, first, name)
				}
			}
		}
		if len(used) != 3 {
			t.Errorf("30 clients used %d of 3 servers", len(used))
		}
	})
}

// TestLeastConnCountsTunnels checks that an open WebSocket counts as a
// connection for least_conn until it closes.
func TestLeastConnCountsTunnels(t *testing.T) {
	mk := func(name string) *httptest.Server {
		up := websocket.Upgrader{}
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if websocket.IsWebSocketUpgrade(r) {
				c, err := up.Upgrade(w, r, http.Header{"X-Backend": {name}})
				if err == nil {
					defer c.Close()
					c.ReadMessage() // until the client closes
				}
				return
			}
			w.Header().Set("X-Backend", name)
		}))
		t.Cleanup(s.Close)
		return s
	}
	a, b := mk("a"), mk("b")
	h := newHandler(t, proxyConfig(t, "upstreams: ["+a.URL+", "+b.URL+"]\nbalance: least_conn"), Options{})
	base := front(t, h, nil)
	ws, res := dialWS(t, nil, base, "/ws", nil)
	busy := res.Header.Get("X-Backend")
	for range 4 {
		if _, name, _ := get(t, http.DefaultClient, base+"/", nil); name == busy {
			t.Errorf("request went to %s, which holds the open tunnel", busy)
		}
	}
	ws.Close()
	waitFor(t, 5*time.Second, "the tunnel to end", func() bool { return h.tunnels.Len() == 0 })
	seen := map[string]bool{}
	for range 4 {
		_, name, _ := get(t, http.DefaultClient, base+"/", nil)
		seen[name] = true
	}
	if !seen[busy] {
		t.Errorf("%s gets nothing after its tunnel closed", busy)
	}
}
