package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
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
server: { client_body_timeout: 1s }
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
		// Pacing the body is the point: 1.5s in all, longer than the
		// timeout, but never 1s between two reads.
		time.Sleep(300 * time.Millisecond)
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

const plainYAML = `
listen: { http: "127.0.0.1:0" }
admin: ""
sites:
  - routes: [{ path: /, static: { root: www } }]
`

// smuggle is a request that net/http would split differently from a
// proxy in front of edge, followed by what would run as a second request.
type smuggle struct {
	name string
	raw  string
}

var smuggles = []smuggle{
	{"CL and TE", "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"TE and CL", "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n" +
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"CL and TE, bare LF", "POST /a HTTP/1.1\nHost: x\ncontent-length: 4\ntransfer-encoding: CHUNKED\n\n" +
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"TE folded", "POST /a HTTP/1.1\r\nHost: x\r\nX-Pad: 1\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n" +
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
}

func TestHostileContentLengthWithTransferEncoding(t *testing.T) {
	for _, tc := range smuggles {
		t.Run(tc.name, func(t *testing.T) {
			var got seen
			m := NewMetrics(nil)
			addr := edgeUnder(t, plainYAML, got.backend, nil, Options{Metrics: m})
			raw, closed := rawExchange(t, addr, tc.raw, 5*time.Second)
			assertRefused(t, raw, closed, &got, nil)
			if n := value(m.refused.WithLabelValues(RefusedFraming)); n != 1 {
				t.Errorf("edge_http_refused_total{reason=framing} = %v, want 1", n)
			}
			mustGet200(t, addr, "/")
		})
	}
}

// assertRefused checks that the client got one 400 (after the responses
// to clean requests before it), that the connection closed, and that the
// handler saw only the clean requests.
func assertRefused(t *testing.T, raw string, closed bool, got *seen, before []string) {
	t.Helper()
	st := statusLines(raw)
	if len(st) != len(before)+1 || !strings.Contains(st[len(st)-1], " 400 ") {
		t.Errorf("status lines %q, want %d× 200 then one 400", st, len(before))
	}
	if !strings.Contains(raw, "Connection: close") {
		t.Errorf("the 400 does not say Connection: close: %q", raw)
	}
	if !closed {
		t.Error("connection left open after ambiguous framing")
	}
	if r := got.list(); strings.Join(r, "|") != strings.Join(before, "|") {
		t.Errorf("handler saw %q, want %q (the smuggled request never)", r, before)
	}
}

func TestHostileHTTP10TransferEncoding(t *testing.T) {
	var got seen
	addr := edgeUnder(t, plainYAML, got.backend, nil, Options{})
	// net/http ignores Transfer-Encoding on HTTP/1.0 and reads the body
	// as the next request on the kept-alive connection.
	raw, closed := rawExchange(t, addr, "POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 5*time.Second)
	assertRefused(t, raw, closed, &got, nil)
	mustGet200(t, addr, "/")
}

// TestHostilePipelinedThenSmuggled: clean requests before the ambiguous
// one on the same connection are served; the ambiguous one and what
// follows are not.
func TestHostilePipelinedThenSmuggled(t *testing.T) {
	var got seen
	addr := edgeUnder(t, plainYAML, got.backend, nil, Options{})
	raw, closed := rawExchange(t, addr, "GET /one HTTP/1.1\r\nHost: x\r\n\r\n"+
		"POST /two HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: y\r\n\r\n"+
		smuggles[0].raw, 5*time.Second)
	assertRefused(t, raw, closed, &got, []string{"GET /one ", "POST /two abc"})
}

// TestHostileSplitWrites: clean pipelined requests written a few bytes at
// a time (headers and chunk lines split across reads) are all served on
// one connection.
func TestHostileSplitWrites(t *testing.T) {
	var got seen
	addr := edgeUnder(t, plainYAML, got.backend, nil, Options{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetNoDelay(true)
	req := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" +
		"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n" +
		"GET /c HTTP/1.0\r\nHost: x\r\n\r\n"
	go func() {
		for i := 0; i < len(req); i += 7 {
			c.Write([]byte(req[i:min(i+7, len(req))]))
			time.Sleep(time.Millisecond) // separate reads on the server are the point
		}
	}()
	raw, closed := readUntilClose(c, 5*time.Second)
	if st := statusLines(raw); len(st) != 3 || strings.Contains(strings.Join(st, ""), "400") {
		t.Errorf("status lines %q, want three 200", st)
	}
	if !closed {
		t.Error("HTTP/1.0 request did not close the connection")
	}
	if r := got.list(); strings.Join(r, "|") != "POST /a abc|POST /b de|GET /c " {
		t.Errorf("handler saw %q", r)
	}
}

// TestHostileUpgradeNotHijacked: after a request carrying Upgrade that the
// handler did not take over, framing is not followed; the next request is
// served and the connection then closed.
func TestHostileUpgradeNotHijacked(t *testing.T) {
	var got seen
	addr := edgeUnder(t, plainYAML, got.backend, nil, Options{})
	raw, closed := rawExchange(t, addr, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"+
		"GET /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n", 5*time.Second)
	if st := statusLines(raw); len(st) != 2 || !strings.Contains(st[1], " 200 ") {
		t.Errorf("status lines %q, want two 200s", st)
	}
	if !closed {
		t.Error("connection open after a request that followed an upgrade")
	}
	if r := got.list(); strings.Join(r, "|") != "GET /ws |GET /two " {
		t.Errorf("handler saw %q", r)
	}
}

// selfSigned returns a server config for 127.0.0.1 and a client config
// that trusts it.
func selfSigned(t *testing.T) (server, client *cryptotls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "edge test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"x"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &cryptotls.Config{
		Certificates: []cryptotls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		NextProtos:   []string{"h2", "http/1.1"},
	}
	return server, &cryptotls.Config{RootCAs: pool, ServerName: "x"}
}

func TestHostileSmugglingOverTLS(t *testing.T) {
	var got seen
	sconf, cconf := selfSigned(t)
	var sawTLS []bool
	build := func(site *config.Site, route *config.Route) (http.Handler, error) {
		h, _ := got.backend(site, route)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			got.mu.Lock()
			sawTLS = append(sawTLS, r.TLS != nil)
			got.mu.Unlock()
			h.ServeHTTP(w, r)
		}), nil
	}
	addr := edgeListener(t, plainYAML, build, nil, Options{ReadHeaderTimeout: 5 * time.Second}, sconf)
	for _, tc := range []smuggle{smuggles[0], {"HTTP/1.0 TE", "POST /a HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"}} {
		t.Run(tc.name, func(t *testing.T) {
			cc := cconf.Clone()
			cc.NextProtos = []string{"http/1.1"}
			c, err := cryptotls.Dial("tcp", addr, cc)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, tc.raw)
			raw, closed := readUntilClose(c, 5*time.Second)
			assertRefused(t, raw, closed, &got, nil)
		})
	}
	// Normal clients over TLS right after: HTTP/1.1 and HTTP/2, both
	// with r.TLS set.
	for _, h2 := range []bool{false, true} {
		tr := &http.Transport{TLSClientConfig: cconf.Clone(), ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *cryptotls.Conn) http.RoundTripper{}
		}
		resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/after")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
		if resp.StatusCode != 200 || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
			t.Errorf("h2=%v: status %d proto %s, want 200", h2, resp.StatusCode, resp.Proto)
		}
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	if len(sawTLS) != 2 || !sawTLS[0] || !sawTLS[1] {
		t.Errorf("handler saw r.TLS set %v, want [true true]", sawTLS)
	}
}

// counting is a route handler that counts its calls and, on /slow, waits
// for the request's end as a handler waiting on an upstream would.
type counting struct {
	calls  atomic.Int64
	mu     sync.Mutex
	byConn map[string]int // remote address -> requests
}

func (c *counting) build(*config.Site, *config.Route) (http.Handler, error) {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.calls.Add(1)
		c.mu.Lock()
		if c.byConn == nil {
			c.byConn = map[string]int{}
		}
		c.byConn[r.RemoteAddr]++
		c.mu.Unlock()
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(w, "ok")
	}), nil
}

func h2Client(cconf *cryptotls.Config, dials *atomic.Int64) *http.Client {
	tr := &http.Transport{TLSClientConfig: cconf.Clone(), ForceAttemptHTTP2: true}
	tr.DialContext = func(ctx context.Context, n, a string) (net.Conn, error) {
		if dials != nil {
			dials.Add(1)
		}
		return (&net.Dialer{}).DialContext(ctx, n, a)
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func TestHostileRapidReset(t *testing.T) {
	var h counting
	sconf, cconf := selfSigned(t)
	m := NewMetrics(nil)
	addr := edgeListener(t, plainYAML, h.build, nil, Options{ReadHeaderTimeout: 5 * time.Second, Metrics: m}, sconf)

	cc := cconf.Clone()
	cc.NextProtos = []string{"h2"}
	c, err := cryptotls.Dial("tcp", addr, cc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN %q, want h2", p)
	}
	// Read (and drop) what the server sends until it closes.
	closed := make(chan error, 1)
	go func() {
		fr := http2.NewFramer(io.Discard, c)
		for {
			if _, err := fr.ReadFrame(); err != nil {
				closed <- err
				return
			}
		}
	}()
	bw := bufio.NewWriterSize(c, 64<<10)
	io.WriteString(bw, http2.ClientPreface)
	fr := http2.NewFramer(bw, nil)
	fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "x"}, {":path", "/slow"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}

	// A normal client on another connection, during the attack.
	normal := make(chan error, 1)
	const pairs = 20000
	sent := 0
	for sent < pairs {
		id := uint32(2*sent + 1)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})
		fr.WriteRSTStream(id, http2.ErrCodeCancel)
		sent++
		if sent%50 == 0 {
			if err := bw.Flush(); err != nil {
				break // the server closed the connection
			}
		}
		if sent == 500 {
			go func() {
				cl := h2Client(cconf, nil)
				defer cl.CloseIdleConnections()
				resp, err := cl.Get("https://" + addr + "/")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
						err = fmt.Errorf("status %d over %s", resp.StatusCode, resp.Proto)
					}
				}
				normal <- err
			}()
		}
	}
	bw.Flush()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatalf("connection still open after %d HEADERS+RST_STREAM pairs", sent)
	}
	if n := value(m.refused.WithLabelValues(RefusedResetBudget)); n != 1 {
		t.Errorf("edge_http_refused_total{reason=reset_budget} = %v, want 1", n)
	}
	t.Logf("%d pairs written before the close, handler ran %d times", sent, h.calls.Load())
	if n := h.calls.Load(); n >= 2000 {
		t.Errorf("handler ran %d times for %d reset streams, want far fewer (budget %d/s)", n, sent, ResetBudget)
	}
	if err := <-normal; err != nil {
		t.Errorf("normal client during the attack: %v", err)
	}
	mustGet200TLS(t, cconf, addr)
}

func mustGet200TLS(t *testing.T, cconf *cryptotls.Config, addr string) {
	t.Helper()
	cl := h2Client(cconf, nil)
	defer cl.CloseIdleConnections() // Shutdown would wait for it
	resp, err := cl.Get("https://" + addr + "/")
	if err != nil {
		t.Fatalf("normal client after the attack: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("normal client after the attack: %d", resp.StatusCode)
	}
}

// TestHostileBrowserCancelsAreFine: a few cancelled requests on a
// connection (a page navigating away) do not close it.
func TestHostileBrowserCancelsAreFine(t *testing.T) {
	var h counting
	sconf, cconf := selfSigned(t)
	addr := edgeListener(t, plainYAML, h.build, nil, Options{}, sconf)
	var dials atomic.Int64
	cl := h2Client(cconf, &dials)
	defer cl.CloseIdleConnections()
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, "GET", "https://"+addr+"/slow", nil)
		if resp, err := cl.Do(req); err == nil {
			resp.Body.Close()
		}
		cancel()
	}
	// Then many ordinary requests, some at once, HEAD included: none of
	// them counts as a reset.
	var wg sync.WaitGroup
	for g := 0; g < 10; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 30; i++ {
				method := []string{"GET", "HEAD"}[i%2]
				req, _ := http.NewRequest(method, "https://"+addr+"/", nil)
				resp, err := cl.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	if n := dials.Load(); n != 1 {
		t.Errorf("client dialled %d times, want 1 (the connection kept)", n)
	}
}

func TestHostileMaxRequestsPerConnection(t *testing.T) {
	t.Run("HTTP/1.1", func(t *testing.T) {
		var h counting
		addr := edgeUnder(t, plainYAML, h.build, nil, Options{MaxRequestsPerConn: 3})
		get := "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
		raw, closed := rawExchange(t, addr, strings.Repeat(get, 5), 5*time.Second)
		if st := statusLines(raw); len(st) != 3 {
			t.Errorf("status lines %q, want 3 responses", st)
		}
		if strings.Count(raw, "Connection: close") != 1 {
			t.Errorf("want Connection: close on the third response only: %q", raw)
		}
		if !closed {
			t.Error("connection open after the third request")
		}
		if n := h.calls.Load(); n != 3 {
			t.Errorf("handler ran %d times, want 3", n)
		}
		mustGet200(t, addr, "/")
	})
	t.Run("HTTP/2", func(t *testing.T) {
		var h counting
		sconf, cconf := selfSigned(t)
		addr := edgeListener(t, plainYAML, h.build, nil, Options{MaxRequestsPerConn: 3}, sconf)
		var dials atomic.Int64
		cl := h2Client(cconf, &dials)
		defer cl.CloseIdleConnections()
		for i := 0; i < 9; i++ {
			resp, err := cl.Get("https://" + addr + "/")
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				t.Fatalf("request %d: %d over %s", i, resp.StatusCode, resp.Proto)
			}
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		for conn, n := range h.byConn {
			if n > 3 {
				t.Errorf("connection %s carried %d requests, want at most 3", conn, n)
			}
		}
		if n := dials.Load(); n < 3 {
			t.Errorf("client dialled %d times for 9 requests, want at least 3", n)
		}
	})
}
