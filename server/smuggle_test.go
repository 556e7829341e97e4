package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"edge/config"
)

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
			addr := edgeUnder(t, plainYAML, got.backend, nil, Options{})
			raw, closed := rawExchange(t, addr, tc.raw, 5*time.Second)
			assertRefused(t, raw, closed, &got, nil)
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

var _ = http2.ErrCodeEnhanceYourCalm

// TestPlainHTTPToTLSListener: a plain HTTP request to the HTTPS listener
// gets net/http's readable 400, as before the listener did handshakes.
func TestPlainHTTPToTLSListener(t *testing.T) {
	var got seen
	sconf, _ := selfSigned(t)
	addr := edgeListener(t, plainYAML, got.backend, nil, Options{ReadHeaderTimeout: 5 * time.Second}, sconf)
	raw, closed := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5*time.Second)
	if !strings.HasPrefix(raw, "HTTP/1.0 400 Bad Request") || !closed {
		t.Errorf("got %q (closed %v), want a 400 and the connection closed", raw, closed)
	}
}
