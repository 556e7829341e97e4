package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// appBackend is the application as a publish and subscribe proxy: it
// answers by the data's "do" member (publish) or the channel (subscribe),
// and records what it was sent.
type appBackend struct {
	srv      *httptest.Server
	mu       sync.Mutex
	bodies   []backendBody
	subAsked atomic.Int64
}

func newAppBackend(t *testing.T) *appBackend {
	a := &appBackend{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b backendBody
		raw, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(raw, &b); err != nil || r.Method != http.MethodPost ||
			r.Header.Get("Content-Type") != "application/json" || r.Header.Get("X-Request-Id") != b.RequestID {
			http.Error(w, "bad request from edge", http.StatusTeapot)
			return
		}
		a.mu.Lock()
		a.bodies = append(a.bodies, b)
		a.mu.Unlock()
		if r.URL.Path == "/subscribe" {
			a.subAsked.Add(1)
			switch {
			case strings.HasPrefix(b.Channel, "private:") && b.Channel != "private:"+b.Sub:
				http.Error(w, "not your room\nsecond line ignored", http.StatusForbidden)
			case b.Channel == "private:down":
				http.Error(w, "oops", http.StatusBadGateway)
			}
			return
		}
		var d struct {
			Do    string `json:"do"`
			Delay int    `json:"delay"`
			N     int    `json:"n"`
		}
		json.Unmarshal(b.Data, &d)
		time.Sleep(time.Duration(d.Delay) * time.Millisecond)
		switch d.Do {
		case "refuse":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			w.Write([]byte(`{"reason":"message contains a link"}`))
		case "replace":
			fmt.Fprintf(w, `{"data":{"text":"&lt;b&gt;clean","by":%q}}`, b.Sub)
		case "command":
			w.Write([]byte(`{"broadcast":false}`))
		case "fail":
			http.Error(w, "database down", http.StatusInternalServerError)
		case "junk":
			w.Write([]byte("<html>not json</html>"))
		case "huge":
			fmt.Fprintf(w, `{"data":%q}`, strings.Repeat("x", 300<<10))
		case "slow":
			time.Sleep(3 * time.Second)
		}
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *appBackend) last() backendBody {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.bodies[len(a.bodies)-1]
}

// TestPublishProxy: the application lets a publish through, replaces its
// data, keeps it from the channel, or refuses it with its reason; a
// failing, junk-answering or slow application refuses it as unavailable,
// and every subscriber sees exactly what the application allowed.
func TestPublishProxy(t *testing.T) {
	app := newAppBackend(t)
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil))
	e := newEnv(t, NodeOptions{Log: log}, "")
	secret := []byte("0123456789abcdef0123456789abcdef")
	u := e.route(t, "/app/", fmt.Sprintf(`{ allow_publish: true, publish_rate: 1000,
		publish_proxy: { url: %q, timeout: 500ms }, auth: { mode: jwt, secret_file: %q } }`,
		app.srv.URL+"/publish", writeFile(t, "s", secret)), nil)
	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "publish": true, "role": "editor"})
	pub := dial(t, u+"?channel=chat&token="+tok, nil)
	expect(t, pub, "welcome")
	expect(t, pub, "subscribed")
	watcher := e.connect(t, "chat")

	publish := func(id int, data string) frame {
		send(t, pub, map[string]any{"type": "publish", "channel": "chat", "id": id, "data": json.RawMessage(data)})
		for {
			f := read(t, pub, 5*time.Second)
			if f.str("type") == "published" || f.str("type") == "error" {
				return f
			}
		}
	}
	if f := publish(1, `{"text":"hi"}`); f.str("type") != "published" {
		t.Fatalf("plain publish: %v", f)
	}
	b := app.last()
	if b.Channel != "chat" || b.Sub != "alice" || string(b.Data) != `{"text":"hi"}` || b.Client != "127.0.0.1" ||
		!strings.Contains(string(b.Claims), `"role":"editor"`) || b.Conn == "" || len(b.RequestID) != 16 {
		t.Errorf("the application was sent %+v", b)
	}
	if f := expect(t, watcher, "message"); fmt.Sprint(f["data"]) != "map[text:hi]" {
		t.Errorf("watcher got %v", f)
	}

	publish(2, `{"do":"replace","text":"<b>clean"}`)
	if f := expect(t, watcher, "message"); fmt.Sprint(f["data"]) != "map[by:alice text:&lt;b&gt;clean]" {
		t.Errorf("replacement: watcher got %v", f)
	}
	if f := publish(3, `{"do":"command"}`); f.str("type") != "published" {
		t.Errorf("broadcast:false: %v", f)
	}
	for _, tc := range []struct{ data, code, msg string }{
		{`{"do":"refuse"}`, errPublishRefused, "message contains a link"},
		{`{"do":"fail"}`, errUnavailable, "publish backend unavailable"},
		{`{"do":"junk"}`, errUnavailable, "publish backend answered invalid JSON"},
		{`{"do":"junk"}`, errUnavailable, "publish backend answered invalid JSON"},
		{`{"do":"huge"}`, errUnavailable, "publish backend answer too large"},
		{`{"do":"slow"}`, errUnavailable, "publish backend timed out"},
	} {
		if f := publish(4, tc.data); f.str("type") != "error" || f.str("code") != tc.code || f.str("message") != tc.msg {
			t.Errorf("%s: %v, want error %s %q", tc.data, f, tc.code, tc.msg)
		}
	}
	// Nothing refused or kept back reached the channel: the next message
	// the watcher sees is this one.
	publish(5, `"after"`)
	if f := expect(t, watcher, "message"); f["data"] != "after" {
		t.Errorf("watcher got %v, want only what the application allowed", f)
	}
	logMu.Lock()
	if n := strings.Count(logs.String(), "not a JSON object"); n != 1 {
		t.Errorf("junk answers logged %d times, want once:\n%s", n, logs.String())
	}
	logMu.Unlock()

	// A dead application: unavailable, and the connection stays.
	app.srv.Close()
	if f := publish(6, `"x"`); f.str("code") != errUnavailable {
		t.Errorf("application down: %v", f)
	}
}

// TestPublishProxyKeepsOrder: a publisher's messages reach subscribers in
// the order it sent them, even when the application answers the first
// ones more slowly than the later ones.
func TestPublishProxyKeepsOrder(t *testing.T) {
	app := newAppBackend(t)
	e := newEnv(t, NodeOptions{}, fmt.Sprintf(`{ allow_publish: true, publish_rate: 1000, publish_proxy: { url: %q } }`, app.srv.URL+"/publish"))
	pub := e.connect(t)
	watcher := e.connect(t, "seq")
	const n = 20
	for i := range n {
		delay := rand.IntN(30)
		if i < 3 {
			delay = 80 // the first ones are the slowest
		}
		send(t, pub, map[string]any{"type": "publish", "channel": "seq", "data": map[string]int{"n": i, "delay": delay}})
	}
	for i := range n {
		f := expect(t, watcher, "message")
		if got := f["data"].(map[string]any)["n"]; got != float64(i) {
			t.Fatalf("message %d carried n=%v: order lost", i, got)
		}
	}
}

// TestSubscribeProxy: subscriptions to matching channels need the
// application's 2xx, at connect (403 before the upgrade) and by message
// (a forbidden error with its reason); others are not asked about; a
// failing application makes it unavailable; answers are cached.
func TestSubscribeProxy(t *testing.T) {
	app := newAppBackend(t)
	e := newEnv(t, NodeOptions{}, "")
	secret := []byte("0123456789abcdef0123456789abcdef")
	u := e.route(t, "/app/", fmt.Sprintf(`{ subscribe_proxy: { url: %q, channels: ["private:*"], cache: 1m },
		auth: { mode: jwt, secret_file: %q } }`, app.srv.URL+"/subscribe", writeFile(t, "s", secret)), nil)
	tok := func(sub string) string {
		return sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": sub})
	}
	if status, body := attempt(t, u+"?channel=private:bob&token="+tok("alice"), nil); status != 403 || body != "channel not allowed: private:bob: not your room" {
		t.Errorf("connect to another's room: %d %q", status, body)
	}
	if status, body := attempt(t, u+"?channel=private:down&token="+tok("down"), nil); status != 503 || body != "subscribe backend unavailable" {
		t.Errorf("failing application at connect: %d %q", status, body)
	}
	c := dial(t, u+"?channel=private:alice&channel=public&token="+tok("alice"), nil)
	expect(t, c, "welcome")
	expect(t, c, "subscribed")
	expect(t, c, "subscribed")
	asked := app.subAsked.Load()
	if asked != 3 {
		t.Errorf("the application was asked %d times, want 3 (public is not a private:* channel)", asked)
	}
	for i := range 2 {
		send(t, c, map[string]any{"type": "subscribe", "channel": "private:carol", "id": i})
		if f := expect(t, c, "error"); f.str("code") != errForbidden || f.str("message") != "not your room" {
			t.Errorf("subscribe to another's room: %v", f)
		}
	}
	if got := app.subAsked.Load(); got != asked+1 {
		t.Errorf("asked %d more times for the same refusal, want 1 (cached)", got-asked)
	}
	app.srv.Close()
	send(t, c, map[string]any{"type": "subscribe", "channel": "private:new"})
	if f := expect(t, c, "error"); f.str("code") != errUnavailable {
		t.Errorf("application down: %v", f)
	}
	// The cached allow still holds while the application is down.
	c2 := dial(t, u+"?channel=private:alice&token="+tok("alice"), nil)
	expect(t, c2, "welcome")
	expect(t, c2, "subscribed")
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
