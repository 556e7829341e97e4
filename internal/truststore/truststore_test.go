package truststore

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newRoot writes a self-signed CA certificate to dir.
func newRoot(t *testing.T, dir, cn string) *Root {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "root.crt")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := LoadRoot(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newDB(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("certutil", "-N", "-d", "sql:"+dir, "--empty-password").CombinedOutput(); err != nil {
		t.Fatalf("certutil -N: %v\n%s", err, out)
	}
}

func trusted(t *testing.T, dir, name string) bool {
	t.Helper()
	out, err := exec.Command("certutil", "-L", "-d", "sql:"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("certutil -L: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, name) && strings.HasSuffix(strings.TrimSpace(l), "C,,") {
			return true
		}
	}
	return false
}

// TestNSSEveryFirefoxProfile: the root goes into the Chromium database and
// into every Firefox profile (also the snap package's), and back out; a
// directory that is not a profile is left alone.
func TestNSSEveryFirefoxProfile(t *testing.T) {
	if _, err := exec.LookPath("certutil"); err != nil {
		t.Fatal("certutil not found: apt-get install libnss3-tools (make test installs it)")
	}
	home := t.TempDir()
	r := newRoot(t, t.TempDir(), "edge local CA root test")
	dbs := []string{
		filepath.Join(home, ".pki", "nssdb"),
		filepath.Join(home, ".mozilla", "firefox", "abcd.default-release"),
		filepath.Join(home, ".mozilla", "firefox", "efgh.work"),
		filepath.Join(home, "snap", "firefox", "common", ".mozilla", "firefox", "ijkl.default"),
	}
	for _, d := range dbs {
		newDB(t, d)
	}
	notProfile := filepath.Join(home, ".mozilla", "firefox", "Crash Reports")
	os.MkdirAll(notProfile, 0o700)

	var out bytes.Buffer
	if err := Install(r, Options{Stores: []string{StoreNSS}, Home: home, Out: &out}); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	for _, d := range dbs {
		if !trusted(t, d, r.Name) {
			t.Errorf("%s does not trust the root after Install", d)
		}
	}
	if strings.Count(out.String(), "added") != len(dbs) || !strings.Contains(out.String(), "Firefox profile efgh.work") {
		t.Errorf("Install reported:\n%s\nwant one added line per database", out.String())
	}
	if entries, _ := os.ReadDir(notProfile); len(entries) > 0 {
		t.Errorf("a directory that is no profile got %v", entries)
	}
	out.Reset()
	if err := Uninstall(r, Options{Stores: []string{StoreNSS}, Home: home, Out: &out}); err != nil {
		t.Fatal(err)
	}
	for _, d := range dbs {
		if trusted(t, d, r.Name) {
			t.Errorf("%s still trusts the root after Uninstall", d)
		}
	}
}

// TestUnknownStore: a store name that is not one is an error, not a skip.
func TestUnknownStore(t *testing.T) {
	r := newRoot(t, t.TempDir(), "x")
	err := Install(r, Options{Stores: []string{"java"}, Home: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), `unknown store "java"`) {
		t.Errorf("Install with store java: %v", err)
	}
}

// TestLoadRootRejectsNonCertificate: a key or garbage is not installed.
func TestLoadRootRejectsNonCertificate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "root.crt")
	os.WriteFile(p, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
	if _, err := LoadRoot(p); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("LoadRoot(key) = %v, want no PEM certificate", err)
	}
}
