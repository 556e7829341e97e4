package tls

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// prepareYAML serves old.test from the local CA and manual.example.com
// from files; %s is the host list of the first site.
const prepareYAML = `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { ca: internal, storage: "{dir}/storage" }
sites:
  - hosts: [%s]
    routes: [{ path: /, static: { root: . } }]
  - hosts: [manual.example.com]
    tls: { cert: %s, key: %s }
    routes: [{ path: /, static: { root: . } }]
`

// TestManagerPrepareAbort: a prepared configuration that renames old.test
// to newhost.test and whose manual certificate files changed serves none
// of it, before and after Abort: old.test handshakes, newhost.test does
// not, the manual name keeps its certificate. Committing a second Prepare
// then serves all of it.
func TestManagerPrepareAbort(t *testing.T) {
	t.Parallel()
	const manual = "manual.example.com"
	e := listen(t)
	dir := t.TempDir()
	ca, err := openLocalCA(filepath.Join(dir, "test-ca"))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "m.crt"), filepath.Join(dir, "m.key")
	issue := func() string {
		c, err := ca.issue(manual, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		writeCertFiles(t, c, certFile, keyFile)
		return c.Leaf.SerialNumber.String()
	}
	first := issue()
	conf := func(hosts string) string { return fmt.Sprintf(prepareYAML, hosts, certFile, keyFile) }
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, conf("old.test")), log, withPollInterval(time.Hour))
	e.serve(t, m)
	run(t, m)
	roots := rootOf(t, e.dir)
	roots.AddCert(ca.root)

	second := issue()
	p, err := m.Prepare(e.parse(t, conf("newhost.test")))
	if err != nil {
		t.Fatal(err)
	}
	assertServes(t, e.httpsAddr(), roots, "old.test", "newhost.test")
	if got := servedSerial(t, e.httpsAddr(), manual, roots); got != first {
		t.Errorf("prepared: manual serial %s, want %s still", got, first)
	}
	p.Abort()
	p.Commit() // after Abort: does nothing
	assertServes(t, e.httpsAddr(), roots, "old.test", "newhost.test")
	if got := servedSerial(t, e.httpsAddr(), manual, roots); got != first {
		t.Errorf("aborted: manual serial %s, want %s still", got, first)
	}

	p, err = m.Prepare(e.parse(t, conf("newhost.test")))
	if err != nil {
		t.Fatal(err)
	}
	p.Commit()
	p.Abort() // after Commit: does nothing
	assertServes(t, e.httpsAddr(), roots, "newhost.test", "old.test")
	if got := servedSerial(t, e.httpsAddr(), manual, roots); got != second {
		t.Errorf("committed: manual serial %s, want %s", got, second)
	}
}

// assertServes checks that a handshake for name succeeds with a
// certificate for that name and one for refused fails.
func assertServes(t *testing.T, addr string, roots *x509.CertPool, name, refused string) {
	t.Helper()
	if _, err := handshake(addr, name, roots); err != nil {
		t.Errorf("handshake %s: %v, want it served", name, err)
	}
	if _, err := handshake(addr, refused, roots); err == nil {
		t.Errorf("handshake %s succeeded, want it refused", refused)
	}
}

// TestManagerAbortStartsNoIssuance: an aborted Prepare that adds an ACME
// name neither lists it as missing nor asks the CA for it; the next
// committed one obtains only its own new name.
func TestManagerAbortStartsNoIssuance(t *testing.T) {
	t.Parallel()
	a, b, c := uniqueName("kept"), uniqueName("aborted"), uniqueName("added")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, e.parse(t, acmeYAML(p, a, "")), log, ev.option())
	e.serve(t, m)
	run(t, m)
	obtained(t, m, ev, a)

	pending, err := m.Prepare(e.parse(t, acmeYAML(p, a+", "+b, "")))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Ready(); err != nil {
		t.Errorf("Ready() = %v while %s is only prepared", err, b)
	}
	pending.Abort()

	pending, err = m.Prepare(e.parse(t, acmeYAML(p, a+", "+c, "")))
	if err != nil {
		t.Fatal(err)
	}
	pending.Commit()
	obtained(t, m, ev, c)
	if n := ev.count("cert_obtaining " + b + " false"); n != 0 {
		t.Errorf("the aborted name %s was being obtained (%d events)", b, n)
	}
	if n := p.orders.Load(); n != 2 {
		t.Errorf("%d orders, want 2 (%s and %s)", n, a, c)
	}
}
