package tls

import (
	cryptotls "crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"edge/config"
)

// snapshot is what handshakes and HTTP handlers read: the configuration
// turned into lookup tables. It is immutable once stored; the certificates
// in its slots change underneath (file reloads, leaf renewals) and Commit
// replaces the whole snapshot.
type snapshot struct {
	cfg       *config.Config
	exact     map[string]*entry // lower-case host or IP address
	wild      map[string]*entry // ".example.com" for a "*.example.com" host
	fallback  *entry            // served without SNI or for unknown names; nil: fail
	acme      map[string]bool   // names managed by certmagic
	acmeNames []string          // the same, sorted
	manual    []*manualCert
	leaves    []*localLeaf
	roots     *x509.CertPool // tls.ca_root; nil: system roots
	onDemand  *onDemand      // nil: off

	sites     *config.SiteIndex // request host -> position in siteInfos
	siteInfos []*siteInfo       // as cfg.Sites
}

// entry is one configured host name and where its certificate comes from.
type entry struct {
	name   string
	source config.CertSource
	slot   *certSlot // manual and local; nil for ACME
}

// certSlot holds the current certificate of a manual file pair or a local
// leaf; it is swapped atomically, so a handshake sees the old or the new
// certificate, never a mix.
type certSlot struct {
	atomic.Pointer[cryptotls.Certificate]
}

// siteInfo is what the HTTP handlers need of a site.
type siteInfo struct {
	redirect  bool
	hsts      string // header value for hosts with public certificates; "" off
	hstsLocal string // for hosts served by the local CA
}

// lookup returns the entry for a name: exact first, then a one-label
// wildcard, as certificates match.
func (s *snapshot) lookup(name string) *entry {
	if e := s.exact[name]; e != nil {
		return e
	}
	if i := strings.IndexByte(name, '.'); i > 0 {
		return s.wild[name[i:]]
	}
	return nil
}

// site returns the site for a request host, as the router picks it
// (config.SiteIndex), or nil.
func (s *snapshot) site(host string) *siteInfo {
	if i, ok := s.sites.Lookup(host); ok {
		return s.siteInfos[i]
	}
	return nil
}

// isLocal reports whether a request host is served by the local CA.
func (s *snapshot) isLocal(host string) bool {
	if e := s.exact[host]; e != nil {
		return e.source == config.SourceLocal
	}
	return s.cfg.TLS.IsLocalName(host)
}

// entries returns every entry once.
func (s *snapshot) entries() []*entry {
	out := make([]*entry, 0, len(s.exact)+len(s.wild))
	for _, e := range s.exact {
		out = append(out, e)
	}
	for _, e := range s.wild {
		out = append(out, e)
	}
	if s.fallback != nil && s.fallback.name == "*" {
		out = append(out, s.fallback) // the manual certificate of the site without hosts
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// build turns cfg into a snapshot, changing nothing that is served:
// manual certificates are read into the returned staged list, to be
// installed when the snapshot is published, and new local names get new
// leaves. Certificates of prev are reused where the configuration did not
// change them: local leaves (renewed in place when due, as maintain would)
// and the slots of manual certificates. Called with mu held, or from New.
func (m *Manager) build(cfg *config.Config, prev *snapshot) (*snapshot, []stagedCert, error) {
	roots, err := rootPool(cfg.TLS.CARoot)
	if err != nil {
		return nil, nil, err
	}
	s := &snapshot{
		cfg:   cfg,
		exact: map[string]*entry{},
		wild:  map[string]*entry{},
		acme:  map[string]bool{},
		roots: roots,
		sites: config.NewSiteIndex(cfg.Sites),
	}
	bs := &buildState{prevManual: map[string]*manualCert{}, prevLeaves: map[string]*localLeaf{}}
	if prev != nil {
		for _, mc := range prev.manual {
			bs.prevManual[mc.key()] = mc
		}
		for _, l := range prev.leaves {
			bs.prevLeaves[l.name] = l
		}
	}
	for i := range cfg.Sites {
		if err := m.addSite(s, &cfg.Sites[i], bs); err != nil {
			return nil, nil, err
		}
	}
	s.acmeNames = sortedKeys(s.acme)
	if d := config.HostName(cfg.TLS.DefaultCert); d != "" {
		if e := s.exact[d]; e != nil {
			s.fallback = e
		} else {
			return nil, nil, fmt.Errorf("tls.default_cert %q is not a host of any site", cfg.TLS.DefaultCert)
		}
	}
	if od := cfg.TLS.OnDemand; od != nil && cfg.Listen.HTTPS != "" {
		s.onDemand = newOnDemand(od, &cfg.TLS)
	}
	return s, bs.staged, nil
}

// buildState is what build carries from site to site.
type buildState struct {
	prevManual map[string]*manualCert // the previous snapshot's, by key
	prevLeaves map[string]*localLeaf  // the previous snapshot's, by name
	staged     []stagedCert           // read, not served yet
}

// addSite adds the hosts of site to s: for HTTP, its redirect and HSTS;
// with HTTPS on, where each host's certificate comes from.
func (m *Manager) addSite(s *snapshot, site *config.Site, bs *buildState) error {
	cfg := s.cfg
	https := cfg.Listen.HTTPS != ""
	var mc *manualCert
	if site.TLS != nil && https {
		var err error
		if mc, err = manualFor(site.TLS, bs, s); err != nil {
			return err
		}
	}
	si := &siteInfo{
		redirect:  site.HTTPRedirect != nil && *site.HTTPRedirect && https,
		hsts:      cfg.HSTSHeader(site, false),
		hstsLocal: cfg.HSTSHeader(site, true),
	}
	s.siteInfos = append(s.siteInfos, si)
	if len(site.Hosts) == 0 {
		if mc != nil {
			s.fallback = &entry{name: "*", source: config.SourceManual, slot: &mc.slot}
		}
	}
	for _, h := range site.Hosts {
		name := config.HostName(h)
		suffix, wild := strings.CutPrefix(name, "*")
		if !https {
			continue
		}
		e := &entry{name: name, source: cfg.CertSource(site, h)}
		switch e.source {
		case config.SourceManual:
			e.slot = &mc.slot
		case config.SourceLocal:
			l, err := m.leafFor(name, bs.prevLeaves, s)
			if err != nil {
				return err
			}
			e.slot = &l.slot
		case config.SourceACME:
			if wild && cfg.TLS.DNS == nil {
				continue // no DNS-01: only on-demand can serve it
			}
			s.acme[name] = true
		}
		if wild {
			s.wild[suffix] = e
		} else {
			s.exact[name] = e
		}
	}
	return nil
}

// manualFor returns the manual certificate of a site and stages its files,
// read again: a reused one keeps its slot, so that handshakes switch over
// at once when the snapshot is published.
func manualFor(t *config.SiteTLS, bs *buildState, s *snapshot) (*manualCert, error) {
	key := t.Cert + "\x00" + t.Key
	for _, mc := range s.manual {
		if mc.key() == key {
			return mc, nil
		}
	}
	mc := bs.prevManual[key]
	if mc == nil {
		mc = &manualCert{certFile: t.Cert, keyFile: t.Key}
	}
	sc, err := stageManual(mc)
	if err != nil {
		return nil, err
	}
	bs.staged = append(bs.staged, sc)
	s.manual = append(s.manual, mc)
	return mc, nil
}

// leafFor returns the local-CA leaf for name, issuing it if needed.
func (m *Manager) leafFor(name string, prev map[string]*localLeaf, s *snapshot) (*localLeaf, error) {
	l := prev[name]
	if l == nil {
		l = &localLeaf{name: name}
	}
	if l.due(m.opts.leafLifetime) {
		if err := m.issueLeaf(l); err != nil {
			if !m.sharedCA {
				return nil, err
			}
			// The CA is in Redis, which may come back: serve the rest,
			// maintain retries, Ready says why.
			m.log.Warn("local CA not available; retrying", "name", name, "err", err)
		}
	}
	s.leaves = append(s.leaves, l)
	return l, nil
}

// localLeaf is a certificate of the local CA for one name, in memory only.
type localLeaf struct {
	name string
	slot certSlot
}

// due reports whether the leaf is missing or has less than a third of
// lifetime left.
func (l *localLeaf) due(lifetime time.Duration) bool {
	c := l.slot.Load()
	return c == nil || time.Until(c.Leaf.NotAfter) < lifetime/3
}

// issueLeaf issues a new leaf for l from the local CA, opening (creating)
// the CA at first use. Called with mu held, or from New.
func (m *Manager) issueLeaf(l *localLeaf) error {
	if m.ca == nil {
		var ca *localCA
		var err error
		if m.sharedCA {
			// While Redis is known to be down, fail at once instead of
			// dialling again for every name; its return retries.
			if e := m.storageErr(); e != "" {
				return fmt.Errorf("local CA: tls storage in redis unreachable: %s", e)
			}
			if ca, err = openSharedLocalCA(m.storage); err != nil {
				m.setStorageHealth(err)
			}
		} else {
			ca, err = openLocalCA(filepath.Join(m.dir, "ca"))
		}
		if err != nil {
			return err
		}
		m.ca = ca
		m.log.Info("local CA ready", "root", ca.RootPath(), "hint", "run `edge trust` to install it")
	}
	c, err := m.ca.issue(l.name, m.opts.leafLifetime)
	if err != nil {
		m.log.Error("local CA could not issue a certificate", "name", l.name, "err", err)
		return err
	}
	renewal := l.slot.Load() != nil
	l.slot.Store(c)
	m.met.issued("local", renewal)
	m.log.Debug("local certificate issued", "name", l.name, "not_after", c.Leaf.NotAfter, "renewal", renewal)
	return nil
}

// onDemand decides which unlisted names may get a certificate at their
// first handshake, and paces issuance.
type onDemand struct {
	allow   []string // exact names and "*.example.com" patterns, lower case
	ask     string
	limiter *rate.Limiter
	tls     *config.TLS
}

func newOnDemand(od *config.OnDemand, t *config.TLS) *onDemand {
	allow := make([]string, len(od.Allow))
	for i, a := range od.Allow {
		allow[i] = config.HostName(a)
	}
	// A token bucket holding RateLimit issuances, refilled at RateLimit
	// per RateWindow: at most RateLimit in any burst, on average no more.
	every := od.RateWindow / time.Duration(max(od.RateLimit, 1))
	return &onDemand{allow: allow, ask: od.Ask, limiter: rate.NewLimiter(rate.Every(every), od.RateLimit), tls: t}
}
