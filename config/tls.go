package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// TLS configures certificates: ACME (certmagic), the local CA, HSTS.
type TLS struct {
	// Email is the ACME account contact. Required for letsencrypt and
	// letsencrypt-staging; zerossl needs it or eab; optional for a
	// directory URL.
	Email string `yaml:"email"`
	// CA is letsencrypt (default), letsencrypt-staging, zerossl, internal
	// (a local CA for development) or an ACME directory URL. Whatever it
	// is, localhost, *.localhost, IP addresses and (for the public CAs)
	// private names such as *.internal or *.test get certificates from the
	// local CA, since no public CA can issue for them.
	CA string `yaml:"ca"`
	// CARoot is a PEM file of roots to trust for the ACME directory
	// (step-ca, Pebble). Default: the system roots.
	CARoot string `yaml:"ca_root"`
	// Storage is where certificates, keys, ACME accounts and the local CA
	// are kept, with private permissions (0700 directories, 0600 keys).
	// Default $STATE_DIRECTORY (systemd), /var/lib/edge for root, else
	// $XDG_DATA_HOME/edge or ~/.local/share/edge. The word "redis"
	// (StorageRedis) keeps them in redis.url under redis.prefix instead,
	// shared by every node on that Redis, with the TLS session ticket
	// keys; a directory named redis is written ./redis.
	Storage string `yaml:"storage"`
	// EAB is External Account Binding, for CAs that require it.
	EAB *EAB `yaml:"eab"`
	// Profile is the ACME certificate profile to request, for CAs that
	// offer profiles (Let's Encrypt: classic, tlsserver, shortlived).
	// Default: none, the CA's default.
	Profile string `yaml:"profile"`
	// HTTPChallenge enables ACME HTTP-01 on the http listener. Default true
	// (it is off anyway when listen.http is "").
	HTTPChallenge *bool `yaml:"http_challenge"`
	// TLSALPNChallenge enables ACME TLS-ALPN-01 on the https listener.
	// Default true.
	TLSALPNChallenge *bool `yaml:"tls_alpn_challenge"`
	// DNS solves ACME challenges with DNS-01 through a hook or a webhook,
	// which is what wildcard hosts ("*.example.com") need. When set, every
	// ACME name uses DNS-01 (HTTP-01 and TLS-ALPN-01 are not tried).
	// Default none.
	DNS *DNS `yaml:"dns"`
	// OnDemand obtains certificates at the first handshake for names not
	// listed in sites. Default off.
	OnDemand *OnDemand `yaml:"on_demand"`
	// HSTS is the Strict-Transport-Security header on HTTPS responses.
	HSTS HSTS `yaml:"hsts"`
	// DefaultCert names a site host whose certificate is served to clients
	// that send no SNI or an unknown name. Default none: the handshake
	// fails, unless the site without hosts has a manual certificate.
	DefaultCert string `yaml:"default_cert"`
	// RenewCheckInterval is how often certificates are checked for renewal.
	// Default 10m.
	RenewCheckInterval time.Duration `yaml:"renew_check_interval"`
	// ExpiryWarning: manual certificates expiring within this produce a
	// warning. Default 14d.
	ExpiryWarning time.Duration `yaml:"expiry_warning"`
}

// EAB holds External Account Binding credentials.
type EAB struct {
	// KeyID is the key identifier the CA gave out.
	KeyID string `yaml:"key_id"`
	// MACKey is the base64url HMAC key the CA gave out.
	MACKey string `yaml:"mac_key"`
}

// DNS configures the ACME DNS-01 challenge. Exactly one of Exec and
// Webhook is set.
type DNS struct {
	// Exec is a program run as "EXEC present FQDN VALUE" to create the TXT
	// record FQDN ("_acme-challenge.example.com.") with VALUE, and as
	// "EXEC cleanup FQDN VALUE" to remove it: the interface of lego's exec
	// provider. Exit status 0 is success; stderr goes into the error.
	Exec string `yaml:"exec"`
	// Webhook is a URL: edge POSTs {"fqdn": FQDN, "value": VALUE} as JSON
	// to Webhook+"/present" and Webhook+"/cleanup"; a 2xx answer is
	// success.
	Webhook string `yaml:"webhook"`
	// Timeout bounds one hook run or webhook request; a hook still running
	// then is killed (with its process group). Default 1m.
	Timeout time.Duration `yaml:"timeout"`
	// PropagationTimeout is how long to wait for the TXT record to be
	// visible in DNS before asking the CA to check it (polled every 2 s).
	// Default 2m; a negative value skips the check.
	PropagationTimeout time.Duration `yaml:"propagation_timeout"`
	// Resolvers are the DNS servers ("host:port") used to find the zone
	// and check propagation. Default: those of /etc/resolv.conf, and the
	// zone's authoritative servers for the check.
	Resolvers []string `yaml:"resolvers"`
}

// OnDemand configures certificates issued at the first handshake.
type OnDemand struct {
	// Allow lists host names or "*.example.com" patterns allowed.
	Allow []string `yaml:"allow"`
	// Ask is a URL queried with ?domain=NAME; 200 allows.
	Ask string `yaml:"ask"`
	// RateLimit is the number of issuances per RateWindow. Default 10.
	RateLimit int `yaml:"rate_limit"`
	// RateWindow is the window of RateLimit. Default 1m.
	RateWindow time.Duration `yaml:"rate_window"`
}

// HSTS configures Strict-Transport-Security. In a site, keys that are not
// written inherit from tls.hsts.
type HSTS struct {
	// Enabled; default true for hosts with ACME or manual certificates,
	// false for hosts served by the local CA (ca: internal, localhost, IP
	// addresses): a browser would otherwise pin every port of localhost
	// to HTTPS.
	Enabled *bool `yaml:"enabled"`
	// MaxAge default 365d; 0 tells browsers to forget the policy.
	MaxAge time.Duration `yaml:"max_age"`
	// IncludeSubdomains default false.
	IncludeSubdomains bool `yaml:"include_subdomains"`
	// Preload default false.
	Preload bool `yaml:"preload"`
}

// SiteTLS is a manual certificate for a site.
type SiteTLS struct {
	// Cert is a PEM file with the certificate and its chain, leaf first.
	// It is re-read when it changes and on reload.
	Cert string `yaml:"cert"`
	// Key is the PEM private key.
	Key string `yaml:"key"`
}

// CertSource says where the certificate of a site host comes from.
type CertSource int

const (
	// SourceManual is the site's tls.cert and tls.key.
	SourceManual CertSource = iota + 1
	// SourceACME is the ACME CA of tls.ca, obtained and renewed by edge.
	SourceACME
	// SourceLocal is edge's local CA: ca internal, localhost, IP
	// addresses and names no public CA can issue for.
	SourceLocal
)

func (s CertSource) String() string {
	switch s {
	case SourceManual:
		return "manual"
	case SourceACME:
		return "acme"
	case SourceLocal:
		return "local"
	}
	return "none"
}

// StorageRedis as tls.storage keeps certificates in Redis.
const StorageRedis = "redis"

// RedisStorage reports whether certificates are kept in Redis.
func (t *TLS) RedisStorage() bool { return t.Storage == StorageRedis }

// publicCAs are the CA presets; they issue for public names only.
var publicCAs = map[string]string{
	"letsencrypt":         "https://acme-v02.api.letsencrypt.org/directory",
	"letsencrypt-staging": "https://acme-staging-v02.api.letsencrypt.org/directory",
	"zerossl":             "https://acme.zerossl.com/v2/DV90",
}

// DirectoryURL returns the ACME directory of tls.ca ("" for internal).
func (t *TLS) DirectoryURL() string {
	if u, ok := publicCAs[t.CA]; ok {
		return u
	}
	if t.CA == "internal" {
		return ""
	}
	return t.CA
}

// IsLocalName reports whether host (a name, "*.name" or an IP address)
// gets its certificate from the local CA rather than the ACME CA: always
// with ca internal; for localhost, *.localhost and IP addresses; and, with
// a public CA, for private names (see isPublicName). A directory URL may
// be a private CA (step-ca) that issues for private names, so only
// localhost and IP addresses stay local with it.
func (t *TLS) IsLocalName(host string) bool {
	switch t.CA {
	case "internal":
		return true
	case "letsencrypt", "letsencrypt-staging", "zerossl":
		return !isPublicName(host)
	}
	h := strings.ToLower(strings.TrimPrefix(host, "*."))
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

// CertSource says where the certificate for host, one of s.Hosts, comes
// from.
func (c *Config) CertSource(s *Site, host string) CertSource {
	switch {
	case s.TLS != nil:
		return SourceManual
	case c.TLS.IsLocalName(host):
		return SourceLocal
	}
	return SourceACME
}

// HSTSHeader returns the Strict-Transport-Security value for requests to
// site s, or "" when HSTS is off. local says the request's host is served
// by the local CA. Settings written in the site win over tls.hsts, which
// wins over the default (on, except for local names).
func (c *Config) HSTSHeader(s *Site, local bool) string {
	prefix := c.sitePath(s) + ".hsts."
	g := c.TLS.HSTS
	pick := func(key string) *HSTS {
		if s.HSTS != nil && c.written(prefix+key) {
			return s.HSTS
		}
		return &g
	}
	on := !local
	if c.written("tls.hsts.enabled") && g.Enabled != nil {
		on = *g.Enabled
	}
	if s.HSTS != nil && s.HSTS.Enabled != nil && c.written(prefix+"enabled") {
		on = *s.HSTS.Enabled
	}
	if !on {
		return ""
	}
	v := "max-age=" + strconv.FormatInt(int64(pick("max_age").MaxAge/time.Second), 10)
	if pick("include_subdomains").IncludeSubdomains {
		v += "; includeSubDomains"
	}
	if pick("preload").Preload {
		v += "; preload"
	}
	return v
}

// DefaultHSTSMaxAge is the HSTS max-age when none is written: one year.
const DefaultHSTSMaxAge = 365 * 24 * time.Hour

// sitePath returns "sites[i]" for s, a pointer into c.Sites.
func (c *Config) sitePath(s *Site) string {
	for i := range c.Sites {
		if &c.Sites[i] == s {
			return fmt.Sprintf("sites[%d]", i)
		}
	}
	return "sites[?]"
}

// usesACME reports whether anything needs the ACME CA.
func (c *Config) usesACME() bool {
	if c.TLS.CA == "internal" || c.Listen.HTTPS == "" {
		return false
	}
	if c.TLS.OnDemand != nil {
		return true
	}
	for i := range c.Sites {
		for _, h := range c.Sites[i].Hosts {
			if c.CertSource(&c.Sites[i], h) == SourceACME {
				return true
			}
		}
	}
	return false
}

// firstACMEHost returns the key path of the first host that needs ACME,
// to point a problem about the missing tls section at a line.
func (c *Config) firstACMEHost() string {
	for i := range c.Sites {
		for j, h := range c.Sites[i].Hosts {
			if c.CertSource(&c.Sites[i], h) == SourceACME {
				return fmt.Sprintf("sites[%d].hosts[%d]", i, j)
			}
		}
	}
	return "tls"
}

// errAt reports a problem about key path at the position of posPath.
func (v *validator) errAt(posPath, path, format string, args ...any) {
	p := v.c.Pos(posPath)
	v.probs = append(v.probs, Problem{
		File: v.c.fileOf(posPath), Line: p.Line, Col: p.Col, Path: path,
		Msg: fmt.Sprintf(format, args...),
	})
}

func (v *validator) tls() {
	c := v.c
	t := &c.TLS
	if _, preset := publicCAs[t.CA]; !preset && t.CA != "internal" {
		u, err := url.Parse(t.CA)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			v.errf("tls.ca", "unknown CA %q: want letsencrypt, letsencrypt-staging, zerossl, internal or an https:// ACME directory URL", t.CA)
		}
	}
	if t.CARoot != "" {
		v.pemCerts("tls.ca_root", t.CARoot)
	}
	if t.Email != "" && !strings.Contains(t.Email, "@") {
		v.errf("tls.email", "invalid email %q", t.Email)
	}
	if c.usesACME() && t.Email == "" {
		pos := "tls.email"
		if !c.written("tls") {
			pos = c.firstACMEHost()
		}
		switch t.CA {
		case "letsencrypt", "letsencrypt-staging":
			v.errAt(pos, "tls.email", "an email is required for %s (the ACME account contact, told about expiring certificates)", t.CA)
		case "zerossl":
			if t.EAB == nil {
				v.errAt(pos, "tls.email", "zerossl needs an email (to get EAB credentials) or tls.eab")
			}
		}
	}
	if t.RedisStorage() && c.Redis == nil {
		v.errf("tls.storage", "storage redis needs the redis section (redis.url): certificates are kept there, under redis.prefix")
	}
	if t.EAB != nil && (t.EAB.KeyID == "" || t.EAB.MACKey == "") {
		v.errf("tls.eab", "eab needs key_id and mac_key")
	}
	if od := t.OnDemand; od != nil {
		if len(od.Allow) == 0 && od.Ask == "" {
			v.errf("tls.on_demand", "on-demand TLS needs an allow list or an ask URL, or anyone could make edge request certificates")
		}
		for i, h := range od.Allow {
			v.hostName(fmt.Sprintf("tls.on_demand.allow[%d]", i), h)
		}
		if od.Ask != "" {
			v.httpURL("tls.on_demand.ask", od.Ask)
		}
		if od.RateLimit < 0 {
			v.errf("tls.on_demand.rate_limit", "must not be negative")
		}
		if t.CA == "internal" {
			v.errf("tls.on_demand", "on-demand TLS needs an ACME CA, not ca internal")
		}
	}
	if t.DNS != nil {
		v.dns(t.DNS)
	} else if !*t.HTTPChallenge && !*t.TLSALPNChallenge && c.usesACME() {
		v.errf("tls", "both ACME challenges are off: certificates cannot be obtained (turn one on, or set tls.dns for DNS-01)")
	}
	v.wildcardHosts()
	if t.DefaultCert != "" && !v.isExactHost(t.DefaultCert) {
		v.errf("tls.default_cert", "%q is not a host of any site (wildcards are not allowed here)", t.DefaultCert)
	}
}

// dns checks tls.dns.
func (v *validator) dns(d *DNS) {
	switch {
	case d.Exec == "" && d.Webhook == "":
		v.errf("tls.dns", "set exec (a hook program) or webhook (a URL)")
	case d.Exec != "" && d.Webhook != "":
		v.errf("tls.dns", "set exec or webhook, not both")
	case d.Exec != "":
		if st, err := os.Stat(d.Exec); err != nil {
			v.errf("tls.dns.exec", "cannot run %s: %v", d.Exec, unwrapPathErr(err))
		} else if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			v.errf("tls.dns.exec", "%s is not an executable file (chmod +x)", d.Exec)
		}
	default:
		v.httpURL("tls.dns.webhook", d.Webhook)
	}
	if d.Timeout < 0 {
		v.errf("tls.dns.timeout", "must not be negative")
	}
	for i, r := range d.Resolvers {
		if _, _, err := net.SplitHostPort(r); err != nil {
			v.errf(fmt.Sprintf("tls.dns.resolvers[%d]", i), "%q is not host:port (a DNS server, e.g. 1.1.1.1:53)", r)
		}
	}
}

// wildcardHosts refuses "*.example.com" hosts that would need ACME: a
// public CA issues wildcards only over DNS-01, so they need tls.dns.
func (v *validator) wildcardHosts() {
	c := v.c
	if c.Listen.HTTPS == "" || c.TLS.OnDemand != nil || c.TLS.DNS != nil {
		return
	}
	for i := range c.Sites {
		s := &c.Sites[i]
		for j, h := range s.Hosts {
			if strings.HasPrefix(h, "*.") && c.CertSource(s, h) == SourceACME {
				v.errf(fmt.Sprintf("sites[%d].hosts[%d]", i, j),
					"wildcard %q needs the ACME DNS-01 challenge: set tls.dns (a hook or webhook that sets TXT records), give the site a manual certificate (tls.cert, tls.key), list the names, or use tls.on_demand with an allow list", h)
			}
		}
	}
}

func (v *validator) isExactHost(name string) bool {
	for _, s := range v.c.Sites {
		for _, h := range s.Hosts {
			if strings.EqualFold(h, name) && !strings.HasPrefix(h, "*.") {
				return true
			}
		}
	}
	return false
}

// siteCert checks a manual certificate as nginx -t would, and more:
// unreadable files, a key that does not match, expiry (error) and expiry
// soon, missing chain, names not covered, a world-readable key (warnings).
func (v *validator) siteCert(path string, t *SiteTLS) {
	if t.Cert == "" || t.Key == "" {
		v.errf(path, "a manual certificate needs both cert and key")
		return
	}
	certPEM, err := os.ReadFile(t.Cert)
	if err != nil {
		v.errf(path+".cert", "cannot read %s: %v", t.Cert, unwrapPathErr(err))
	}
	keyPEM, kerr := os.ReadFile(t.Key)
	if kerr != nil {
		v.errf(path+".key", "cannot read %s: %v", t.Key, unwrapPathErr(kerr))
	}
	if err != nil || kerr != nil {
		return
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		v.errf(path, "%s and %s: %v", t.Cert, t.Key, err)
		return
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			v.errf(path+".cert", "%s: %v", t.Cert, err)
			return
		}
	}
	now := time.Now()
	switch left := leaf.NotAfter.Sub(now); {
	case left <= 0:
		v.errf(path+".cert", "%s expired on %s", t.Cert, leaf.NotAfter.UTC().Format(time.DateOnly))
	case left < v.c.TLS.ExpiryWarning:
		v.warnf(path+".cert", "%s expires in %d days (%s)", t.Cert, int(left.Hours()/24), leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	if leaf.NotBefore.After(now) {
		v.errf(path+".cert", "%s is not valid before %s", t.Cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	if !chainComplete(leaf, cert.Certificate[1:]) {
		v.warnf(path+".cert", "%s holds no intermediate certificate for issuer %q: clients that do not have it cached will fail to verify (put the chain after the certificate, as fullchain.pem)", t.Cert, leaf.Issuer.CommonName)
	}
	if st, err := os.Stat(t.Key); err == nil && st.Mode().Perm()&0o004 != 0 {
		v.warnf(path+".key", "%s is readable by every user (mode %04o): chmod 600 or 640", t.Key, st.Mode().Perm())
	}
	v.certCovers(path, leaf)
}

// certCovers warns about site hosts the manual certificate is not valid for.
func (v *validator) certCovers(path string, leaf *x509.Certificate) {
	sitePath := strings.TrimSuffix(path, ".tls")
	for i := range v.c.Sites {
		s := &v.c.Sites[i]
		if v.c.sitePath(s) != sitePath {
			continue
		}
		for j, h := range s.Hosts {
			probe := h
			if rest, ok := strings.CutPrefix(h, "*."); ok {
				probe = "edge-probe." + rest
			}
			if leaf.VerifyHostname(probe) != nil {
				v.warnf(fmt.Sprintf("%s.hosts[%d]", sitePath, j), "the certificate in %s is not valid for %q (it covers %s)", s.TLS.Cert, h, strings.Join(certNames(leaf), ", "))
			}
		}
	}
}

func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	return names
}

// chainComplete reports whether leaf is self-signed or its issuer is among
// the certificates that follow it.
func chainComplete(leaf *x509.Certificate, rest [][]byte) bool {
	if leaf.CheckSignatureFrom(leaf) == nil {
		return true
	}
	for _, der := range rest {
		c, err := x509.ParseCertificate(der)
		if err == nil && leaf.CheckSignatureFrom(c) == nil {
			return true
		}
	}
	return false
}

func (t *TLS) defaults(c *Config) {
	setStr(&t.CA, "letsencrypt")
	t.CARoot = c.resolve(t.CARoot)
	if t.Storage == "" {
		t.Storage = defaultStorage()
	} else if !t.RedisStorage() {
		t.Storage = c.resolve(t.Storage)
	}
	setBool(&t.HTTPChallenge, true)
	setBool(&t.TLSALPNChallenge, true)
	setBool(&t.HSTS.Enabled, t.CA != "internal")
	if !c.written("tls.hsts.max_age") {
		t.HSTS.MaxAge = DefaultHSTSMaxAge
	}
	setDur(&t.RenewCheckInterval, 10*time.Minute)
	setDur(&t.ExpiryWarning, 14*24*time.Hour)
	if d := t.DNS; d != nil {
		d.Exec = c.resolve(d.Exec)
		d.Webhook = strings.TrimSuffix(d.Webhook, "/")
		setDur(&d.Timeout, time.Minute)
		setDur(&d.PropagationTimeout, 2*time.Minute)
	}
	if od := t.OnDemand; od != nil {
		if od.RateLimit == 0 {
			od.RateLimit = 10
		}
		setDur(&od.RateWindow, time.Minute)
	}
	for i := range c.Sites {
		s := &c.Sites[i]
		// Redirect to HTTPS only where HTTPS can answer: a site without
		// hosts gets unknown names, which have no certificate unless one
		// is configured for them.
		can := c.Listen.HTTPS != ""
		if len(s.Hosts) == 0 {
			can = can && (s.TLS != nil || t.DefaultCert != "" || t.OnDemand != nil)
		}
		setBool(&s.HTTPRedirect, can)
	}
}

// defaultStorage is systemd's StateDirectory when run as a unit, the
// FHS location for root, and the user's data directory otherwise, so that a
// developer can run edge without root.
func defaultStorage() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		// systemd may pass several, separated by colons.
		d, _, _ = strings.Cut(d, ":")
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/edge"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "edge")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "edge")
	}
	return "/var/lib/edge"
}
