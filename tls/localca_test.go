package tls

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptotls "crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const localYAML = `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { ca: internal, storage: "{dir}/storage" }
sites:
  - hosts: [localhost, 127.0.0.1, "*.localhost"]
    routes: [{ path: /, static: { root: . } }]
`

// rootOf reads the local CA root under dir's storage into a pool that
// holds nothing else.
func rootOf(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "storage", "ca", rootCertFile))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		t.Fatal("root.crt holds no certificate")
	}
	return pool
}

// loopbackClient is an HTTPS client that trusts only roots and dials
// 127.0.0.1 whatever the host name.
func loopbackClient(roots *x509.CertPool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &cryptotls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				_, port, _ := net.SplitHostPort(addr)
				return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// TestLocalCAEndToEnd serves localhost, 127.0.0.1 and *.localhost from
// the local CA: a client that trusts only the generated root verifies the
// chain (leaf, intermediate, root) and the names, over HTTP/2. Storage is
// private and HSTS is off for local names.
func TestLocalCAEndToEnd(t *testing.T) {
	t.Parallel()
	e := listen(t)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, localYAML), log)
	e.serve(t, m)
	run(t, m)
	if err := m.Ready(); err != nil {
		t.Fatalf("Ready() = %v; local certificates exist from New on", err)
	}
	roots := rootOf(t, e.dir)

	for _, name := range []string{"localhost", "app.localhost", "127.0.0.1"} {
		c, err := dialTLS(e.httpsAddr(), name, roots) // Go sends no SNI for 127.0.0.1
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		st := c.ConnectionState()
		c.Close()
		if n := len(st.VerifiedChains[0]); n != 3 {
			t.Errorf("%s: verified chain of %d certificates, want leaf, intermediate, root", name, n)
		}
		leaf := st.PeerCertificates[0]
		if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Errorf("%s: leaf key %T, want ECDSA P-256", name, leaf.PublicKey)
		}
		if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 25*time.Hour {
			t.Errorf("%s: leaf valid for %v, want short-lived", name, life)
		}
		if st.NegotiatedProtocol != "h2" || st.Version != cryptotls.VersionTLS13 {
			t.Errorf("%s: ALPN %q version %x, want h2 over TLS 1.3", name, st.NegotiatedProtocol, st.Version)
		}
	}

	resp, err := loopbackClient(roots).Get("https://localhost:" + itoa(e.httpsPort) + "/path")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "HTTP/2.0") {
		t.Errorf("GET = %d %q, want 200 over HTTP/2", resp.StatusCode, body)
	}
	if v := resp.Header.Get("Strict-Transport-Security"); v != "" {
		t.Errorf("HSTS %q on a local-CA host; it is off by default there", v)
	}

	for path, want := range map[string]os.FileMode{
		"storage":                     0o700,
		"storage/ca":                  0o700,
		"storage/ca/" + rootKeyFile:   0o600,
		"storage/ca/" + interKeyFile:  0o600,
		"storage/ca/" + interCertFile: 0o644,
	} {
		st, err := os.Stat(filepath.Join(e.dir, path))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", path, st.Mode().Perm(), want)
		}
	}
}

// TestLocalCAKeptAcrossRestarts: the root is generated once; a new
// Manager on the same storage issues leaves under it.
func TestLocalCAKeptAcrossRestarts(t *testing.T) {
	t.Parallel()
	e := listen(t)
	log, _ := newLogger(t)
	m1 := newManager(t, e.parse(t, localYAML), log)
	m1.Close()
	roots := rootOf(t, e.dir)

	m2 := newManager(t, e.parse(t, localYAML), log)
	e.serve(t, m2)
	if _, err := handshake(e.httpsAddr(), "localhost", roots); err != nil {
		t.Fatalf("leaf after restart does not verify against the first root: %v", err)
	}
}

// TestLocalLeafRenewal renews short leaves in the background; a handshake
// sees the new leaf without a restart.
func TestLocalLeafRenewal(t *testing.T) {
	t.Parallel()
	e := listen(t)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, localYAML), log, withLeafLifetime(3*time.Second), withPollInterval(50*time.Millisecond))
	e.serve(t, m)
	run(t, m)
	roots := rootOf(t, e.dir)
	start := time.Now()
	first := servedSerial(t, e.httpsAddr(), "localhost", roots)
	waitFor(t, 10*time.Second, "a renewed leaf", func() bool {
		return servedSerial(t, e.httpsAddr(), "localhost", roots) != first
	})
	// Renewed with a third of the lifetime left: after about 2 s.
	if d := time.Since(start); d < time.Second {
		t.Errorf("leaf renewed after %v, want when a third of its 3 s lifetime is left", d)
	}
}

// TestTrust runs `edge trust`: the root path and the commands are printed,
// and the printed commands work: the Chromium lines install the root into
// an NSS database (in a scratch HOME), the curl line fetches a page.
func TestTrust(t *testing.T) {
	t.Parallel()
	for _, tool := range []string{"certutil", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: the README test command installs it (apt-get install libnss3-tools curl)", tool)
		}
	}
	e := listen(t)
	cfg := e.parse(t, localYAML)
	var out bytes.Buffer
	if err := Trust(cfg, &out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	t.Log("\n" + text)
	rootPath := filepath.Join(e.dir, "storage", "ca", rootCertFile)
	for _, want := range []string{rootPath, "update-ca-certificates", "certutil -d sql:\"$HOME/.pki/nssdb\" -A", "--cacert", "SHA-256 fingerprint"} {
		if !strings.Contains(text, want) {
			t.Errorf("trust output lacks %q", want)
		}
	}

	home := t.TempDir()
	chromium := section(text, "Chromium")
	if len(chromium) != 3 {
		t.Fatalf("Chromium section has %d commands, want 3: %q", len(chromium), chromium)
	}
	for _, line := range chromium {
		cmd := exec.Command("sh", "-c", line)
		cmd.Env = append(os.Environ(), "HOME="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
	}
	list, err := exec.Command("certutil", "-L", "-d", "sql:"+filepath.Join(home, ".pki", "nssdb")).CombinedOutput()
	if err != nil || !strings.Contains(string(list), "edge local CA root") || !strings.Contains(string(list), "C,,") {
		t.Errorf("certutil -L after the printed commands: %v\n%s", err, list)
	}

	// The curl line names this configuration's https address; serve it.
	log, _ := newLogger(t)
	m := newManager(t, cfg, log)
	e.serve(t, m)
	curl := section(text, "curl")
	if len(curl) != 1 {
		t.Fatalf("curl section: %q", curl)
	}
	cmd := exec.Command("sh", "-c", curl[0]+" -sS --resolve localhost:"+itoa(e.httpsPort)+":127.0.0.1")
	got, err := cmd.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(got), "ok localhost") {
		t.Errorf("%s: %v\n%s", curl[0], err, got)
	}
}

// section returns the indented command lines under the heading that
// starts with title.
func section(text, title string) []string {
	var lines []string
	in := false
	for _, l := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(l, title):
			in = true
		case in && strings.HasPrefix(l, "  "):
			lines = append(lines, strings.TrimSpace(l))
		case in:
			return lines
		}
	}
	return lines
}
