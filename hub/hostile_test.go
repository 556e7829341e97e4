package hub

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/clientip"
	"edge/internal/wsframe"
)

// behindProxy serves the hub route configured by hubYAML as the server's
// router does: the client identity resolved once per request, with
// loopback (the test's "load balancer") as the trusted proxy. It returns
// the route's ws:// URL.
func behindProxy(t *testing.T, hubYAML string) string {
	t.Helper()
	n, err := NewNode(NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	runNode(t, n)
	waitFor(t, 10*time.Second, "node healthy", func() bool { return n.Healthy() == nil })
	res := clientip.NewResolver([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	h := n.Route("/socket/", parseHub(t, hubYAML), nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, res.Resolve(r))
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/socket/"
}

func forwardedFor(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }

// TestHostileHubPerIPBehindTrustedProxy: behind a trusted load balancer
// each client has its own max_connections_per_ip budget (it was the
// balancer's, shared by every visitor).
func TestHostileHubPerIPBehindTrustedProxy(t *testing.T) {
	u := behindProxy(t, `{ max_connections_per_ip: 1 }`)
	dial(t, u, forwardedFor("203.0.113.1"))
	runAuthCases(t, []authCase{
		{"second from the same client", u, forwardedFor("203.0.113.1"), 429, "too many connections"},
		{"spoofed left-most hop", u, forwardedFor("198.51.100.9, 203.0.113.1"), 429, "too many connections"},
	})
	dial(t, u, forwardedFor("203.0.113.2")) // another visitor, same balancer
	dial(t, u, forwardedFor("2001:db8::7"))
}

// TestHostileHubRequestAuthSeesClient: the request auth backend is told
// the client's address, not the load balancer's.
func TestHostileHubRequestAuthSeesClient(t *testing.T) {
	var mu sync.Mutex
	var seen http.Header
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
	}))
	t.Cleanup(backend.Close)
	u := behindProxy(t, fmt.Sprintf(`{ auth: { mode: request, url: %q } }`, backend.URL+"/auth"))
	dial(t, u, forwardedFor("198.51.100.9, 203.0.113.7"))
	mu.Lock()
	defer mu.Unlock()
	if got := seen.Get("X-Forwarded-For"); got != "203.0.113.7" {
		t.Errorf("auth backend saw X-Forwarded-For %q, want the client 203.0.113.7", got)
	}
	if got := seen.Get("X-Real-Ip"); got != "203.0.113.7" {
		t.Errorf("auth backend saw X-Real-IP %q, want the client 203.0.113.7", got)
	}
}

// TestHostileHubRefusalReasons: every refused upgrade is counted under its
// reason, in /hub/stats and edge_hub_connections_refused_total, so that an
// operator can tell attacks and broken clients from a failing backend.
func TestHostileHubRefusalReasons(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, NodeOptions{Registerer: reg}, "")
	secret := []byte("0123456789abcdef0123456789abcdef")
	lim := e.route(t, "/lim/", fmt.Sprintf(`{ max_connections_per_ip: 1, channels: [orders], auth: { mode: jwt, secret_file: %q } }`,
		writeFile(t, "s", secret)), []string{"dash.example.com"})
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	down := e.route(t, "/down/", fmt.Sprintf(`{ auth: { mode: request, url: %q, timeout: 1s } }`, deadURL), nil)
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u"})
	runAuthCases(t, []authCase{
		{"origin", lim + "?token=" + tok, http.Header{"Origin": {"https://evil.example"}}, 403, "origin not allowed"},
		{"bad channel", lim + "?channel=a%20b&token=" + tok, nil, 400, "invalid channel name"},
		{"no token", lim, nil, 401, "missing token"},
		{"channel", lim + "?channel=secret&token=" + tok, nil, 403, "channel not allowed"},
		{"auth backend down", down, nil, 503, "auth backend unavailable"},
	})
	dial(t, lim+"?token="+tok, nil)
	runAuthCases(t, []authCase{{"per ip", lim + "?token=" + tok, nil, 429, "too many connections"}})
	want := map[string]uint64{"origin": 1, "bad_request": 1, "auth": 1, "channel_forbidden": 1, "auth_unavailable": 1, "per_ip_limit": 1}
	st := e.n.Stats(t.Context())
	if fmt.Sprint(st.RefusedBy) != fmt.Sprint(want) || st.Refused != 6 {
		t.Errorf("refused %d by %v, want 6 by %v", st.Refused, st.RefusedBy, want)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		if mf.GetName() != "edge_hub_connections_refused_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if v := m.GetCounter().GetValue(); v > 0 {
				got[m.GetLabel()[0].GetValue()] = uint64(v)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("edge_hub_connections_refused_total = %v, want %v", got, want)
	}
}

// TestHostileTokenExpiryClosesConnection: a token whose exp passes while
// connected is closed at exp with 1008 "token expired", within a second,
// not at the next ping (default 25s).
func TestHostileTokenExpiryClosesConnection(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/hs/", fmt.Sprintf(`{ auth: { mode: jwt, secret_file: %q } }`, writeFile(t, "s", secret)), nil)
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": exp.Unix()})
	long := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Hour).Unix()})
	c := dial(t, u+"?token="+tok, nil)
	other := dial(t, u+"?token="+long, nil)
	code, reason := expectClose(t, c, time.Until(exp)+time.Second)
	at := time.Now()
	if code != wsframe.ClosePolicy || reason != "token expired" {
		t.Errorf("close %d %q, want 1008 token expired", code, reason)
	}
	if at.Before(exp) {
		t.Errorf("closed %s before exp", exp.Sub(at))
	}
	if n := e.n.Stats(t.Context()).TokensExpired; n != 1 {
		t.Errorf("tokens_expired = %d, want 1", n)
	}
	// A connection with a later exp stays.
	send(t, other, map[string]any{"type": "ping"})
	expect(t, other, "welcome")
	expect(t, other, "pong")
}

// heldBytes sums the payloads and frames the histories of all channels
// hold, walking them as a memory profile would.
func heldBytes(n *Node) int {
	total := 0
	for _, ch := range n.channelList() {
		ch.mu.Lock()
		for _, m := range ch.hist {
			total += len(m.payload) + len(m.frame) + len(m.raw)
		}
		ch.mu.Unlock()
	}
	return total
}

// TestHostileHistoryMaxBytes: 600 messages of 60 KB to distinct channels
// (92 MB held until the TTL before) stay within history.max_bytes; the
// oldest are evicted across channels, and recovering one of them gives a
// gap while the newest are still replayed.
func TestHostileHistoryMaxBytes(t *testing.T) {
	const limit = 4 << 20
	e := newEnv(t, NodeOptions{}, `{ history: { max_bytes: 4MiB } }`)
	live := e.connect(t, "h-0")
	payload := `"` + strings.Repeat("x", 60_000) + `"`
	seqs := make([]uint64, 600)
	peak := 0
	for i := range seqs {
		seqs[i] = e.publish(t, fmt.Sprintf("h-%d", i), payload)
		if b := e.n.hist.bytes.Load(); b > limit {
			t.Fatalf("after %d publishes the history accounts %d bytes, over max_bytes %d", i+1, b, limit)
		}
		if i%50 == 0 || i == len(seqs)-1 {
			peak = max(peak, heldBytes(e.n))
		}
	}
	if peak > limit {
		t.Errorf("histories held %d bytes, want at most max_bytes %d", peak, limit)
	}
	if got := heldBytes(e.n); got < limit/2 {
		t.Errorf("histories hold %d bytes after eviction, want the newest kept (near %d)", got, limit)
	}
	// The subscriber got its message although the history let it go.
	if m := expect(t, live, "message"); m.seq() != seqs[0] {
		t.Errorf("live subscriber got %v, want seq %d", m, seqs[0])
	}
	if acct := e.n.hist.bytes.Load(); acct != int64(heldBytes(e.n)) {
		t.Errorf("accounted %d bytes, histories hold %d", acct, heldBytes(e.n))
	}
	st := e.n.Stats(t.Context())
	t.Logf("600 × 60 KB: peak %d bytes held, %d now, %d messages evicted", peak, st.HistoryBytes, st.HistoryEvicted)
	recover := func(i int) (*websocket.Conn, frame) {
		c := e.connect(t)
		send(t, c, map[string]any{"type": "subscribe", "channel": fmt.Sprintf("h-%d", i), "since": seqs[i] - 1, "epoch": e.n.Epoch()})
		return c, expect(t, c, "subscribed")
	}
	if c, ack := recover(1); ack["recovered"] != false {
		t.Errorf("since before an evicted message: %v, want recovered false (a gap)", ack)
	} else if g := expect(t, c, "gap"); g.str("reason") != "history" {
		t.Errorf("gap %v, want reason history", g)
	}
	if c, ack := recover(599); ack["recovered"] != true {
		t.Errorf("since before the newest message: %v, want recovered", ack)
	} else if m := expect(t, c, "message"); m.seq() != seqs[599] {
		t.Errorf("replayed %v, want seq %d", m, seqs[599])
	}
}
