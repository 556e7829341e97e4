package server

import (
	"bufio"
	"bytes"
	"context"
	cryptotls "crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"edge/config"
	"edge/internal/httperr"
)

// seen records what the handler behind edge received.
type seen struct {
	mu   sync.Mutex
	reqs []string // "METHOD PATH BODY"
}

func (s *seen) add(r *http.Request, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, r.Method+" "+r.URL.Path+" "+body)
}

func (s *seen) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reqs...)
}

// backend is the handler of every route in the hostile tests: it reads the
// body (answering a failed read as the proxy does: 408, 413, 400, or
// abandoning the request) and records what it got.
func (s *seen) backend(site *config.Site, route *config.Route) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/abandon" {
			s.add(r, "")
			httperr.Abandon(w, httperr.StatusClientClosed)
		}
		b, err := io.ReadAll(r.Body)
		s.add(r, string(b))
		if err != nil {
			httperr.Error(w, (&httperr.BodyError{Err: err}).Status())
			return
		}
		io.WriteString(w, "ok")
	}), nil
}

// edgeUnder runs yaml's sites through a Router on a Server listener on
// loopback and returns the listener's address.
func edgeUnder(t *testing.T, yaml string, build Builder, m *Metrics, opts Options) string {
	t.Helper()
	return edgeListener(t, yaml, build, m, opts, nil)
}

// edgeListener is edgeUnder with an HTTPS listener when conf is set.
func edgeListener(t *testing.T, yaml string, build Builder, m *Metrics, opts Options, conf *cryptotls.Config) string {
	t.Helper()
	rt, err := NewRouter(loadConfig(t, yaml), build, m)
	if err != nil {
		t.Fatal(err)
	}
	s := New(quietLog())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: rt, TLS: conf}}, opts, time.Second); err != nil {
		t.Fatal(err)
	}
	return s.Addr("http").String()
}

// rawExchange writes req on a new connection and reads until the server
// closes it or wait passes. It returns what was read and whether the
// server closed the connection.
func rawExchange(t *testing.T, addr, req string, wait time.Duration) (string, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	return readUntilClose(c, wait)
}

func readUntilClose(c net.Conn, wait time.Duration) (string, bool) {
	c.SetReadDeadline(time.Now().Add(wait))
	var got strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			var ne net.Error
			timedOut := errorsAs(err, &ne) && ne.Timeout()
			return got.String(), !timedOut
		}
	}
}

func errorsAs(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// statusLines returns the status lines of the responses in raw, read as
// a client would (bodies skipped by their framing).
func statusLines(raw string) []string {
	var out []string
	br := bufio.NewReader(strings.NewReader(raw))
	for {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		out = append(out, fmt.Sprintf("HTTP/%d.%d %s", resp.ProtoMajor, resp.ProtoMinor, resp.Status))
	}
}

// mustGet200 is the normal client that comes right after an attack.
func mustGet200(t *testing.T, addr, path string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("normal client after the attack: %v", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("normal client after the attack: status %d, want 200", resp.StatusCode)
	}
}

// waitLog polls the access log file until it holds n lines.
func waitLog(t *testing.T, path string, n int) []string {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(b) > 0 && len(lines) >= n {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log has %q, want %d lines", b, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHostileStalledBodyGets408(t *testing.T) {
	var got seen
	addr := edgeUnder(t, `
listen: { http: "127.0.0.1:0" }
admin: ""
server: { client_body_timeout: 300ms }
sites:
  - routes: [{ path: /, static: { root: www } }]
`, got.backend, nil, Options{})
	start := time.Now()
	// One byte of ten, then nothing.
	raw, closed := rawExchange(t, addr, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nA", 5*time.Second)
	took := time.Since(start)
	if st := statusLines(raw); len(st) != 1 || !strings.HasPrefix(st[0], "HTTP/1.1 408 ") {
		t.Fatalf("status lines %q, want one 408 (got %q)", st, raw)
	}
	if took > 300*time.Millisecond+2*time.Second {
		t.Errorf("408 after %v, want within the 300ms timeout plus slack", took)
	}
	if !closed {
		t.Error("connection left open after the stalled body")
	}
	if r := got.list(); len(r) != 1 || r[0] != "POST /upload A" {
		t.Errorf("handler saw %q, want one POST with the 1 byte sent", r)
	}
	mustGet200(t, addr, "/")
}

// TestHostileSlowBodyWithinTimeout: a body that keeps coming, each piece
// within the timeout, is read whole although it takes longer than the
// timeout in total.
func TestHostileSlowBodyWithinTimeout(t *testing.T) {
	var got seen
	addr := edgeUnder(t, `
listen: { http: "127.0.0.1:0" }
admin: ""
server: { client_body_timeout: 400ms }
sites:
  - routes: [{ path: /, static: { root: www } }]
`, got.backend, nil, Options{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\n")
	for _, b := range "hello" {
		time.Sleep(150 * time.Millisecond) // pacing the body is the point
		io.WriteString(c, string(b))
	}
	raw, _ := readUntilClose(c, 5*time.Second)
	if st := statusLines(raw); len(st) != 1 || !strings.HasPrefix(st[0], "HTTP/1.1 200 ") {
		t.Fatalf("status lines %q, want 200", st)
	}
	if r := got.list(); len(r) != 1 || r[0] != "POST /slow hello" {
		t.Errorf("handler saw %q", r)
	}
}

func accessLogYAML(dir, trusted, format string) string {
	return fmt.Sprintf(`
listen: { http: "127.0.0.1:0" }
admin: ""
server: { trusted_proxies: [%s] }
sites:
  - access_log: { file: %s, format: %s }
    routes: [{ path: /, static: { root: www } }]
`, trusted, filepath.Join(dir, "access.log"), format)
}

func TestHostileClientIdentityInAccessLog(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted string
		want    string
	}{
		// A load balancer on 127.0.0.1 that edge trusts: the log names
		// the client it forwarded for.
		{"trusted balancer", "127.0.0.1/32", "203.0.113.7"},
		// The same header from a peer edge does not trust is a lie.
		{"untrusted peer", "10.0.0.0/8", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var got seen
			addr := edgeUnder(t, accessLogYAML(dir, tc.trusted, "combined"), got.backend, NewMetrics(nil), Options{})
			raw, _ := rawExchange(t, addr, "GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.1, 203.0.113.7\r\nConnection: close\r\n\r\n", 5*time.Second)
			if st := statusLines(raw); len(st) != 1 || !strings.Contains(st[0], " 200 ") {
				t.Fatalf("status %q", st)
			}
			line := waitLog(t, filepath.Join(dir, "access.log"), 1)[0]
			if !strings.HasPrefix(line, tc.want+" ") {
				t.Errorf("access log line %q, want it to start with the client %s", line, tc.want)
			}
			mustGet200(t, addr, "/")
		})
	}
}

func TestHostileTokenRedactedInAccessLog(t *testing.T) {
	for _, format := range []string{"combined", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			var got seen
			addr := edgeUnder(t, accessLogYAML(dir, "", format), got.backend, NewMetrics(nil), Options{})
			target := "/socket/?channel=orders&token=eyJhbGciOi.secret.sig&access_token=s3cr3t&%74oken=sneaky"
			raw, _ := rawExchange(t, addr, "GET "+target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5*time.Second)
			if st := statusLines(raw); len(st) != 1 || !strings.Contains(st[0], " 200 ") {
				t.Fatalf("status %q", st)
			}
			// JSON escapes "&" as \u0026.
			line := strings.ReplaceAll(waitLog(t, filepath.Join(dir, "access.log"), 1)[0], `\u0026`, "&")
			for _, secret := range []string{"eyJhbGciOi", "s3cr3t", "sneaky"} {
				if strings.Contains(line, secret) {
					t.Errorf("access log line %q holds %q", line, secret)
				}
			}
			for _, want := range []string{"channel=orders", "&token=REDACTED", "access_token=REDACTED"} {
				if !strings.Contains(line, want) {
					t.Errorf("access log line %q lacks %q", line, want)
				}
			}
			// The handler still gets the real token.
			if r := got.list(); len(r) != 1 || r[0] != "GET /socket/ " {
				t.Errorf("handler saw %q", r)
			}
		})
	}
}

// TestHostileAbandonLogged499: a handler that gives up on a request with
// httperr.Abandon writes nothing to the wire (the connection is reset),
// and the access log and metrics say 499.
func TestHostileAbandonLogged499(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	var got seen
	addr := edgeUnder(t, accessLogYAML(dir, "", "combined"), got.backend, NewMetrics(reg), Options{})
	raw, closed := rawExchange(t, addr, "GET /abandon HTTP/1.1\r\nHost: x\r\n\r\n", 5*time.Second)
	if raw != "" || !closed {
		t.Fatalf("client got %q (closed %v), want nothing and the connection closed", raw, closed)
	}
	line := waitLog(t, filepath.Join(dir, "access.log"), 1)[0]
	if !strings.Contains(line, `"GET /abandon HTTP/1.1" 499 0`) {
		t.Errorf("access log line %q, want status 499 and 0 bytes", line)
	}
	if n := counterValue(t, reg, "edge_http_requests_total", "499"); n != 1 {
		t.Errorf("edge_http_requests_total{code=499} = %v, want 1", n)
	}
	mustGet200(t, addr, "/")
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, code string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestHostileStalledBodyGets408HTTP2: the same stall on an HTTP/2 stream
// gets a 408 on that stream.
func TestHostileStalledBodyGets408HTTP2(t *testing.T) {
	var got seen
	sconf, cconf := selfSigned(t)
	addr := edgeListener(t, `
listen: { http: "127.0.0.1:0" }
admin: ""
server: { client_body_timeout: 300ms }
sites:
  - routes: [{ path: /, static: { root: www } }]
`, got.backend, nil, Options{}, sconf)
	cc := cconf.Clone()
	cc.NextProtos = []string{"h2"}
	c, err := cryptotls.Dial("tcp", addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/upload"}, {"content-length", "10"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	start := time.Now()
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true})
	fr.WriteData(1, false, []byte("A"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	dec := hpack.NewDecoder(4096, nil)
	status := ""
	for status == "" {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no response on the stalled stream: %v", err)
		}
		if h, ok := f.(*http2.HeadersFrame); ok && h.StreamID == 1 {
			fields, err := dec.DecodeFull(h.HeaderBlockFragment())
			if err != nil {
				t.Fatal(err)
			}
			for _, hf := range fields {
				if hf.Name == ":status" {
					status = hf.Value
				}
			}
		}
	}
	if status != "408" {
		t.Errorf("status %s, want 408", status)
	}
	took := time.Since(start)
	if took > 300*time.Millisecond+2*time.Second {
		t.Errorf("408 after %v", took)
	}
	t.Logf("408 after %v", took)
	if r := got.list(); len(r) != 1 || r[0] != "POST /upload A" {
		t.Errorf("handler saw %q", r)
	}
	mustGet200TLS(t, cconf, addr)
}
