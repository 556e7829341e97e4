package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// http3YAML serves a.test over HTTPS and HTTP/3 with a local-CA
// certificate: static files and a proxy route.
const http3YAML = `
listen: { http: "%s", https: "%s", http3: true }
admin: "%s"
tls: { ca: internal, storage: %s }
server: { shutdown_timeout: 5s }
sites:
  - hosts: [a.test]
    routes:
      - { path: /static/, static: { root: www } }
      - { path: /api/, proxy: { upstreams: ["%s"] } }
%s`

// h3Conn dials edge's UDP port and returns one HTTP/3 connection, so that
// a test can tell whether the same QUIC connection survives a reload.
func h3Conn(t *testing.T, addr string, roots *x509.CertPool) (*quic.Conn, *http3.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, addr, &cryptotls.Config{RootCAs: roots, ServerName: "a.test", NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("QUIC dial %s: %v", addr, err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return conn, (&http3.Transport{}).NewClientConn(conn)
}

// h3Do sends one request on cc and returns status, Proto and body.
func h3Do(t *testing.T, cc *http3.ClientConn, method, path string, body []byte) (int, string, string, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "https://a.test"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		t.Fatalf("HTTP/3 %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("HTTP/3 %s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Proto, string(b), resp.Header
}

// TestHTTP3 runs edge with listen.http3 and talks to it with quic-go's
// HTTP/3 client: a static file, a proxied POST whose body the upstream
// receives whole, Alt-Svc on the TCP listener, a reload that keeps the
// UDP socket (the same QUIC connection serves the new configuration), and
// SIGTERM that lets a request in flight finish and then closes the socket.
func TestHTTP3(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if r.URL.Path == "/api/slow" {
			arrived <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		sum := sha256.Sum256(b)
		fmt.Fprintf(w, "%s %s %d %s", r.Method, r.URL.Path, len(b), hex.EncodeToString(sum[:]))
	}))
	defer upstream.Close()

	httpAddr, httpsAddr, adminAddr := freePort(t), freePort(t), freePort(t)
	dir := t.TempDir()
	storage := filepath.Join(dir, "state")
	writeFile(t, dir, "www/static/hello.txt", "hello from edge\n")
	conf := func(extra string) string {
		return fmt.Sprintf(http3YAML, httpAddr, httpsAddr, adminAddr, storage, upstream.URL, extra)
	}
	cfg := writeFile(t, dir, "config.yaml", conf(""))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	roots := rootsOf(t, storage)

	conn, cc := h3Conn(t, httpsAddr, roots)
	code, proto, body, _ := h3Do(t, cc, "GET", "/static/hello.txt", nil)
	if code != 200 || proto != "HTTP/3.0" || body != "hello from edge\n" {
		t.Errorf("HTTP/3 static = %d %s %q, want 200 HTTP/3.0 with the file", code, proto, body)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB, several flow-control windows
	sum := sha256.Sum256(payload)
	code, _, body, _ = h3Do(t, cc, "POST", "/api/echo", payload)
	if want := fmt.Sprintf("POST /api/echo %d %s", len(payload), hex.EncodeToString(sum[:])); code != 200 || body != want {
		t.Errorf("HTTP/3 proxied POST = %d %q, want 200 %q", code, body, want)
	}

	// The TCP listener announces HTTP/3 on its own port.
	port := httpsAddr[strings.LastIndex(httpsAddr, ":")+1:]
	tr := &http.Transport{
		TLSClientConfig: &cryptotls.Config{RootCAs: roots, ServerName: "a.test"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, httpsAddr)
		},
		ForceAttemptHTTP2: true,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://a.test/static/hello.txt")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("Alt-Svc"), `h3=":`+port+`"; ma=86400`; resp.ProtoMajor != 2 || got != want {
		t.Errorf("HTTPS over TCP: %s Alt-Svc %q, want HTTP/2 with %q", resp.Proto, got, want)
	}

	// Reload: a new route appears on the same QUIC connection.
	writeFile(t, dir, "www/v2/new.txt", "after reload\n")
	writeFile(t, dir, "config.yaml", conf("      - { path: /v2/, static: { root: www } }\n"))
	if out, errOut, code := runEdge(t, "reload", "-config", cfg); code != 0 {
		t.Fatalf("edge reload = %d %q %q", code, out, errOut)
	}
	if code, _, body, _ := h3Do(t, cc, "GET", "/v2/new.txt", nil); code != 200 || body != "after reload\n" {
		t.Errorf("after reload, on the QUIC connection opened before it: %d %q, want the new route", code, body)
	}
	if conn.Context().Err() != nil {
		t.Error("the reload closed the QUIC connection")
	}

	// SIGTERM: the request in flight completes, then the UDP socket closes.
	type result struct {
		code int
		body string
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("POST", "https://a.test/api/slow", strings.NewReader("in flight"))
		resp, err := cc.RoundTrip(req)
		if err != nil {
			done <- result{0, err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b)}
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow request did not reach the upstream")
	}
	p.signal(syscall.SIGTERM)
	p.waitLog("shutting down", 5*time.Second)
	close(release)
	select {
	case r := <-done:
		if r.code != 200 || !strings.HasPrefix(r.body, "POST /api/slow 9 ") {
			t.Errorf("request in flight at SIGTERM = %d %q, want 200 from the upstream", r.code, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request in flight at SIGTERM did not complete")
	}
	if code := p.wait(10 * time.Second); code != 0 {
		t.Errorf("edge exited %d after SIGTERM, want 0", code)
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Error("the QUIC connection is still open after edge exited")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if c, err := quic.DialAddr(ctx, httpsAddr, &cryptotls.Config{RootCAs: roots, ServerName: "a.test", NextProtos: []string{http3.NextProtoH3}},
		&quic.Config{HandshakeIdleTimeout: time.Second}); err == nil {
		c.CloseWithError(0, "")
		t.Error("a QUIC handshake succeeded after SIGTERM")
	}
}
