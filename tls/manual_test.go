package tls

import (
	"bufio"
	cryptotls "crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const manualYAML = `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { storage: "{dir}/storage" }
sites:
  - hosts: [manual.example.com]
    tls: { cert: %s, key: %s }
    routes: [{ path: /, static: { root: . } }]
`

// get sends one HTTP/1.1 request on an open connection and reads the
// answer, so that a test can tell whether that connection still works.
func get(t *testing.T, c *cryptotls.Conn, host string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("request on the open connection: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("request on the open connection: %d", resp.StatusCode)
	}
}

// TestManualHotReload replaces a site's certificate files while a
// connection is open: new handshakes get the new certificate within the
// poll interval, the open connection keeps working; broken files are
// refused and the previous certificate stays; Update re-reads at once.
func TestManualHotReload(t *testing.T) {
	t.Parallel()
	const name = "manual.example.com"
	e := listen(t)
	dir := t.TempDir()
	ca, err := openLocalCA(filepath.Join(dir, "test-ca"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.root)
	certFile, keyFile := filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	issue := func() string {
		c, err := ca.issue(name, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		writeCertFiles(t, c, certFile, keyFile)
		return c.Leaf.SerialNumber.String()
	}
	first := issue()
	cfg := e.parse(t, fmt.Sprintf(manualYAML, certFile, keyFile))
	log, sink := newLogger(t)
	m := newManager(t, cfg, log, withPollInterval(50*time.Millisecond))
	e.serve(t, m)
	run(t, m)

	conn, err := cryptotls.Dial("tcp", e.httpsAddr(), &cryptotls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.String(); got != first {
		t.Fatalf("serial %s, want %s", got, first)
	}
	get(t, conn, name)

	second := issue()
	waitFor(t, 5*time.Second, "the replaced certificate to be served", func() bool {
		return servedSerial(t, e.httpsAddr(), name, roots) == second
	})
	get(t, conn, name) // the connection made with the first certificate still works
	if !sink.has("manual certificate reloaded", certFile) {
		t.Error("the reload was not logged")
	}

	// A broken file is refused; the second certificate stays.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the broken file to be reported", func() bool {
		return sink.has("manual certificate not reloaded", certFile)
	})
	if got := servedSerial(t, e.httpsAddr(), name, roots); got != second {
		t.Errorf("serial %s after a broken file, want %s still", got, second)
	}

	// Update re-reads the files.
	third := issue()
	if err := m.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if got := servedSerial(t, e.httpsAddr(), name, roots); got != third {
		t.Errorf("serial %s right after Update, want %s", got, third)
	}
	get(t, conn, name)
}

// TestUpdateRejectsBrokenManual: an Update whose manual certificate cannot
// be loaded fails and changes nothing.
func TestUpdateRejectsBrokenManual(t *testing.T) {
	t.Parallel()
	e := listen(t)
	dir := t.TempDir()
	certFile, keyFile := writeLeaf(t, dir, "manual.example.com", time.Hour)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, fmt.Sprintf(manualYAML, certFile, keyFile)), log, withPollInterval(time.Hour))
	e.serve(t, m)
	// A configuration that passed validation, whose key vanished since.
	otherCert, otherKey := writeLeaf(t, dir, "manual2.example.com", time.Hour)
	cfg2 := e.parse(t, fmt.Sprintf(manualYAML, otherCert, otherKey))
	if err := os.Remove(otherKey); err != nil {
		t.Fatal(err)
	}
	if err := m.Update(cfg2); err == nil || !strings.Contains(err.Error(), otherKey) {
		t.Fatalf("Update = %v, want an error naming %s", err, otherKey)
	}
	if _, err := cryptotls.Dial("tcp", e.httpsAddr(), &cryptotls.Config{ServerName: "manual.example.com", InsecureSkipVerify: true}); err != nil {
		t.Errorf("the previous configuration stopped serving: %v", err)
	}
}
