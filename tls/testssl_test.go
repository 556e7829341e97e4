package tls

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testsslCertFindings are testssl findings about the test certificate's
// own content (a short-lived leaf of a CA without OCSP or CRL), not about
// how edge serves TLS.
var testsslCertFindings = map[string]bool{
	"cert_revocation":       true, // "Neither CRL nor OCSP URI provided"
	"cert_expirationStatus": true, // "expires < 30 days"
	"cert_notAfter":         true, // the date of that short expiry, rated like it
	"cert_validityPeriod":   true,
}

type testsslFinding struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
	Finding  string `json:"finding"`
}

// TestTestssl runs testssl.sh (protocols, server defaults, headers,
// vulnerabilities) against an HTTPS server using Manager.TLSConfig with
// HSTS on, as a public-CA site has it: no finding may be MEDIUM or worse,
// except those about the test certificate itself.
func TestTestssl(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("testssl"); err != nil {
		t.Fatal("testssl not found: the README test command installs it (apt-get install testssl.sh)")
	}
	e := listen(t)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { ca: internal, storage: "{dir}/storage", hsts: { enabled: true, max_age: 730d, include_subdomains: true } }
sites:
  - hosts: [127.0.0.1, localhost]
    routes: [{ path: /, static: { root: . } }]
`), log)
	e.serve(t, m)

	report := filepath.Join(t.TempDir(), "testssl.json")
	root := filepath.Join(e.dir, "storage", "ca", rootCertFile)
	start := time.Now()
	cmd := exec.Command("testssl", "--quiet", "--color", "0", "--warnings", "off", "--nodns", "min",
		"--add-ca", root, "-p", "-S", "-h", "-U", "--jsonfile", report, "https://127.0.0.1:"+itoa(e.httpsPort)+"/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("testssl: %v\n%s", err, out)
	}
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var findings []testsslFinding
	if err := json.Unmarshal(data, &findings); err != nil {
		t.Fatal(err)
	}
	var bad, certOnly []string
	for _, f := range findings {
		switch f.Severity {
		case "OK", "INFO", "LOW", "DEBUG":
			continue
		}
		line := f.Severity + " " + f.ID + ": " + f.Finding
		if testsslCertFindings[f.ID] {
			certOnly = append(certOnly, line)
			continue
		}
		bad = append(bad, line)
	}
	t.Logf("testssl in %v: %d findings; about the test certificate only: %q", time.Since(start).Round(100*time.Millisecond), len(findings), certOnly)
	for _, f := range findings {
		if f.Severity == "LOW" {
			t.Logf("LOW %s: %s", f.ID, f.Finding)
		}
	}
	if len(bad) > 0 {
		t.Errorf("testssl findings MEDIUM or worse:\n%s", strings.Join(bad, "\n"))
	}
	if len(findings) < 50 {
		t.Errorf("only %d findings: did testssl run its checks?\n%s", len(findings), out)
	}
}
