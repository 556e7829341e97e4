package tls

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/config"
)

func itoa(i int) string { return strconv.Itoa(i) }

// TestRedirect sends plain-HTTP requests to HTTPHandler over a real
// listener: 308 to HTTPS keeping host, path (escapes included) and query,
// with the https port; a site with http_redirect: false and unknown hosts
// go to the next handler.
func TestRedirect(t *testing.T) {
	t.Parallel()
	e := listen(t)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { ca: internal, storage: "{dir}/storage" }
sites:
  - hosts: [localhost, "*.apps.localhost"]
    routes: [{ path: /, static: { root: . } }]
  - hosts: [optout.localhost]
    http_redirect: false
    routes: [{ path: /, static: { root: . } }]
`), log)
	e.serve(t, m)
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "http://127.0.0.1:" + itoa(e.httpPort)
	for _, tc := range []struct {
		method, host, target string
		status               int
		location             string
	}{
		{"GET", "localhost", "/a/b%2Fc/?x=1&y=%20z", 308, "https://localhost:" + itoa(e.httpsPort) + "/a/b%2Fc/?x=1&y=%20z"},
		{"POST", "localhost:" + itoa(e.httpPort), "/form", 308, "https://localhost:" + itoa(e.httpsPort) + "/form"},
		{"GET", "x.apps.localhost", "/", 308, "https://x.apps.localhost:" + itoa(e.httpsPort) + "/"},
		{"GET", "optout.localhost", "/p?q", 200, ""},
		{"GET", "unknown.example", "/", 200, ""},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.target, strings.NewReader("body"))
		req.Host = tc.host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location {
			t.Errorf("%s http://%s%s = %d %q, want %d %q", tc.method, tc.host, tc.target, resp.StatusCode, resp.Header.Get("Location"), tc.status, tc.location)
		}
	}

	// On port 443 the URL has no port; IPv6 hosts keep their brackets.
	h := m.HTTPHandler(http.NotFoundHandler(), "443")
	for host, want := range map[string]string{
		"localhost":    "https://localhost/x?y=1",
		"localhost:80": "https://localhost/x?y=1",
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "http://"+host+"/x?y=1", nil)
		h.ServeHTTP(rec, req)
		if rec.Code != 308 || rec.Header().Get("Location") != want {
			t.Errorf("%s on 443: %d %q, want 308 %q", host, rec.Code, rec.Header().Get("Location"), want)
		}
	}
}

// TestHSTS checks the Strict-Transport-Security header: tls.hsts settings,
// a site's overrides, off for the local CA by default, on by default for
// a public site, never on plain HTTP.
func TestHSTS(t *testing.T) {
	t.Parallel()
	e := listen(t)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls:
  ca: internal
  storage: "{dir}/storage"
  hsts: { enabled: true, max_age: 2d, include_subdomains: true }
sites:
  - hosts: [a.localhost]
    routes: [{ path: /, static: { root: . } }]
  - hosts: [b.localhost]
    hsts: { max_age: 1h, preload: true }
    routes: [{ path: /, static: { root: . } }]
  - hosts: [c.localhost]
    hsts: { enabled: false }
    routes: [{ path: /, static: { root: . } }]
`), log)
	e.serve(t, m)
	client := loopbackClient(rootOf(t, e.dir))
	for host, want := range map[string]string{
		"a.localhost": "max-age=172800; includeSubDomains",
		"b.localhost": "max-age=3600; includeSubDomains; preload",
		"c.localhost": "",
	} {
		resp, err := client.Get("https://" + host + ":" + itoa(e.httpsPort) + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Strict-Transport-Security"); got != want {
			t.Errorf("%s: HSTS %q, want %q", host, got, want)
		}
	}
	resp, err := client.Get("http://optout:" + itoa(e.httpPort) + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.Header.Get("Strict-Transport-Security"); got != "" {
		t.Errorf("HSTS %q on plain HTTP", got)
	}

	// Defaults: on for a public name with a manual certificate, off for
	// a local name of the same configuration.
	dir := t.TempDir()
	certFile, keyFile := writeLeaf(t, dir, "pub.example.com", time.Hour)
	m2 := newManager(t, e.parse(t, `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { storage: "{dir}/storage2" }
sites:
  - hosts: [pub.example.com]
    tls: { cert: `+certFile+`, key: `+keyFile+` }
    routes: [{ path: /, static: { root: . } }]
  - hosts: [localhost]
    routes: [{ path: /, static: { root: . } }]
`), log)
	h := m2.Secure(http.NotFoundHandler())
	for host, want := range map[string]string{"pub.example.com": "max-age=31536000", "localhost": ""} {
		req := httptest.NewRequest("GET", "https://"+host+"/", nil)
		req.TLS = &cryptotls.ConnectionState{}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if got := rec.Header().Get("Strict-Transport-Security"); got != want {
			t.Errorf("default HSTS for %s = %q, want %q", host, got, want)
		}
	}
}

// TestNoSNIAndUnknownName: a client without SNI, or asking for a name no
// site has, fails the handshake with unrecognized_name instead of getting
// another site's certificate; with tls.default_cert it gets that one.
func TestNoSNIAndUnknownName(t *testing.T) {
	t.Parallel()
	const yaml = `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { ca: internal, storage: "{dir}/storage" %s }
sites:
  - hosts: [localhost]
    routes: [{ path: /, static: { root: . } }]
`
	e := listen(t)
	log, sink := newLogger(t)
	reg := prometheus.NewRegistry()
	m, err := New(e.parse(t, strings.Replace(yaml, "%s", "", 1)), log, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e.serve(t, m)
	insecure := func(name string) error {
		c, err := cryptotls.Dial("tcp", e.httpsAddr(), &cryptotls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, name := range []string{"", "other.localhost", "example.com"} {
		// The client sees alert 112, unrecognized_name (RFC 6066).
		if err := insecure(name); err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("handshake with SNI %q: %v, want alert unrecognized_name", name, err)
		}
	}
	if !sink.has("TLS handshake refused", "other.localhost", "no site has this name") {
		t.Error("the refusal is not logged")
	}
	if got := metricValue(t, reg, "edge_tls_handshake_certificate_failures_total", "reason", "unknown_name"); got != 2 {
		t.Errorf("unknown_name failures = %v, want 2", got)
	}
	if got := metricValue(t, reg, "edge_tls_handshake_certificate_failures_total", "reason", "no_sni"); got != 1 {
		t.Errorf("no_sni failures = %v, want 1", got)
	}

	// With a default certificate both get the localhost certificate.
	e2 := listen(t)
	m2 := newManager(t, e2.parse(t, strings.Replace(yaml, "%s", ", default_cert: localhost", 1)), log)
	e2.serve(t, m2)
	for _, name := range []string{"", "example.com"} {
		c, err := cryptotls.Dial("tcp", e2.httpsAddr(), &cryptotls.Config{ServerName: name, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("SNI %q with default_cert: %v", name, err)
		}
		if got := c.ConnectionState().PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "localhost" {
			t.Errorf("SNI %q with default_cert got %v", name, got)
		}
		c.Close()
	}
}

// TestTLSSettings checks what clients are offered: no TLS 1.1, no CBC
// suite in TLS 1.2, ALPN h2 then http/1.1.
func TestTLSSettings(t *testing.T) {
	t.Parallel()
	e := listen(t)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, localYAML), log)
	e.serve(t, m)
	roots := rootOf(t, e.dir)
	dial := func(c *cryptotls.Config) (cryptotls.ConnectionState, error) {
		c.ServerName, c.RootCAs = "localhost", roots
		conn, err := cryptotls.Dial("tcp", e.httpsAddr(), c)
		if err != nil {
			return cryptotls.ConnectionState{}, err
		}
		defer conn.Close()
		return conn.ConnectionState(), nil
	}
	if _, err := dial(&cryptotls.Config{MaxVersion: cryptotls.VersionTLS11, MinVersion: cryptotls.VersionTLS10}); err == nil {
		t.Error("TLS 1.1 handshake succeeded")
	}
	if _, err := dial(&cryptotls.Config{MaxVersion: cryptotls.VersionTLS12, CipherSuites: []uint16{cryptotls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}); err == nil {
		t.Error("a CBC suite was accepted")
	}
	st, err := dial(&cryptotls.Config{MaxVersion: cryptotls.VersionTLS12, NextProtos: []string{"http/1.1", "h2"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != cryptotls.VersionTLS12 || st.NegotiatedProtocol != "h2" {
		t.Errorf("TLS 1.2: version %x ALPN %q, want h2 (server preference)", st.Version, st.NegotiatedProtocol)
	}
	st, err = dial(&cryptotls.Config{NextProtos: []string{"http/1.1"}})
	if err != nil || st.NegotiatedProtocol != "http/1.1" {
		t.Errorf("http/1.1-only client: %v %q", err, st.NegotiatedProtocol)
	}
	if m.TLSConfig() != m.TLSConfig() {
		t.Error("TLSConfig returns a new Config each time; session ticket keys would not survive a reload")
	}
}

// writeLeaf writes a certificate for name (chain included) and its key,
// issued by a scratch local CA, and returns the file names.
func writeLeaf(t *testing.T, dir, name string, life time.Duration) (certFile, keyFile string) {
	t.Helper()
	ca, err := openLocalCA(filepath.Join(dir, "test-ca"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.issue(name, life)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	writeCertFiles(t, c, certFile, keyFile)
	return certFile, keyFile
}

// writeCertFiles writes c as PEM: the chain into certFile, the key into
// keyFile, each replaced by a rename as deploy tools do.
func writeCertFiles(t *testing.T, c *cryptotls.Certificate, certFile, keyFile string) {
	t.Helper()
	var chain []byte
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFileAtomic(certFile, chain, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsAcrossManagers: a Manager made after another was closed (a
// reload turning HTTPS off and on) registers on the same registry, keeps
// the counters, and reports the expiry of its own certificates.
func TestMetricsAcrossManagers(t *testing.T) {
	t.Parallel()
	e := listen(t)
	log, _ := newLogger(t)
	reg := prometheus.NewRegistry()
	cfg := e.parse(t, localYAML)
	m1, err := New(cfg, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	m1.met.handshakeFailure("no_sni")
	m1.Close()
	m2, err := New(cfg, log, reg)
	if err != nil {
		t.Fatalf("second New on the same registry: %v", err)
	}
	defer m2.Close()
	m2.met.handshakeFailure("no_sni")
	if got := metricValue(t, reg, "edge_tls_handshake_certificate_failures_total", "reason", "no_sni"); got != 2 {
		t.Errorf("counter = %v after two managers, want 2", got)
	}
	leaf := m2.snap.Load().exact["localhost"].slot.Load().Leaf
	if got := metricValue(t, reg, "edge_tls_certificate_expiry_timestamp_seconds", "name", "localhost", "source", "local"); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry = %v, want %d (the second manager's leaf)", got, leaf.NotAfter.Unix())
	}
}

// BenchmarkGetCertificate measures the handshake-time lookup of a manual
// and a local certificate (the bench/ HTTPS scenarios use a manual one).
func BenchmarkGetCertificate(b *testing.B) {
	dir := b.TempDir()
	certFile, keyFile := writeLeafB(b, dir, "manual.example.com")
	yaml := strings.NewReplacer("{dir}", dir).Replace(`
listen: { http: "127.0.0.1:1", https: "127.0.0.1:2" }
admin: ""
tls: { storage: "{dir}/storage" }
sites:
  - hosts: [manual.example.com]
    tls: { cert: ` + certFile + `, key: ` + keyFile + ` }
    routes: [{ path: /, static: { root: . } }]
  - hosts: [localhost]
    routes: [{ path: /, static: { root: . } }]
`)
	cfg, err := config.Parse(filepath.Join(dir, "edge.yaml"), []byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	for _, name := range []string{"manual.example.com", "localhost"} {
		b.Run(name, func(b *testing.B) {
			hello := &cryptotls.ClientHelloInfo{ServerName: name}
			b.ReportAllocs()
			for b.Loop() {
				if c, err := m.getCertificate(hello); c == nil || err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("Secure", func(b *testing.B) {
		h := m.Secure(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		req := httptest.NewRequest("GET", "https://manual.example.com:8443/", nil)
		req.TLS = &cryptotls.ConnectionState{}
		w := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
	})
}

func writeLeafB(b *testing.B, dir, name string) (string, string) {
	ca, err := openLocalCA(filepath.Join(dir, "test-ca"))
	if err != nil {
		b.Fatal(err)
	}
	c, err := ca.issue(name, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	var chain []byte
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, chain, 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	return certFile, keyFile
}
