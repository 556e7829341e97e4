package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/config"
	"edge/internal/clientip"
	"edge/internal/testutil"
)

// proxyConfig parses a proxy route configuration through config.Parse, so
// that tests get the defaults and validation edge applies. snippet is the
// YAML under "proxy:".
func proxyConfig(t testing.TB, snippet string) *config.Proxy {
	t.Helper()
	var b strings.Builder
	b.WriteString("listen: {http: \"127.0.0.1:0\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: /\n        proxy:\n")
	for _, line := range strings.Split(strings.TrimSpace(snippet), "\n") {
		b.WriteString("          " + line + "\n")
	}
	c, err := config.Parse("edge.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, b.String())
	}
	return c.Sites[0].Routes[0].Proxy
}

// logSink records log records so that tests can assert on them; they are
// printed when the test fails.
type logSink struct {
	mu      sync.Mutex
	records []slog.Record
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, r.Clone())
	return nil
}
func (s *logSink) WithAttrs(as []slog.Attr) slog.Handler { return &attrSink{s, as} }
func (s *logSink) WithGroup(string) slog.Handler         { return s }

type attrSink struct {
	*logSink
	attrs []slog.Attr
}

func (a *attrSink) Handle(ctx context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(a.attrs...)
	return a.logSink.Handle(ctx, r)
}
func (a *attrSink) WithAttrs(as []slog.Attr) slog.Handler {
	return &attrSink{a.logSink, append(append([]slog.Attr{}, a.attrs...), as...)}
}

// find returns the records at level with message msg.
func (s *logSink) find(level slog.Level, msg string) []slog.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []slog.Record
	for _, r := range s.records {
		if r.Level == level && r.Message == msg {
			out = append(out, r)
		}
	}
	return out
}

func (s *logSink) count(level slog.Level) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range s.records {
		if r.Level == level {
			n++
		}
	}
	return n
}

func attr(r slog.Record, key string) string {
	v := ""
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

func newLog(t *testing.T) (*slog.Logger, *logSink) {
	s := &logSink{}
	t.Cleanup(func() {
		if t.Failed() {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, r := range s.records {
				var b strings.Builder
				r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
				t.Logf("log: %s %s%s", r.Level, r.Message, b.String())
			}
		}
	})
	return slog.New(s), s
}

// newHandler builds a Handler for cfg and closes it with the test.
func newHandler(t testing.TB, cfg *config.Proxy, opts Options) *Handler {
	t.Helper()
	h, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.CloseTunnels(ctx)
	})
	return h
}

// front serves h on a loopback http.Server as edge would; configure may
// set timeouts. It returns the base URL.
func front(t testing.TB, h http.Handler, configure func(*http.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	if configure != nil {
		configure(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// trusting wraps h as the server's router does: the client identity is
// resolved once, trusting the given prefixes as proxies.
func trusting(h http.Handler, prefixes ...string) http.Handler {
	var ps []netip.Prefix
	for _, p := range prefixes {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	res := clientip.NewResolver(ps)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, res.Resolve(r))
	})
}

// deadAddr returns a loopback address where nothing listens: connecting is
// refused at once.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// named is a backend that answers with its name in X-Backend and counts
// requests.
type named struct {
	*httptest.Server
	name string
	mu   sync.Mutex
	hits int
}

func newNamed(t *testing.T, name string) *named {
	n := &named{name: name}
	n.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		n.hits++
		n.mu.Unlock()
		w.Header().Set("X-Backend", name)
		fmt.Fprint(w, name)
	}))
	t.Cleanup(n.Close)
	return n
}

func (n *named) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.hits
}

// get performs a GET with a bound and returns status, X-Backend and body.
func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer res.Body.Close()
	var b strings.Builder
	bufio.NewReader(res.Body).WriteTo(&b)
	return res.StatusCode, res.Header.Get("X-Backend"), b.String()
}

// waitFor is testutil.WaitFor, the tests' one polling helper.
var waitFor = testutil.WaitFor

// wsBackend is a gorilla/websocket echo server that records what it saw.
type wsBackend struct {
	*httptest.Server
	headers chan http.Header // request headers of each upgrade
	closes  chan int         // close codes received from the proxy side
}

func newWSBackend(t *testing.T, tlsServer bool) *wsBackend {
	b := &wsBackend{headers: make(chan http.Header, 100), closes: make(chan int, 100)}
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }, EnableCompression: true}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case b.headers <- r.Header.Clone():
		default:
		}
		c, err := up.Upgrade(w, r, http.Header{"X-Backend-Proto": {r.Proto}})
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				code := -1
				if ce, ok := err.(*websocket.CloseError); ok {
					code = ce.Code
				}
				select {
				case b.closes <- code:
				default:
				}
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	})
	if tlsServer {
		b.Server = httptest.NewTLSServer(h)
	} else {
		b.Server = httptest.NewServer(h)
	}
	t.Cleanup(b.Close)
	return b
}

// dialWS opens a WebSocket to base+path ("http://…" becomes "ws://…").
func dialWS(t *testing.T, d *websocket.Dialer, base, path string, hdr http.Header) (*websocket.Conn, *http.Response) {
	t.Helper()
	if d == nil {
		d = &websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	}
	u := "ws" + strings.TrimPrefix(base, "http") + path
	c, res, err := d.Dial(u, hdr)
	if err != nil {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		t.Fatalf("dial %s: %v (status %d)", u, err, status)
	}
	t.Cleanup(func() { c.Close() })
	return c, res
}

// echo sends msg and expects it back within a bound.
func echo(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo = %q, want %q", got, msg)
	}
}

// nodeWS is the npm "ws" echo server of testdata/node/server.js.
type nodeWS struct {
	addr  string
	lines chan string // stdout lines after "listening"
}

// startNodeWS runs testdata/node/server.js, installing its npm packages
// with npm ci first when node_modules is missing.
func startNodeWS(t *testing.T) *nodeWS {
	t.Helper()
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command (make test / .ci/run) installs Node.js and npm", bin)
		}
	}
	dir, _ := filepath.Abs(filepath.Join("testdata", "node"))
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "ws", "package.json")); err != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
		}
	}
	cmd := exec.Command("node", "server.js")
	cmd.Dir = dir
	stdin, _ := cmd.StdinPipe() // the server exits when this closes
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	n := &nodeWS{lines: make(chan string, 100)}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if port, ok := strings.CutPrefix(line, "listening "); ok {
				ready <- port
				continue
			}
			select {
			case n.lines <- line:
			default:
			}
		}
	}()
	select {
	case port := <-ready:
		n.addr = "127.0.0.1:" + port
	case <-time.After(10 * time.Second):
		t.Fatal("node ws server did not start within 10s")
	}
	return n
}

// firstMessageHeaders reads the node server's first message: the request
// headers it received.
func firstMessageHeaders(t *testing.T, c *websocket.Conn) map[string]any {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, msg, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Headers map[string]any `json:"headers"`
	}
	if err := json.Unmarshal(msg, &m); err != nil {
		t.Fatalf("%v: %s", err, msg)
	}
	return m.Headers
}

// expectGoingAway checks what CloseTunnels does to open tunnels: each
// client gets close 1001 "going away", the upstream gets a 1001 (a masked
// client frame) for each, and CloseTunnels returns (done is closed).
func expectGoingAway(t *testing.T, b *wsBackend, done <-chan struct{}, clients ...*websocket.Conn) {
	t.Helper()
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := c.ReadMessage()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "going away" {
			t.Errorf("client got %v, want close 1001 going away", err)
		}
		c.Close()
	}
	for range clients {
		select {
		case code := <-b.closes:
			if code != websocket.CloseGoingAway {
				t.Errorf("upstream got close %d, want 1001 (a masked client frame)", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("upstream got no close frame")
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("CloseTunnels did not return")
	}
}
