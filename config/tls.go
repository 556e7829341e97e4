package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TLS configures certificates: ACME (certmagic), the local CA, HSTS.
type TLS struct {
	// Email is the ACME account contact; required for public CAs.
	Email string `yaml:"email"`
	// CA is letsencrypt (default), letsencrypt-staging, zerossl, internal
	// (a local CA for development) or an ACME directory URL.
	CA string `yaml:"ca"`
	// CARoot is a PEM file of roots to trust for the ACME directory
	// (step-ca, Pebble).
	CARoot string `yaml:"ca_root"`
	// Storage is where certificates, keys and ACME accounts are kept.
	// Default $STATE_DIRECTORY (systemd) or /var/lib/edge.
	Storage string `yaml:"storage"`
	// EAB is External Account Binding, for CAs that require it.
	EAB *EAB `yaml:"eab"`
	// HTTPChallenge enables ACME HTTP-01 on the http listener. Default true.
	HTTPChallenge *bool `yaml:"http_challenge"`
	// TLSALPNChallenge enables ACME TLS-ALPN-01 on the https listener.
	// Default true.
	TLSALPNChallenge *bool `yaml:"tls_alpn_challenge"`
	// OnDemand obtains certificates at the first handshake for names not
	// listed in sites. Default off.
	OnDemand *OnDemand `yaml:"on_demand"`
	// HSTS is the Strict-Transport-Security header on HTTPS responses.
	HSTS HSTS `yaml:"hsts"`
	// DefaultCert names a host whose certificate is served to clients that
	// send no SNI or an unknown name. Default none: the handshake fails.
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
	KeyID  string `yaml:"key_id"`
	MACKey string `yaml:"mac_key"`
}

// OnDemand configures certificates issued at the first handshake.
type OnDemand struct {
	// Allow lists host names or "*.example.com" patterns allowed.
	Allow []string `yaml:"allow"`
	// Ask is a URL queried with ?domain=NAME; 200 allows.
	Ask string `yaml:"ask"`
	// RateLimit is the number of issuances per RateWindow. Default 10.
	RateLimit int `yaml:"rate_limit"`
	// RateWindow default 1m.
	RateWindow time.Duration `yaml:"rate_window"`
}

// HSTS configures Strict-Transport-Security.
type HSTS struct {
	// Enabled; default true for ACME and manual certificates, false for the
	// local CA.
	Enabled *bool `yaml:"enabled"`
	// MaxAge default 365d.
	MaxAge time.Duration `yaml:"max_age"`
	// IncludeSubdomains default false.
	IncludeSubdomains bool `yaml:"include_subdomains"`
	// Preload default false.
	Preload bool `yaml:"preload"`
}

// SiteTLS is a manual certificate for a site.
type SiteTLS struct {
	// Cert is a PEM file with the certificate and its chain.
	Cert string `yaml:"cert"`
	// Key is the PEM private key.
	Key string `yaml:"key"`
}

var knownCAs = map[string]bool{"letsencrypt": true, "letsencrypt-staging": true, "zerossl": true, "internal": true}

func (v *validator) tls() {
	t := &v.c.TLS
	if !knownCAs[t.CA] {
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
	if t.CA != "internal" && t.Email == "" && v.c.Listen.HTTPS != "" && v.hasPublicHosts() {
		v.errf("tls.email", "an email is required for %s (the ACME account contact)", t.CA)
	}
	if t.CA == "zerossl" && t.EAB == nil && t.Email == "" {
		v.errf("tls.eab", "zerossl needs an email or eab credentials")
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
	}
	if !*t.HTTPChallenge && !*t.TLSALPNChallenge && t.CA != "internal" && v.hasPublicHosts() {
		v.errf("tls", "both ACME challenges are off: certificates cannot be obtained")
	}
}

func (v *validator) siteCert(path string, t *SiteTLS) {
	if t.Cert == "" || t.Key == "" {
		v.errf(path, "a manual certificate needs both cert and key")
		return
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		v.errf(path, "cannot load %s and %s: %v", t.Cert, t.Key, unwrapPathErr(err))
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
}

func (t *TLS) defaults(c *Config) {
	setStr(&t.CA, "letsencrypt")
	t.CARoot = c.resolve(t.CARoot)
	if t.Storage == "" {
		t.Storage = defaultStorage()
	} else {
		t.Storage = c.resolve(t.Storage)
	}
	setBool(&t.HTTPChallenge, true)
	setBool(&t.TLSALPNChallenge, true)
	setBool(&t.HSTS.Enabled, t.CA != "internal")
	setDur(&t.HSTS.MaxAge, 365*24*time.Hour)
	setDur(&t.RenewCheckInterval, 10*time.Minute)
	setDur(&t.ExpiryWarning, 14*24*time.Hour)
	if od := t.OnDemand; od != nil {
		if od.RateLimit == 0 {
			od.RateLimit = 10
		}
		setDur(&od.RateWindow, time.Minute)
	}
}

// defaultStorage is systemd's StateDirectory when run as a unit, the
// FHS location for root, and the user's data directory otherwise, so that a
// developer can run edge without root.

func defaultStorage() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
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
