package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/config"
	"edge/internal/testutil"
)

// parseHub returns a hub route configuration with edge's real defaults and
// validation, from the flow-style YAML of the hub block.
func parseHub(t testing.TB, hubYAML string) *config.Hub {
	t.Helper()
	if hubYAML == "" {
		hubYAML = "{}"
	}
	src := fmt.Sprintf("listen: { http: \"127.0.0.1:0\" }\nadmin: \"\"\nsites:\n  - routes:\n      - path: /socket/\n        hub: %s\n", hubYAML)
	c, err := config.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("hub config %s: %v", hubYAML, err)
	}
	return c.Sites[0].Routes[0].Hub
}

// env is a running Node behind an httptest server: the hub route at
// /socket/ and the admin API at /publish/ and /hub/.
type env struct {
	n    *Node
	srv  *httptest.Server
	ws   string // ws://…/socket/
	http string // http://…
	mux  *http.ServeMux
}

// newEnv starts a Node with opts and the hub configuration hubYAML, and
// waits until its broker subscription is up.
func newEnv(t testing.TB, opts NodeOptions, hubYAML string) *env {
	t.Helper()
	n, err := NewNode(opts)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{n: n, mux: http.NewServeMux()}
	e.mux.Handle("/socket/", n.Route("/socket/", parseHub(t, hubYAML), nil))
	admin := n.AdminHandler()
	e.mux.Handle("/publish/", admin)
	e.mux.Handle("/hub/", admin)
	e.srv = httptest.NewServer(e.mux)
	e.http = e.srv.URL
	e.ws = "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/socket/"
	runNode(t, n)
	t.Cleanup(e.srv.Close)
	waitFor(t, 10*time.Second, "node healthy", func() bool { return n.Healthy() == nil })
	return e
}

// runNode runs n until the test ends, then closes it.
func runNode(t testing.TB, n *Node) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		n.Run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		if err := n.Close(cctx); err != nil {
			t.Errorf("Close: %v", err)
		}
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after its context was cancelled")
		}
	})
}

// waitFor is testutil.WaitFor, the tests' one polling helper.
var waitFor = testutil.WaitFor

// dial opens a WebSocket; it fails the test unless the upgrade succeeds.
func dial(t testing.TB, url string, h http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.DefaultDialer.Dial(url, h)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", url, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// frame is a decoded server message.
type frame map[string]any

func (f frame) str(k string) string {
	s, _ := f[k].(string)
	return s
}

func (f frame) seq() uint64 {
	n, _ := f["seq"].(float64)
	return uint64(n)
}

// read returns the next JSON text message, failing after d.
func read(t testing.TB, c *websocket.Conn, d time.Duration) frame {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	typ, data, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage {
		t.Fatalf("read: message type %d, want text", typ)
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("read: %q is not JSON: %v", data, err)
	}
	return f
}

// expect reads messages until one of type typ (or a data message when typ
// is "message"), failing after d or if another kind arrives first.
func expect(t testing.TB, c *websocket.Conn, typ string) frame {
	t.Helper()
	f := read(t, c, 5*time.Second)
	got := f.str("type")
	if got == "" {
		got = "message"
	}
	if got != typ {
		t.Fatalf("got %v, want a %q message", f, typ)
	}
	return f
}

// connect dials the env's hub with channels and reads the welcome and the
// subscription acknowledgements.
func (e *env) connect(t testing.TB, channels ...string) *websocket.Conn {
	t.Helper()
	q := ""
	for i, ch := range channels {
		if i == 0 {
			q += "?"
		} else {
			q += "&"
		}
		q += "channel=" + ch
	}
	c := dial(t, e.ws+q, nil)
	expect(t, c, "welcome")
	for range channels {
		expect(t, c, "subscribed")
	}
	return c
}

// publish publishes through the node.
func (e *env) publish(t testing.TB, channel, payload string) uint64 {
	t.Helper()
	seq, err := e.n.Publish(context.Background(), channel, []byte(payload))
	if err != nil {
		t.Fatalf("Publish(%q): %v", channel, err)
	}
	return seq
}

// send writes a JSON message.
func send(t testing.TB, c *websocket.Conn, v any) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteJSON(v); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// expectClose reads until the connection closes and returns the close
// code (or -1 when it ended without a close frame).
func expectClose(t testing.TB, c *websocket.Conn, d time.Duration) (int, string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(d))
	for {
		_, _, err := c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if ok := asCloseError(err, &ce); ok {
			return ce.Code, ce.Text
		}
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			t.Fatalf("connection still open after %s", d)
		}
		return -1, err.Error()
	}
}

func asCloseError(err error, ce **websocket.CloseError) bool {
	e, ok := err.(*websocket.CloseError)
	if ok {
		*ce = e
	}
	return ok
}
