package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"edge/internal/wsframe"
)

// route mounts another hub route on the env and returns its ws:// URL.
func (e *env) route(t testing.TB, path, hubYAML string, hosts []string) string {
	t.Helper()
	e.mux.Handle(path, e.n.Route(path, parseHub(t, hubYAML), hosts))
	return "ws" + strings.TrimPrefix(e.srv.URL, "http") + path
}

// attempt tries an upgrade and returns the status and the response body's
// first line. A 101 is 101 (and the connection is closed again).
func attempt(t *testing.T, url string, h http.Header) (int, string) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial(url, h)
	if err == nil {
		c.Close()
		return resp.StatusCode, ""
	}
	if resp == nil {
		t.Fatalf("dial %s: %v (no response)", url, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusSwitchingProtocols {
		t.Fatalf("dial %s failed after a 101: %v", url, err)
	}
	if lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n"); len(lines) != 1 || lines[0] == "" {
		t.Errorf("refusal body %q: want exactly one line with a reason", body)
	}
	return resp.StatusCode, strings.TrimSpace(string(body))
}

type authCase struct {
	name   string
	url    string
	header http.Header
	status int
	reason string // substring of the body; "" for 101
}

func runAuthCases(t *testing.T, cases []authCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := attempt(t, tc.url, tc.header)
			if status != tc.status {
				t.Fatalf("status %d (%q), want %d", status, body, tc.status)
			}
			if !strings.Contains(body, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", body, tc.reason)
			}
		})
	}
}

func origin(o string) http.Header { return http.Header{"Origin": {o}} }

func TestOriginCheck(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	site := e.route(t, "/site/", "", []string{"dash.example.com", "*.apps.example.com", "Bücher.example."})
	explicit := e.route(t, "/explicit/", `{ origins: ["https://dash.example.com", "https://*.example.org", "https://Bücher.example"] }`, []string{"dash.example.com"})
	anyOrigin := e.route(t, "/any/", `{ origins: ["*"] }`, nil)
	host := strings.TrimPrefix(e.srv.URL, "http://")
	runAuthCases(t, []authCase{
		{"no origin: not a browser page", site, nil, 101, ""},
		{"site host https other port", site, origin("https://dash.example.com:8443"), 101, ""},
		{"site host http", site, origin("http://dash.example.com"), 101, ""},
		{"site wildcard", site, origin("https://x.apps.example.com"), 101, ""},
		{"wildcard needs a label", site, origin("https://apps.example.com"), 403, "origin not allowed"},
		// Browsers serialise an Origin's host in punycode; the site's
		// hosts match as the router matches them (config.SiteIndex).
		{"site IDN host as browsers send it", site, origin("https://xn--bcher-kva.example"), 101, ""},
		{"foreign origin", site, origin("https://evil.example"), 403, "origin not allowed"},
		{"bad scheme", site, origin("ftp://dash.example.com"), 403, "origin not allowed"},
		{"null origin", site, origin("null"), 403, "origin not allowed"},
		{"default site: request host", e.ws, origin("http://" + host), 101, ""},
		{"default site: same host other port", e.ws, origin("https://127.0.0.1:1"), 101, ""},
		{"default site: other host", e.ws, origin("http://localhost"), 403, "origin not allowed"},
		{"explicit exact", explicit, origin("https://dash.example.com"), 101, ""},
		{"explicit default port written", explicit, origin("https://dash.example.com:443"), 101, ""},
		{"explicit other port", explicit, origin("https://dash.example.com:444"), 403, "origin not allowed"},
		{"explicit other scheme", explicit, origin("http://dash.example.com"), 403, "origin not allowed"},
		{"explicit wildcard", explicit, origin("https://a.b.example.org"), 101, ""},
		{"explicit IDN as browsers send it", explicit, origin("https://xn--bcher-kva.example"), 101, ""},
		{"any", anyOrigin, origin("https://evil.example"), 101, ""},
	})
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func pemPublic(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWTAuth(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	e := newEnv(t, NodeOptions{}, "")
	hs := e.route(t, "/hs/", fmt.Sprintf(`{ channels: ["orders", "room:*"], auth: { mode: jwt, secret_file: %q } }`,
		writeFile(t, "secret", append(secret, '\n'))), nil)
	rs := e.route(t, "/rs/", fmt.Sprintf(`{ auth: { mode: jwt, public_key_file: %q } }`,
		writeFile(t, "rsa.pem", pemPublic(t, &rsaKey.PublicKey))), nil)
	es := e.route(t, "/es/", fmt.Sprintf(`{ auth: { mode: jwt, public_key_file: %q, query_param: t, cookie: sess } }`,
		writeFile(t, "ec.pem", pemPublic(t, &ecKey.PublicKey))), nil)

	exp := time.Now().Add(time.Hour).Unix()
	good := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1", "exp": exp})
	roomsOnly := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1", "channels": []string{"room:*"}})
	expired := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "u1", "exp": time.Now().Add(-time.Hour).Unix()})
	wrongKey := sign(t, jwt.SigningMethodHS256, []byte("another secret, 32 bytes long..."), jwt.MapClaims{"sub": "u1"})
	none := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "u1"})
	rsTok := sign(t, jwt.SigningMethodRS256, rsaKey, jwt.MapClaims{"sub": "u2"})
	esTok := sign(t, jwt.SigningMethodES256, ecKey, jwt.MapClaims{"sub": "u3"})
	// Algorithm confusion: an HS256 token signed with the public key bytes.
	confused := sign(t, jwt.SigningMethodHS256, pemPublic(t, &rsaKey.PublicKey), jwt.MapClaims{"sub": "x"})

	runAuthCases(t, []authCase{
		{"missing token", hs, nil, 401, "missing token"},
		{"query token", hs + "?token=" + good, nil, 101, ""},
		{"cookie token", hs, http.Header{"Cookie": {"edge_token=" + good}}, 101, ""},
		{"authorization header", hs, http.Header{"Authorization": {"Bearer " + good}}, 101, ""},
		{"subprotocol token", hs, http.Header{"Sec-WebSocket-Protocol": {"edge.v1, bearer." + good}}, 101, ""},
		{"expired", hs + "?token=" + expired, nil, 401, "token expired"},
		{"wrong key", hs + "?token=" + wrongKey, nil, 401, "invalid token"},
		{"alg none", hs + "?token=" + none, nil, 401, "invalid token"},
		{"garbage", hs + "?token=abc.def.ghi", nil, 401, "invalid token"},
		{"route channel allowed", hs + "?token=" + good + "&channel=orders", nil, 101, ""},
		{"route channel refused", hs + "?token=" + good + "&channel=secret", nil, 403, "channel not allowed: secret"},
		{"token channels refuse", hs + "?token=" + roomsOnly + "&channel=orders", nil, 403, "channel not allowed: orders"},
		{"token channels allow", hs + "?token=" + roomsOnly + "&channel=room:1", nil, 101, ""},
		{"invalid channel name", hs + "?token=" + good + "&channel=a%20b", nil, 400, "invalid channel name"},
		{"RS256", rs + "?token=" + rsTok, nil, 101, ""},
		{"RS256 route refuses HS256 made with the public key", rs + "?token=" + confused, nil, 401, "invalid token"},
		{"RS256 route refuses ES256", rs + "?token=" + esTok, nil, 401, "invalid token"},
		{"ES256 custom query param", es + "?t=" + esTok, nil, 101, ""},
		{"ES256 custom cookie", es, http.Header{"Cookie": {"sess=" + esTok}}, 101, ""},
		{"ES256 default param ignored", es + "?token=" + esTok, nil, 401, "missing token"},
	})

	// The subprotocol carrying the token is never echoed; edge.v1 is.
	d := websocket.Dialer{Subprotocols: []string{"edge.v1", "bearer." + good}}
	c, resp, err := d.Dial(hs, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "edge.v1" {
		t.Errorf("selected subprotocol %q, want edge.v1", got)
	}
}

// TestTokenChannelsOnSubscribe: channels the token does not allow are
// refused by message too, with the connection kept.
func TestTokenChannelsOnSubscribe(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/hs/", fmt.Sprintf(`{ allow_publish: true, auth: { mode: jwt, secret_file: %q } }`, writeFile(t, "s", secret)), nil)
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"channels": []string{"room:*"}, "publish": []string{"room:pub"}})
	c := dial(t, u+"?token="+tok, nil)
	expect(t, c, "welcome")
	send(t, c, map[string]any{"type": "subscribe", "channel": "orders"})
	if f := expect(t, c, "error"); f.str("code") != errForbidden {
		t.Errorf("got %v, want forbidden", f)
	}
	send(t, c, map[string]any{"type": "publish", "channel": "room:other", "data": 1})
	if f := expect(t, c, "error"); f.str("code") != errPublishForbidden {
		t.Errorf("got %v, want publish_forbidden", f)
	}
	send(t, c, map[string]any{"type": "subscribe", "channel": "room:pub"})
	expect(t, c, "subscribed")
	send(t, c, map[string]any{"type": "publish", "channel": "room:pub", "data": 1})
	expect(t, c, "message")
}

func TestTokenExpiryClosesConnection(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/hs/", fmt.Sprintf(`{ ping_interval: 100ms, idle_timeout: 5s, auth: { mode: jwt, secret_file: %q } }`, writeFile(t, "s", secret)), nil)
	// The library allows 5s of leeway at connect; the hub closes at exp.
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": time.Now().Add(time.Second).Unix()})
	c := dial(t, u+"?token="+tok, nil)
	if code, reason := expectClose(t, c, 5*time.Second); code != wsframe.ClosePolicy || reason != "token expired" {
		t.Errorf("close %d %q, want 1008 token expired", code, reason)
	}
}

func TestRequestAuth(t *testing.T) {
	var mu sync.Mutex
	var seen http.Header
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
		switch r.Header.Get("Cookie") {
		case "session=ok":
			w.Header().Set("X-Edge-Channels", "orders, room:*")
			w.Header().Set("X-Edge-Sub", "alice")
			w.WriteHeader(http.StatusNoContent)
		case "session=all":
			w.WriteHeader(http.StatusOK)
		case "session=expired":
			w.WriteHeader(http.StatusUnauthorized)
		case "session=login":
			http.Redirect(w, r, "/login", http.StatusFound)
		case "session=broken":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	defer backend.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()

	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/req/", fmt.Sprintf(`{ auth: { mode: request, url: %q } }`, backend.URL+"/auth"), nil)
	down := e.route(t, "/down/", fmt.Sprintf(`{ auth: { mode: request, url: %q, timeout: 1s } }`, deadURL+"/auth"), nil)
	cookie := func(v string) http.Header { return http.Header{"Cookie": {"session=" + v}} }
	runAuthCases(t, []authCase{
		{"allowed", u, cookie("ok"), 101, ""},
		{"allowed channel", u + "?channel=room:7", cookie("ok"), 101, ""},
		{"channel outside the header", u + "?channel=secret", cookie("ok"), 403, "channel not allowed: secret"},
		{"no header: any channel", u + "?channel=secret", cookie("all"), 101, ""},
		{"backend 401", u, cookie("expired"), 401, "unauthorized"},
		{"backend 403", u, cookie("nobody"), 403, "forbidden"},
		{"backend redirect to login", u, cookie("login"), 403, "forbidden"},
		{"backend 500", u, cookie("broken"), 503, "auth backend unavailable"},
		{"backend down", down, cookie("ok"), 503, "auth backend unavailable"},
	})

	// What the backend sees: the cookie, a token from the query as a
	// bearer, and the original URI.
	attempt(t, u+"?token=tok123&channel=orders", cookie("ok"))
	mu.Lock()
	defer mu.Unlock()
	if seen.Get("Cookie") != "session=ok" || seen.Get("Authorization") != "Bearer tok123" ||
		seen.Get("X-Original-Uri") != "/req/?token=tok123&channel=orders" {
		t.Errorf("backend saw %v", seen)
	}
}

func TestConnectionLimits(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/lim/", `{ max_connections_per_ip: 2 }`, nil)
	c1 := dial(t, u, nil)
	dial(t, u, nil)
	runAuthCases(t, []authCase{{"third from one address", u, nil, 429, "too many connections"}})
	c1.Close()
	waitFor(t, 5*time.Second, "slot released", func() bool {
		status, _ := attempt(t, u, nil)
		return status == 101
	})

	tooMany := u + "?channel=a"
	for i := range 64 {
		tooMany += fmt.Sprintf("&channel=c%d", i)
	}
	runAuthCases(t, []authCase{{"more channels than max_subscriptions", tooMany, nil, 400, "too many channels"}})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.n.Close(ctx)
	runAuthCases(t, []authCase{{"node closed", u, nil, 503, "shutting down"}})
}

// TestRequestAuthReloadsKeepConnectionsBounded checks that reloads do not
// leave connections to the auth backend behind (each reload used to build
// an http.Transport of its own, whose idle connection stayed open), and
// that closing the node closes them.
func TestRequestAuthReloadsKeepConnectionsBounded(t *testing.T) {
	var open atomic.Int64
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	backend.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	backend.Start()
	defer backend.Close()

	e := newEnv(t, NodeOptions{}, "")
	hubYAML := fmt.Sprintf(`{ auth: { mode: request, url: %q } }`, backend.URL+"/auth")
	u := e.route(t, "/req/", hubYAML, nil)
	const reloads = 20
	for i := range reloads {
		e.n.Route("/req/", parseHub(t, hubYAML), nil)
		e.n.Retire([]string{"/socket/", "/req/"})
		if status, body := attempt(t, u, nil); status != http.StatusSwitchingProtocols {
			t.Fatalf("reload %d: status %d %q", i, status, body)
		}
	}
	if n := open.Load(); n > 2 {
		t.Errorf("after %d reloads the auth backend has %d open connections, want at most 2", reloads, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.n.Close(ctx)
	waitFor(t, 5*time.Second, "auth connections closed with the node", func() bool { return open.Load() == 0 })
}

// TestRefusalIsTheErrorPage checks that a refused upgrade is edge's one
// error page (internal/httperr): never cached, never sniffed, plain text,
// with the reason as its one line.
func TestRefusalIsTheErrorPage(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ origins: ["https://good.example"] }`)
	for _, tc := range []struct {
		name   string
		header http.Header
		status int
		reason string
	}{
		{"not a WebSocket", nil, http.StatusUpgradeRequired, "this is a WebSocket endpoint"},
		{"origin", http.Header{"Origin": {"https://evil.example"}, "Connection": {"Upgrade"}, "Upgrade": {"websocket"},
			"Sec-Websocket-Version": {"13"}, "Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}, http.StatusForbidden, "origin not allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.http+"/socket/", nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			h := resp.Header
			if resp.StatusCode != tc.status || h.Get("Cache-Control") != "no-store" || h.Get("X-Content-Type-Options") != "nosniff" ||
				h.Get("Content-Type") != "text/plain; charset=utf-8" || !strings.HasPrefix(string(body), tc.reason) {
				t.Errorf("refusal: %d %v %q, want %d with the error page's headers and %q", resp.StatusCode, h, body, tc.status, tc.reason)
			}
		})
	}
}

// TestUserChannels: "user:{sub}" is one channel per user, open to that
// user's token only; a token without sub, or with a sub that would widen
// the pattern, gets none.
func TestUserChannels(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/u/", fmt.Sprintf(`{ channels: ["user:{sub}", "user:{sub}:*", "news"], allow_publish: true, auth: { mode: jwt, secret_file: %q } }`,
		writeFile(t, "s", secret)), nil)
	as := func(claims jwt.MapClaims) *websocket.Conn {
		c := dial(t, u+"?token="+sign(t, jwt.SigningMethodHS256, secret, claims), nil)
		expect(t, c, "welcome")
		return c
	}
	subscribe := func(c *websocket.Conn, ch string) string {
		send(t, c, map[string]any{"type": "subscribe", "channel": ch})
		f := read(t, c, 5*time.Second)
		if f.str("type") == "error" {
			return f.str("code")
		}
		return f.str("type")
	}
	alice := as(jwt.MapClaims{"sub": "alice"})
	for ch, want := range map[string]string{
		"user:alice": "subscribed", "user:alice:inbox": "subscribed", "news": "subscribed",
		"user:bob": errForbidden, "user:alicex": errForbidden, "user:": errForbidden,
	} {
		if got := subscribe(alice, ch); got != want {
			t.Errorf("alice subscribing to %q: %s, want %s", ch, got, want)
		}
	}
	nosub := as(jwt.MapClaims{"channels": []string{"*"}})
	if got := subscribe(nosub, "user:alice"); got != errForbidden {
		t.Errorf("a token without sub: %s, want forbidden", got)
	}
	star := as(jwt.MapClaims{"sub": "*"})
	if got := subscribe(star, "user:alice"); got != errForbidden {
		t.Errorf(`sub "*": %s, want forbidden (it must not widen user:{sub})`, got)
	}
}
