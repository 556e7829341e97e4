package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// testPKI writes PEM files for TLS tests: a CA and leaves it signs.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &testPKI{dir: t.TempDir(), ca: ca, caKey: key, serial: 1}
}

// leaf writes name.crt (with the CA after the leaf when chain is set) and
// name.key, valid from notBefore to notAfter, and returns their paths.
func (p *testPKI) leaf(t *testing.T, file string, names []string, notBefore, notAfter time.Time, chain bool) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.ca.Raw})...)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile := filepath.Join(p.dir, file+".crt"), filepath.Join(p.dir, file+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// problems parses yaml as edge.yaml and returns its errors and warnings,
// one string each, with the file name as written.
func parseProblems(t *testing.T, yaml string) (errs, warns []string) {
	t.Helper()
	p := writeConfig(t, yaml)
	c, err := Load(p)
	if err != nil {
		for _, pr := range problemsOf(t, err) {
			errs = append(errs, strings.ReplaceAll(pr.String(), p, "edge.yaml"))
		}
		return errs, nil
	}
	for _, w := range c.Warnings {
		warns = append(warns, strings.ReplaceAll(w.String(), p, "edge.yaml"))
	}
	return nil, warns
}

// hasLine reports whether a line contains want, where "{n}" in want
// stands for a number (a column that depends on a temporary path's length).
func hasLine(lines []string, want string) bool {
	re := regexp.MustCompile(strings.ReplaceAll(regexp.QuoteMeta(want), `\{n\}`, `\d+`))
	for _, l := range lines {
		if re.MatchString(l) {
			return true
		}
	}
	return false
}

// TestTLSBadInput checks that each mistake is reported with file:line:col
// and its key path.
func TestTLSBadInput(t *testing.T) {
	pki := newTestPKI(t)
	now := time.Now()
	good, goodKey := pki.leaf(t, "good", []string{"dash.example.com"}, now.Add(-time.Hour), now.Add(90*24*time.Hour), true)
	other, _ := pki.leaf(t, "other", []string{"dash.example.com"}, now.Add(-time.Hour), now.Add(90*24*time.Hour), true)
	expired, expiredKey := pki.leaf(t, "expired", []string{"dash.example.com"}, now.Add(-48*time.Hour), now.Add(-time.Hour), true)
	site := func(hosts, extra string) string {
		return fmt.Sprintf("sites:\n  - hosts: [%s]\n%s    routes: [{ path: /, static: { root: www } }]\n", hosts, extra)
	}
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"unknown ca", "tls:\n  ca: letsencrypt-prod\n  email: a@example.com\n" + site("dash.example.com", ""),
			`edge.yaml:2:3: tls.ca: unknown CA "letsencrypt-prod"`},
		{"ca not https", "tls:\n  ca: http://acme.internal/dir\n" + site("dash.example.com", ""),
			`edge.yaml:2:3: tls.ca: unknown CA "http://acme.internal/dir"`},
		{"missing email", "tls:\n  storage: /tmp\n" + site("dash.example.com", ""),
			`edge.yaml:1:1: tls.email: an email is required for letsencrypt`},
		{"missing email, no tls section", site("dash.example.com", ""),
			`edge.yaml:2:13: tls.email: an email is required for letsencrypt`},
		{"zerossl without email nor eab", "tls: { ca: zerossl }\n" + site("dash.example.com", ""),
			`tls.email: zerossl needs an email (to get EAB credentials) or tls.eab`},
		{"invalid host", "tls: { email: a@example.com }\n" + site(`"dash..example.com"`, ""),
			`edge.yaml:3:13: sites[0].hosts[0]: invalid host name "dash..example.com"`},
		{"catch-all host", "tls: { email: a@example.com }\n" + site(`"_"`, ""),
			`edge.yaml:3:13: sites[0].hosts[0]: invalid host name "_": a site without hosts is the default site, leave hosts out`},
		{"unreadable key", site("dash.example.com", "    tls: { cert: "+good+", key: /nonexistent/dash.key }\n"),
			`edge.yaml:3:{n}: sites[0].tls.key: cannot read /nonexistent/dash.key: no such file or directory`},
		{"key is a directory", site("dash.example.com", "    tls: { cert: "+good+", key: "+pki.dir+" }\n"),
			`sites[0].tls.key: cannot read ` + pki.dir + `: is a directory`},
		{"key mismatch", site("dash.example.com", "    tls: { cert: "+other+", key: "+goodKey+" }\n"),
			`edge.yaml:3:5: sites[0].tls: ` + other + ` and ` + goodKey + `: tls: private key does not match public key`},
		{"expired", site("dash.example.com", "    tls: { cert: "+expired+", key: "+expiredKey+" }\n"),
			`sites[0].tls.cert: ` + expired + ` expired on`},
		{"wildcard needs DNS-01", "tls: { email: a@example.com }\n" + site(`"*.example.com"`, ""),
			`edge.yaml:3:13: sites[0].hosts[0]: wildcard "*.example.com" needs the ACME DNS-01 challenge`},
		{"dns without exec or webhook", "tls:\n  email: a@example.com\n  dns: { timeout: 5s }\n" + site(`"*.example.com"`, ""),
			`edge.yaml:3:3: tls.dns: set exec (a hook program) or webhook (a URL)`},
		{"dns exec and webhook", "tls:\n  email: a@example.com\n  dns: { exec: /bin/true, webhook: \"http://127.0.0.1:1\" }\n" + site(`"*.example.com"`, ""),
			`edge.yaml:3:3: tls.dns: set exec or webhook, not both`},
		{"dns exec missing", "tls:\n  email: a@example.com\n  dns:\n    exec: /nonexistent/hook\n" + site(`"*.example.com"`, ""),
			`edge.yaml:4:5: tls.dns.exec: cannot run /nonexistent/hook: no such file or directory`},
		{"dns exec not executable", "tls:\n  email: a@example.com\n  dns:\n    exec: " + good + "\n" + site(`"*.example.com"`, ""),
			`edge.yaml:4:5: tls.dns.exec: ` + good + ` is not an executable file (chmod +x)`},
		{"dns webhook not a URL", "tls:\n  email: a@example.com\n  dns:\n    webhook: ftp://x\n" + site(`"*.example.com"`, ""),
			`edge.yaml:4:5: tls.dns.webhook: invalid URL "ftp://x"`},
		{"dns resolver without port", "tls:\n  email: a@example.com\n  dns:\n    exec: /bin/true\n    resolvers: [1.1.1.1]\n" + site(`"*.example.com"`, ""),
			`edge.yaml:5:17: tls.dns.resolvers[0]: "1.1.1.1" is not host:port`},
		{"http3 without https", "listen: { http: \":8080\", https: \"\", http3: true }\n" + site("localhost", ""),
			`edge.yaml:1:37: listen.http3: HTTP/3 runs on the https address over UDP: set listen.https`},
		{"default_cert unknown", "tls: { email: a@example.com, default_cert: nope.example.com }\n" + site("dash.example.com", ""),
			`tls.default_cert: "nope.example.com" is not a host of any site`},
		{"on_demand open to anyone", "tls: { email: a@example.com, on_demand: { rate_limit: 5 } }\n" + site("dash.example.com", ""),
			`tls.on_demand: on-demand TLS needs an allow list or an ask URL`},
		{"on_demand with internal", "tls: { ca: internal, on_demand: { allow: [a.example.com] } }\n" + site("localhost", ""),
			`tls.on_demand: on-demand TLS needs an ACME CA`},
		{"storage redis without redis", "tls:\n  email: a@example.com\n  storage: redis\n" + site("dash.example.com", ""),
			`edge.yaml:3:3: tls.storage: storage redis needs the redis section (redis.url)`},
		{"both challenges off", "tls: { email: a@example.com, http_challenge: false, tls_alpn_challenge: false }\n" + site("dash.example.com", ""),
			`tls: both ACME challenges are off`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs, _ := parseProblems(t, tc.yaml)
			if !hasLine(errs, tc.want) {
				t.Errorf("errors:\n%s\nwant a line containing %q", strings.Join(errs, "\n"), tc.want)
			}
		})
	}
}

// TestTLSGoodInput checks configurations that must load, and their
// warnings.
func TestTLSGoodInput(t *testing.T) {
	pki := newTestPKI(t)
	now := time.Now()
	soon, soonKey := pki.leaf(t, "soon", []string{"dash.example.com"}, now.Add(-time.Hour), now.Add(5*24*time.Hour), true)
	bare, bareKey := pki.leaf(t, "bare", []string{"dash.example.com"}, now.Add(-time.Hour), now.Add(90*24*time.Hour), false)
	narrow, narrowKey := pki.leaf(t, "narrow", []string{"www.example.com"}, now.Add(-time.Hour), now.Add(90*24*time.Hour), true)
	wild, wildKey := pki.leaf(t, "wild", []string{"*.example.com"}, now.Add(-time.Hour), now.Add(90*24*time.Hour), true)
	if err := os.Chmod(wildKey, 0o644); err != nil {
		t.Fatal(err)
	}
	site := func(hosts, extra string) string {
		return fmt.Sprintf("sites:\n  - hosts: [%s]\n%s    routes: [{ path: /, static: { root: www } }]\n", hosts, extra)
	}
	for _, tc := range []struct {
		name, yaml string
		warn       []string
	}{
		{"expires soon", site("dash.example.com", "    tls: { cert: "+soon+", key: "+soonKey+" }\n"),
			[]string{"warning: sites[0].tls.cert: " + soon + " expires in 4 days"}},
		{"no chain", site("dash.example.com", "    tls: { cert: "+bare+", key: "+bareKey+" }\n"),
			[]string{"holds no intermediate certificate for issuer \"test CA\""}},
		{"name not covered", site("dash.example.com, www.example.com", "    tls: { cert: "+narrow+", key: "+narrowKey+" }\n"),
			[]string{`edge.yaml:2:13: warning: sites[0].hosts[0]: the certificate in ` + narrow + ` is not valid for "dash.example.com" (it covers www.example.com)`}},
		{"wildcard manual, key readable by all", site(`"*.example.com", a.example.com`, "    tls: { cert: "+wild+", key: "+wildKey+" }\n"),
			[]string{"sites[0].tls.key: " + wildKey + " is readable by every user (mode 0644)"}},
		{"directory URL needs no email", "tls: { ca: \"https://step.internal/acme/dir\" }\n" + site("svc.internal", ""), nil},
		{"zerossl with eab only", "tls: { ca: zerossl, eab: { key_id: k, mac_key: m } }\n" + site("dash.example.com", ""), nil},
		{"local names need no email", site("localhost, 127.0.0.1, app.test", ""), nil},
		{"wildcard with dns", "tls: { email: a@example.com, dns: { exec: /bin/true, propagation_timeout: 30s } }\n" + site(`"*.example.com", example.com`, ""), nil},
		{"http3 with https", "listen: { https: \":8443\", http3: true }\n" + site("localhost", ""), nil},
		{"wildcard with on_demand", "tls: { email: a@example.com, on_demand: { allow: [\"*.example.com\"] } }\n" + site(`"*.example.com"`, ""), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs, warns := parseProblems(t, tc.yaml)
			if len(errs) > 0 {
				t.Fatalf("unexpected errors:\n%s", strings.Join(errs, "\n"))
			}
			for _, w := range tc.warn {
				if !hasLine(warns, w) {
					t.Errorf("warnings:\n%s\nwant a line containing %q", strings.Join(warns, "\n"), w)
				}
			}
			if tc.warn == nil && len(warns) > 0 {
				t.Errorf("unexpected warnings:\n%s", strings.Join(warns, "\n"))
			}
		})
	}
}

// TestCertSource checks which CA serves which host.
func TestCertSource(t *testing.T) {
	for _, tc := range []struct {
		ca, host string
		local    bool
	}{
		{"letsencrypt", "dash.example.com", false},
		{"letsencrypt", "*.example.com", false},
		{"letsencrypt", "localhost", true},
		{"letsencrypt", "app.localhost", true},
		{"letsencrypt", "127.0.0.1", true},
		{"letsencrypt", "::1", true},
		{"letsencrypt", "svc.internal", true},
		{"letsencrypt", "printer", true},
		{"zerossl", "dash.example.com", false},
		{"internal", "dash.example.com", true},
		{"https://ca.internal/dir", "svc.internal", false},
		{"https://ca.internal/dir", "printer", false},
		{"https://ca.internal/dir", "localhost", true},
		{"https://ca.internal/dir", "10.0.0.1", true},
	} {
		tt := &TLS{CA: tc.ca}
		if got := tt.IsLocalName(tc.host); got != tc.local {
			t.Errorf("ca %s: IsLocalName(%q) = %v, want %v", tc.ca, tc.host, got, tc.local)
		}
	}
}

// TestHSTSHeader checks the header value: defaults, tls.hsts, site
// overrides of single keys.
func TestHSTSHeader(t *testing.T) {
	p := writeConfig(t, `
tls:
  email: a@example.com
  hsts: { max_age: 30d, include_subdomains: true }
sites:
  - hosts: [a.example.com]
    routes: [{ path: /, static: { root: www } }]
  - hosts: [b.example.com]
    hsts: { preload: true }
    routes: [{ path: /, static: { root: www } }]
  - hosts: [c.example.com]
    hsts: { enabled: false }
    routes: [{ path: /, static: { root: www } }]
  - hosts: [d.example.com]
    hsts: { max_age: 0 }
    routes: [{ path: /, static: { root: www } }]
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{
		"max-age=2592000; includeSubDomains",
		"max-age=2592000; includeSubDomains; preload",
		"",
		"max-age=0; includeSubDomains",
	} {
		if got := c.HSTSHeader(&c.Sites[i], false); got != want {
			t.Errorf("site %d: HSTS %q, want %q", i, got, want)
		}
	}
	if got := c.HSTSHeader(&c.Sites[0], true); got != "" {
		t.Errorf("local name: HSTS %q, want off by default", got)
	}

	p = writeConfig(t, "tls: { ca: internal }\nsites:\n  - hosts: [localhost]\n    routes: [{ path: /, static: { root: www } }]\n")
	if c, err = Load(p); err != nil {
		t.Fatal(err)
	}
	if got := c.HSTSHeader(&c.Sites[0], true); got != "" {
		t.Errorf("ca internal: HSTS %q, want off", got)
	}
	p = writeConfig(t, "tls: { ca: internal, hsts: { enabled: true } }\nsites:\n  - hosts: [localhost]\n    routes: [{ path: /, static: { root: www } }]\n")
	if c, err = Load(p); err != nil {
		t.Fatal(err)
	}
	if got := c.HSTSHeader(&c.Sites[0], true); got != "max-age=31536000" {
		t.Errorf("ca internal with hsts enabled: HSTS %q", got)
	}
}

// TestHTTPRedirectDefault: on for sites with hosts when HTTPS is on; off
// for the site without hosts unless something can serve unknown names.
func TestHTTPRedirectDefault(t *testing.T) {
	p := writeConfig(t, `
tls: { ca: internal }
sites:
  - hosts: [localhost]
    routes: [{ path: /, static: { root: www } }]
  - routes: [{ path: /, static: { root: www } }]
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if !*c.Sites[0].HTTPRedirect || *c.Sites[1].HTTPRedirect {
		t.Errorf("http_redirect = %v, %v; want true for localhost, false for the default site", *c.Sites[0].HTTPRedirect, *c.Sites[1].HTTPRedirect)
	}
}
