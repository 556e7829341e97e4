package tls

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"golang.org/x/crypto/ocsp"

	"github.com/prometheus/client_golang/prometheus"
)

var nameSeq atomic.Int32

// uniqueName returns a host name no other test of this process uses:
// certmagic keeps renewal jobs and their backoff in package globals keyed
// by name, so two tests (or two runs with -count) must not share names.
func uniqueName(label string) string {
	return fmt.Sprintf("%s-%d.edge-test.com", label, nameSeq.Add(1))
}

// acmeYAML is a configuration using Pebble p for hosts; extra lines go
// under tls (indented by two spaces).
func acmeYAML(p *pebble, hosts, extra string) string {
	return fmt.Sprintf(`
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls:
  ca: %q
  ca_root: %q
  email: ops@edge-test.com
  storage: "{dir}/storage"
  profile: default
  renew_check_interval: 1s
%s
sites:
  - hosts: [%s]
    routes: [{ path: /, static: { root: . } }]
`, p.dirURL, p.caRoot, extra, hosts)
}

// obtained waits until name's certificate is obtained and being served.
func obtained(t *testing.T, m *Manager, ev *events, name string) {
	t.Helper()
	ev.wait(t, "cert_obtained "+name+" false", 1, 30*time.Second)
	waitFor(t, 5*time.Second, "Ready", func() bool { return m.Ready() == nil })
}

func (e *edgeServer) httpsAddr() string { return fmt.Sprintf("127.0.0.1:%d", e.httpsPort) }

// TestACMEHTTP01 obtains a certificate from Pebble over HTTP-01 alone,
// answered by HTTPHandler on the http listener. Before Run the handshake
// fails cleanly and Ready names the missing host.
func TestACMEHTTP01(t *testing.T) {
	t.Parallel()
	name := uniqueName("http01")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	cfg := e.parse(t, acmeYAML(p, name, "  tls_alpn_challenge: false"))
	log, sink := newLogger(t)
	ev := newEvents()
	m := newManager(t, cfg, log, ev.option())
	e.serve(t, m)

	if _, err := handshake(e.httpsAddr(), name, p.issuers); err == nil {
		t.Fatal("handshake succeeded before any certificate exists")
	}
	if !sink.has("TLS handshake refused", name, "certificate not obtained yet") {
		t.Error("the log does not say why the handshake failed")
	}
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("Ready() = %v, want an error naming %s", err, name)
	}

	start := time.Now()
	run(t, m)
	obtained(t, m, ev, name)
	t.Logf("certificate obtained over HTTP-01 in %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "Ready", func() bool { return m.Ready() == nil })
	leaf, err := handshake(e.httpsAddr(), name, p.issuers)
	if err != nil {
		t.Fatalf("handshake with the obtained certificate: %v", err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != name {
		t.Errorf("certificate names = %v, want [%s]", leaf.DNSNames, name)
	}
	if !sink.has("served key authentication", "http-01") || sink.has("served key authentication", "tls-alpn-01") {
		t.Error("want the certificate validated over HTTP-01 only")
	}
}

// TestACMETLSALPN01 obtains a certificate over TLS-ALPN-01 alone, answered
// by TLSConfig on the https listener, from a CA that requires External
// Account Binding.
func TestACMETLSALPN01(t *testing.T) {
	t.Parallel()
	name := uniqueName("alpn")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{requireEAB: true})
	mac := base64.RawURLEncoding.EncodeToString([]byte("a secret of thirty-two bytes....."))
	if err := p.db.AddExternalAccountKeyByID("kid-1", mac); err != nil {
		t.Fatal(err)
	}
	cfg := e.parse(t, acmeYAML(p, name, "  http_challenge: false\n  eab: { key_id: kid-1, mac_key: "+mac+" }"))
	log, sink := newLogger(t)
	ev := newEvents()
	m := newManager(t, cfg, log, ev.option())
	e.serve(t, m)
	run(t, m)
	obtained(t, m, ev, name)
	if _, err := handshake(e.httpsAddr(), name, p.issuers); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if !sink.has("served key authentication certificate", "tls-alpn-01") || sink.has("challenge=http-01") {
		t.Error("want the certificate validated over TLS-ALPN-01 only")
	}
}

// servedSerial returns the serial of the certificate served for name.
func servedSerial(t *testing.T, addr, name string, roots *x509.CertPool) string {
	t.Helper()
	leaf, err := handshake(addr, name, roots)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return leaf.SerialNumber.String()
}

// TestACMERenewal lets a 20-second certificate be renewed in the
// background and served without a restart; the metrics count it.
func TestACMERenewal(t *testing.T) {
	t.Parallel()
	name := uniqueName("renew")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{validity: 20})
	cfg := e.parse(t, acmeYAML(p, name, ""))
	log, _ := newLogger(t)
	ev := newEvents()
	reg := prometheus.NewRegistry()
	m, err := New(cfg, log, reg, ev.option(), withRenewalRatio(0.8))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e.serve(t, m)
	run(t, m)
	obtained(t, m, ev, name)
	first := servedSerial(t, e.httpsAddr(), name, p.issuers)
	ev.wait(t, "cert_obtained "+name+" true", 1, 20*time.Second)
	waitFor(t, 5*time.Second, "the renewed certificate to be served", func() bool {
		return servedSerial(t, e.httpsAddr(), name, p.issuers) != first
	})
	if got := metricValue(t, reg, "edge_tls_certificates_issued_total", "source", "acme", "kind", "renew"); got < 1 {
		t.Errorf("edge_tls_certificates_issued_total{acme,renew} = %v, want ≥ 1", got)
	}
	leaf, _ := handshake(e.httpsAddr(), name, p.issuers)
	if got := metricValue(t, reg, "edge_tls_certificate_expiry_timestamp_seconds", "name", name, "source", "acme"); got != float64(leaf.NotAfter.Unix()) {
		t.Errorf("expiry metric = %v, want %d", got, leaf.NotAfter.Unix())
	}
}

// TestACMERenewalFailureKeepsCert makes Pebble drop every connection
// while a renewal is due: the renewal fails and is logged, the still-valid
// certificate keeps being served, and a later retry (here the one a
// reload triggers, instead of waiting for certmagic's one-minute backoff)
// succeeds.
func TestACMERenewalFailureKeepsCert(t *testing.T) {
	t.Parallel()
	name := uniqueName("renewfail")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{validity: 40})
	cfg := e.parse(t, acmeYAML(p, name, ""))
	log, sink := newLogger(t)
	ev := newEvents()
	m := newManager(t, cfg, log, ev.option(), withRenewalRatio(0.9))
	e.serve(t, m)
	run(t, m)
	obtained(t, m, ev, name)
	first := servedSerial(t, e.httpsAddr(), name, p.issuers)
	p.down.Store(true)

	ev.wait(t, "cert_failed "+name+" true", 1, 20*time.Second)
	if got := servedSerial(t, e.httpsAddr(), name, p.issuers); got != first {
		t.Fatalf("serial changed to %s while the CA was down", got)
	}
	if !sink.has("certificate request failed", name, "renewal=true") {
		t.Error("the failed renewal was not logged")
	}
	if err := m.Ready(); err != nil {
		t.Errorf("Ready() = %v after a failed renewal; the old certificate is still valid", err)
	}

	p.down.Store(false)
	// A reload retries at once. The attempt it starts can still meet a
	// connection Pebble dropped while down (flaked once under a loaded
	// machine), so reload again until one succeeds, as an operator would.
	deadline := time.Now().Add(40 * time.Second)
	for ev.count("cert_obtained "+name+" true") == 0 {
		if time.Now().After(deadline) {
			ev.wait(t, "cert_obtained "+name+" true", 1, 0) // fails, listing the events
		}
		if err := m.Update(cfg); err != nil {
			t.Fatal(err)
		}
		retry := time.NewTimer(3 * time.Second)
		for ev.count("cert_obtained "+name+" true") == 0 {
			select {
			case <-ev.ch:
				continue
			case <-retry.C:
			}
			break
		}
		retry.Stop()
	}
	waitFor(t, 5*time.Second, "the renewed certificate to be served", func() bool {
		return servedSerial(t, e.httpsAddr(), name, p.issuers) != first
	})
	if c, ok := m.acmeCert(name); !ok || len(m.magic.Load().cache.AllMatchingCertificates(name)) != 1 {
		t.Errorf("cache holds %d certificates for %s (found %v), want only the renewed one", len(m.magic.Load().cache.AllMatchingCertificates(name)), name, c.Names)
	}
}

// TestACMERestartFromStorage restarts edge on the same storage: the
// certificate is loaded, no new order reaches the CA.
func TestACMERestartFromStorage(t *testing.T) {
	t.Parallel()
	name := uniqueName("restart")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, e.parse(t, acmeYAML(p, name, "")), log, ev.option())
	e.serve(t, m)
	run(t, m)
	obtained(t, m, ev, name)
	first := servedSerial(t, e.httpsAddr(), name, p.issuers)
	m.Close()
	orders := p.orders.Load()

	e2 := listen(t)
	e2.dir = e.dir // same storage
	log2, sink2 := newLogger(t)
	m2 := newManager(t, e2.parse(t, acmeYAML(p, name, "")), log2)
	e2.serve(t, m2)
	run(t, m2)
	waitFor(t, 10*time.Second, "Ready after restart", func() bool { return m2.Ready() == nil })
	if got := servedSerial(t, e2.httpsAddr(), name, p.issuers); got != first {
		t.Errorf("serial after restart = %s, want %s (the stored certificate)", got, first)
	}
	if n := p.orders.Load(); n != orders {
		t.Errorf("%d new orders at the CA after restart, want 0", n-orders)
	}
	if sink2.has("obtaining certificate") {
		t.Error("restart obtained a certificate instead of loading it")
	}
}

// TestACMERateLimit makes the CA answer rateLimited: the failure is
// logged as a rate limit and counted, handshakes fail with the reason in
// the log, and a reload retries at once and succeeds.
func TestACMERateLimit(t *testing.T) {
	t.Parallel()
	name := uniqueName("ratelimit")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	p.rateLimit.Store(true)
	cfg := e.parse(t, acmeYAML(p, name, ""))
	log, sink := newLogger(t)
	ev := newEvents()
	reg := prometheus.NewRegistry()
	m, err := New(cfg, log, reg, ev.option())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	e.serve(t, m)
	run(t, m)
	ev.wait(t, "cert_failed "+name+" false", 1, 30*time.Second)
	if !sink.has("ACME CA rate limit hit", name, "too many certificates") {
		t.Error("the rate limit answer was not logged as such")
	}
	if got := metricValue(t, reg, "edge_tls_issuance_errors_total", "kind", "obtain", "reason", "rate_limited"); got != 1 {
		t.Errorf("edge_tls_issuance_errors_total{obtain,rate_limited} = %v, want 1", got)
	}
	waitFor(t, 5*time.Second, "certmagic to schedule a retry", func() bool { return sink.has("will retry", "retrying_in=1m0s") })
	if _, err := handshake(e.httpsAddr(), name, p.issuers); err == nil {
		t.Fatal("handshake succeeded without a certificate")
	}
	if !sink.has("TLS handshake refused", name, "last_attempt=", "rateLimited") {
		t.Error("the handshake refusal does not carry the last ACME error")
	}
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "too many certificates") {
		t.Errorf("Ready() = %v, want the rate limit as the reason", err)
	}
	p.rateLimit.Store(false)
	if err := m.Update(cfg); err != nil {
		t.Fatal(err)
	}
	obtained(t, m, ev, name)
	if _, err := handshake(e.httpsAddr(), name, p.issuers); err != nil {
		t.Fatalf("handshake after the retry: %v", err)
	}
}

// TestOnDemand issues certificates at the first handshake for names of
// the allow list or approved by the ask URL, refuses others, and stops at
// the rate limit.
func TestOnDemand(t *testing.T) {
	t.Parallel()
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	ask := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("domain") != "asked.edge-test.com" {
			http.Error(w, "no", http.StatusForbidden)
		}
	}))
	t.Cleanup(ask.Close)
	cfg := e.parse(t, fmt.Sprintf(`
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls:
  ca: %q
  ca_root: %q
  storage: "{dir}/storage"
  profile: default
  on_demand: { allow: ["*.od.edge-test.com"], ask: %q, rate_limit: 2, rate_window: 1h }
sites:
  - routes: [{ path: /, static: { root: . } }]
`, p.dirURL, p.caRoot, ask.URL+"/check"))
	log, sink := newLogger(t)
	m := newManager(t, cfg, log)
	e.serve(t, m)
	run(t, m)
	waitFor(t, 5*time.Second, "Run to start certmagic", func() bool { return m.magic.Load() != nil })

	for _, name := range []string{"a.od.edge-test.com", "asked.edge-test.com"} {
		leaf, err := handshake(e.httpsAddr(), name, p.issuers)
		if err != nil {
			t.Fatalf("on-demand handshake for %s: %v", name, err)
		}
		if leaf.DNSNames[0] != name {
			t.Errorf("certificate for %s names %v", name, leaf.DNSNames)
		}
	}
	for _, name := range []string{"denied.edge-test.com", "x.y.od.edge-test.com", "localhost"} {
		if _, err := handshake(e.httpsAddr(), name, p.issuers); err == nil {
			t.Errorf("on-demand handshake for %s succeeded; it is neither allowed nor approved", name)
		}
	}
	if _, err := handshake(e.httpsAddr(), "b.od.edge-test.com", p.issuers); err == nil {
		t.Error("a third issuance succeeded; rate_limit is 2 per hour")
	}
	if !sink.has("on-demand certificate refused", "b.od.edge-test.com", "rate_limit reached") {
		t.Error("the rate limit was not logged")
	}
	if n := p.orders.Load(); n != 2 {
		t.Errorf("%d orders at the CA, want 2", n)
	}
	// Certificates obtained on demand are served from memory afterwards.
	if _, err := handshake(e.httpsAddr(), "a.od.edge-test.com", p.issuers); err != nil {
		t.Errorf("second handshake for a.od.edge-test.com: %v", err)
	}
}

// TestRunStopsEverything checks that Run returns promptly while an obtain
// is being retried, and that Close is idempotent.
func TestRunStopsEverything(t *testing.T) {
	t.Parallel()
	name := uniqueName("stop")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	p.down.Store(true)
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, e.parse(t, acmeYAML(p, name, "")), log, ev.option())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	ev.wait(t, "cert_failed "+name+" false", 1, 30*time.Second)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context was cancelled")
	}
	if err := m.storage.waitIdle(context.Background()); err != nil {
		t.Error(err)
	}
	m.Close()
	m.Close()
	if err := m.Run(context.Background()); err != ErrClosed {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
}

// TestOCSPStapling: a certificate whose CA names an OCSP responder is
// served at once even while the responder fails, and gets a staple once
// the responder answers. (Certificates without a responder, as Let's
// Encrypt issues now, are what every other test serves.)
func TestOCSPStapling(t *testing.T) {
	t.Parallel()
	name := uniqueName("ocsp")
	var (
		issuer *x509.Certificate
		key    crypto.Signer
		up     atomic.Bool
		asked  atomic.Int32
		mu     sync.Mutex
	)
	responder := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		body, _ := io.ReadAll(r.Body)
		req, err := ocsp.ParseRequest(body)
		mu.Lock()
		iss, k := issuer, key
		mu.Unlock()
		if !up.Load() || err != nil || iss == nil {
			http.Error(w, "responder down", http.StatusServiceUnavailable)
			return
		}
		now := time.Now()
		// No embedded responder certificate: the issuer signs itself.
		resp, err := ocsp.CreateResponse(iss, iss, ocsp.Response{Status: ocsp.Good, SerialNumber: req.SerialNumber, ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)}, k)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	}))
	t.Cleanup(responder.Close)

	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{ocspURL: responder.URL, keyAlg: "rsa"})
	mu.Lock()
	issuer, key = p.ca.GetIntermediateCert(0).Cert, p.ca.GetIntermediateKey(0)
	mu.Unlock()
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, e.parse(t, acmeYAML(p, name, "")), log, ev.option(), withOCSPInterval(200*time.Millisecond))
	e.serve(t, m)
	run(t, m)
	obtained(t, m, ev, name)
	staple := func() []byte {
		c, err := dialTLS(e.httpsAddr(), name, p.issuers)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().OCSPResponse
	}
	if s := staple(); len(s) != 0 {
		t.Fatalf("a staple while the responder fails")
	}
	if asked.Load() == 0 {
		t.Error("the OCSP responder was never asked")
	}
	up.Store(true)
	waitFor(t, 10*time.Second, "an OCSP staple", func() bool { return len(staple()) > 0 })
	resp, err := ocsp.ParseResponse(staple(), issuer)
	if err != nil || resp.Status != ocsp.Good {
		t.Errorf("staple: %v, status %d", err, resp.Status)
	}
}

// TestUpdateAddsAndRemovesNames: a reload with one more name obtains only
// that one (the existing certificate is not re-issued) and a removed name
// is no longer served.
func TestUpdateAddsAndRemovesNames(t *testing.T) {
	t.Parallel()
	a, b := uniqueName("one"), uniqueName("two")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, e.parse(t, acmeYAML(p, a, "")), log, ev.option())
	e.serve(t, m)
	run(t, m)
	obtained(t, m, ev, a)
	first := servedSerial(t, e.httpsAddr(), a, p.issuers)

	if err := m.Update(e.parse(t, acmeYAML(p, a+", "+b, ""))); err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), b) {
		t.Errorf("Ready() = %v right after adding %s", err, b)
	}
	obtained(t, m, ev, b)
	if got := servedSerial(t, e.httpsAddr(), a, p.issuers); got != first {
		t.Errorf("%s re-issued by the reload", a)
	}
	if n := p.orders.Load(); n != 2 {
		t.Errorf("%d orders, want 2 (one per name)", n)
	}

	if err := m.Update(e.parse(t, acmeYAML(p, b, ""))); err != nil {
		t.Fatal(err)
	}
	if _, err := handshake(e.httpsAddr(), a, p.issuers); err == nil {
		t.Errorf("%s still served after it was removed", a)
	}
	if _, err := handshake(e.httpsAddr(), b, p.issuers); err != nil {
		t.Errorf("%s: %v", b, err)
	}
}

// TestZeroSSLEAB gets EAB credentials for an email, as ZeroSSL gives
// them, when tls.ca is zerossl without tls.eab.
func TestZeroSSLEAB(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.FormValue("email") != "ops@example.com" {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"success":false,"error":{"code":2900,"type":"invalid_email"}}`)
			return
		}
		io.WriteString(w, `{"success":true,"eab_kid":"kid-9","eab_hmac_key":"bWFj"}`)
	}))
	t.Cleanup(srv.Close)
	old := zeroSSLEABEndpoint
	zeroSSLEABEndpoint = srv.URL
	t.Cleanup(func() { zeroSSLEABEndpoint = old })

	iss := certmagic.NewACMEIssuer(&certmagic.Config{}, certmagic.ACMEIssuer{Email: "ops@example.com"})
	if _, err := zeroSSLEAB(context.Background(), iss, acme.Account{}); err != nil {
		t.Fatal(err)
	}
	if iss.ExternalAccount == nil || iss.ExternalAccount.KeyID != "kid-9" || iss.ExternalAccount.MACKey != "bWFj" {
		t.Errorf("ExternalAccount = %+v", iss.ExternalAccount)
	}
	bad := certmagic.NewACMEIssuer(&certmagic.Config{}, certmagic.ACMEIssuer{Email: "x@example.com"})
	if _, err := zeroSSLEAB(context.Background(), bad, acme.Account{}); err == nil || !strings.Contains(err.Error(), "invalid_email") {
		t.Errorf("error = %v, want the API's error type", err)
	}
}
