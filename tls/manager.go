// Package tls gives edge automatic HTTPS: certificates from an ACME CA
// (certmagic: issuance, renewal, OCSP stapling, on-demand TLS), manual
// certificates reloaded when their files change, a local CA for
// development names, the HTTP→HTTPS redirect with ACME HTTP-01, and HSTS.
//
// The package is named after its job, next to crypto/tls; inside it,
// crypto/tls is imported as cryptotls, and callers that need both import
// this one as edgetls.
package tls

import (
	"cmp"
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"edge/config"
	"edge/internal/redisconn"
)

// ErrClosed is returned by Run, Prepare and Update after Close.
var ErrClosed = errors.New("tls: manager closed")

// DefaultPollInterval is how often manual certificate files are checked
// for changes and local-CA leaves for renewal.
const DefaultPollInterval = 5 * time.Second

// Option changes a default of New.
type Option func(*options)

type options struct {
	storage      certmagic.Storage
	pollInterval time.Duration
	leafLifetime time.Duration
	ocspInterval time.Duration
	renewalRatio float64
	lockTTL      time.Duration                           // Redis storage locks; 0: DefaultLockTTL
	ticketRotate time.Duration                           // 0: TicketRotation
	ticketPoll   time.Duration                           // 0: ticketRefresh
	onEvent      func(event string, data map[string]any) // tests observe certmagic events
}

// WithStorage keeps ACME certificates, keys and accounts in s instead of
// a certmagic.FileStorage under tls.storage: several edge nodes sharing
// one storage share certificates and solve each other's challenges. The
// local CA stays in tls.storage on local disk.
func WithStorage(s certmagic.Storage) Option {
	return func(o *options) { o.storage = s }
}

// Manager provides certificates for edge's HTTPS listener. Create it with
// New, serve TLSConfig on the https listener, HTTPHandler on the http
// listener and wrap the https handler with Secure; Run does the background
// work. All methods are safe for concurrent use.
type Manager struct {
	// Static after New.
	log       *slog.Logger
	zlog      *zap.Logger
	dir       string // tls.storage
	opts      options
	storage   *trackedStorage
	met       *metrics // nil without a registerer
	tlsConfig *cryptotls.Config
	sharedCA  bool              // the local CA lives in storage (tls.storage: redis)
	rdb       *redis.Client     // tls.storage: redis; closed by Close; else nil
	rstore    *RedisStorage     // on rdb; else nil
	tickets   *ticketKeys       // on rdb; else nil (crypto/tls's own keys)
	ticketCfg *cryptotls.Config // holds the shared ticket keys; nil without tickets

	snap  atomic.Pointer[snapshot]   // the current configuration; replaced by Update
	magic atomic.Pointer[magicState] // certmagic, set by Run; kept after Run returns so that draining connections still find certificates

	mu      sync.Mutex
	ca      *localCA           // guarded by mu; opened when a local name first needs it
	running bool               // guarded by mu
	closed  bool               // guarded by mu
	runCtx  context.Context    // guarded by mu; Run's context while running
	stopRun context.CancelFunc // guarded by mu; cancels Run (Close)
	runDone chan struct{}      // guarded by mu; closed when Run returns; never nil after Run started
	gen     context.CancelFunc // guarded by mu; cancels the current ManageAsync round
	wg      sync.WaitGroup     // renewal attempts started by Update

	logMu    sync.Mutex
	lastLog  map[string]time.Time // guarded by logMu; throttles handshake failure logs per name
	failures map[string]string    // guarded by logMu; the last ACME error per name until it is obtained
	storeErr string               // guarded by logMu; why shared storage is unreachable, "" when it is fine

	manageFailed bool // guarded by mu; the last ManageAsync failed (storage unreachable): maintain retries it
}

// New prepares certificates for cfg, a validated configuration: the
// directory tls.storage (created 0700), manual certificates read (an
// unreadable or mismatched pair is an error), tls.ca_root read, and the
// local CA created and its leaves issued if any name needs them, so that
// those names work as soon as the listener does. It starts no goroutines:
// ACME begins with Run, and until then handshakes for ACME names fail.
// log (with its "component" already set by the caller) may not be nil;
// reg may be nil (no metrics). A later Manager may register on the same
// reg once this one is closed.
func New(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*Manager, error) {
	o := options{pollInterval: DefaultPollInterval, leafLifetime: DefaultLeafLifetime, ocspInterval: time.Hour}
	for _, opt := range opts {
		opt(&o)
	}
	m := &Manager{
		log:      log,
		zlog:     newZapLogger(log.Handler()),
		dir:      cfg.TLS.Storage,
		opts:     o,
		lastLog:  map[string]time.Time{},
		failures: map[string]string{},
	}
	st := o.storage
	if cfg.TLS.RedisStorage() {
		m.dir, m.sharedCA = "", true
		if err := m.openRedis(cfg); err != nil {
			return nil, err
		}
		if st == nil {
			st = m.rstore
		}
	} else if err := prepareStorage(cfg.TLS.Storage, log); err != nil {
		return nil, err
	}
	if st == nil {
		st = &certmagic.FileStorage{Path: filepath.Join(cfg.TLS.Storage, "certs")}
	}
	m.storage = track(st)
	m.storage.check = m.checkStored
	m.tlsConfig = m.newTLSConfig()
	s, staged, err := m.build(cfg, nil)
	if err != nil {
		m.closeRedis()
		return nil, err
	}
	for _, sc := range staged {
		m.installManual(sc)
	}
	m.snap.Store(s)
	if reg != nil {
		met, err := newMetrics(reg, m.expiries)
		if err != nil {
			m.closeRedis()
			return nil, err
		}
		m.met = met
	}
	return m, nil
}

// prepareStorage creates dir with private permissions (0700). An existing
// directory is left as it is, since it may be shared (what edge creates
// inside is 0700 and 0600), with a warning when others may enter it.
func prepareStorage(dir string, log *slog.Logger) error {
	if dir == "" {
		return errors.New("tls: no storage directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tls storage: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("tls storage: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 && log != nil {
		log.Warn("tls.storage is accessible to other users; edge keeps its keys in private subdirectories, but chmod 700 is safer", "dir", dir, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
	return nil
}

// Run starts certificate management and blocks until ctx is done: ACME
// certificates are loaded from storage or obtained in the background
// (certmagic ManageAsync, retried with backoff), renewed before they
// expire, manual certificate files are re-read when they change, and
// local-CA leaves are renewed. It returns nil after ctx is done and what it
// started has stopped, or ErrClosed.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	if m.running {
		m.mu.Unlock()
		return errors.New("tls: Run called twice")
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	s := m.snap.Load()
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   m.configForCert,
		RenewCheckInterval: s.cfg.TLS.RenewCheckInterval,
		OCSPCheckInterval:  m.opts.ocspInterval,
		Logger:             m.zlog,
	})
	m.magic.Store(m.newMagic(cache, s))
	m.running, m.runCtx, m.stopRun, m.runDone = true, ctx, stop, make(chan struct{})
	done := m.runDone
	m.manage(s)
	if m.tickets != nil {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.syncTickets(ctx, m.tickets, m.ticketCfg, cmp.Or(m.opts.ticketPoll, ticketRefresh))
		}()
	}
	m.mu.Unlock()
	m.log.Info("certificate management started", "acme", len(s.acmeNames), "local", len(s.leaves), "manual", len(s.manual), "storage", m.storage.String())

	defer close(done)
	tick := time.NewTicker(m.opts.pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			m.shutdown(cache)
			return nil
		case <-tick.C:
			m.maintain()
		}
	}
}

// shutdown stops what Run started: the ManageAsync round (which cancels
// obtain jobs and their retries), the certmagic cache, renewal attempts,
// and waits until storage holds no lock of ours and no call is in flight,
// so that nothing writes after Run returns.
func (m *Manager) shutdown(cache *certmagic.Cache) {
	m.mu.Lock()
	if m.gen != nil {
		m.gen()
	}
	m.runCtx = nil
	m.mu.Unlock()
	cache.Stop()
	m.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.storage.waitIdle(ctx); err != nil {
		m.log.Warn("certificate storage still busy at shutdown", "err", err)
	}
	m.log.Info("certificate management stopped")
}

// Close stops Run, if it runs, waits for it, and unregisters the
// certificate expiry metric. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	first := !m.closed
	m.closed = true
	stop, done := m.stopRun, m.runDone
	m.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	if first {
		m.met.unregister()
		m.closeRedis()
	}
	return nil
}

// Update applies a reloaded configuration at once: Prepare, then Commit.
func (m *Manager) Update(cfg *config.Config) error {
	p, err := m.Prepare(cfg)
	if err != nil {
		return err
	}
	p.Commit()
	return nil
}

// Pending is a configuration built by Prepare and not served yet. Commit
// or Abort it; Abort after Commit does nothing, so a deferred Abort is
// safe.
type Pending struct {
	m      *Manager
	snap   *snapshot
	staged []stagedCert
	done   bool // guarded by m.mu
}

// Prepare builds everything cfg, a reloaded configuration (SIGHUP), needs
// without serving any of it: manual certificates are read, new local
// names get leaves, tls.ca_root is read. Handshakes, redirects and HSTS
// keep following the current configuration until Commit, so that a
// reload failing at a later step (a listener that cannot bind) changes
// nothing here; Abort then drops what was built. An error means the
// configuration cannot be served. tls.storage cannot change without a
// restart. Prepare and Commit of one reload must not interleave with
// another's.
func (m *Manager) Prepare(cfg *config.Config) (*Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	old := m.snap.Load()
	if cfg.TLS.Storage != old.cfg.TLS.Storage {
		return nil, fmt.Errorf("tls.storage changed from %s to %s: restart edge to move storage", old.cfg.TLS.Storage, cfg.TLS.Storage)
	}
	s, staged, err := m.build(cfg, old)
	if err != nil {
		return nil, err
	}
	return &Pending{m: m, snap: s, staged: staged}, nil
}

// Commit serves the prepared configuration: manual certificates as read
// by Prepare, new local names, new ACME names start being managed, removed
// ones stop being renewed. Certificates that exist are kept, not
// re-issued, and open connections are untouched. Issuance that is failing
// is retried at once instead of after its backoff, and so is the renewal
// of a certificate that is due.
func (p *Pending) Commit() {
	m := p.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if p.done {
		return
	}
	p.done = true
	old, s := m.snap.Load(), p.snap
	for _, sc := range p.staged {
		m.installManual(sc)
	}
	m.snap.Store(s)
	if m.runCtx != nil {
		m.follow(old, s)
	}
	m.log.Info("tls configuration updated", "acme", len(s.acmeNames), "local", len(s.leaves), "manual", len(s.manual))
}

// Abort drops a prepared configuration: what is served stays as it was.
func (p *Pending) Abort() {
	p.m.mu.Lock()
	defer p.m.mu.Unlock()
	p.done = true
}

// follow moves certmagic from the names of old to those of s, replacing
// its configurations when the issuer settings changed. Called with mu held
// while running.
func (m *Manager) follow(old, s *snapshot) {
	mg := m.magic.Load()
	if issuerKey(s) != mg.key {
		mg = m.newMagic(mg.cache, s)
		m.magic.Store(mg)
	}
	var gone []certmagic.SubjectIssuer
	for _, n := range old.acmeNames {
		if !s.acme[n] {
			gone = append(gone, certmagic.SubjectIssuer{Subject: n})
		}
	}
	mg.cache.RemoveManaged(gone)
	m.manage(s)
	m.renewDue(s, mg)
}

// manage starts a new ManageAsync round for every ACME name, cancelling the
// previous round: names already managed are left alone, obtain jobs that
// are failing restart now. Called with mu held while running.
func (m *Manager) manage(s *snapshot) {
	if m.gen != nil {
		m.gen()
	}
	ctx, cancel := context.WithCancel(m.runCtx)
	m.gen = cancel
	if len(s.acmeNames) == 0 {
		return
	}
	m.manageFailed = false
	if err := m.magic.Load().managed.ManageAsync(ctx, s.acmeNames); err != nil {
		// certmagic does not retry a name whose stored certificate it
		// could not read (storage unreachable): maintain does.
		m.manageFailed = true
		m.logThrottled("manage", slog.LevelError, "starting certificate management failed; retrying", "err", err)
	}
}

// renewDue makes one renewal attempt now for each managed certificate
// that is due, instead of waiting for certmagic's backoff after a failure,
// and serves the result at once. Called with mu held while running.
func (m *Manager) renewDue(s *snapshot, mg *magicState) {
	ctx := m.runCtx
	for _, name := range s.acmeNames {
		old, ok := mg.cached(name)
		if !ok || !old.NeedsRenewal(mg.managed) {
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			if err := mg.managed.RenewCertSync(ctx, name, false); err != nil {
				m.log.Warn("renewal retry failed", "name", name, "err", err)
				return
			}
			// RenewCertSync only writes storage. Cache the new
			// certificate next to the old one, then drop the old one,
			// so that no handshake finds neither.
			c, err := mg.managed.CacheManagedCertificate(ctx, name)
			if err != nil {
				m.log.Warn("loading the renewed certificate", "name", name, "err", err)
				return
			}
			if c.Hash() != old.Hash() {
				mg.cache.Remove([]string{old.Hash()})
			}
		}()
	}
}

// maintain runs on Run's ticker: manual certificate files that changed are
// re-read, local-CA leaves near their end are re-issued.
func (m *Manager) maintain() {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.snap.Load()
	for _, mc := range s.manual {
		m.reloadManual(mc)
	}
	for _, l := range s.leaves {
		if l.due(m.opts.leafLifetime) {
			if err := m.issueLeaf(l); err != nil {
				m.logThrottled("leaf:"+l.name, slog.LevelWarn, "local certificate not issued; retrying", "name", l.name, "err", err)
			}
		}
	}
	if m.manageFailed && m.runCtx != nil {
		m.manage(s)
	}
}

// Ready reports whether every configured name has a certificate: nil, or
// an error naming those still missing (ACME certificates not obtained
// yet). For /readyz.
func (m *Manager) Ready() error {
	s := m.snap.Load()
	var missing []string
	for _, n := range s.acmeNames {
		if _, ok := m.acmeCert(n); !ok {
			if f := m.failure(n); f != "" {
				n += " (last attempt: " + f + ")"
			}
			missing = append(missing, n)
		}
	}
	for _, l := range s.leaves {
		if l.slot.Load() == nil {
			missing = append(missing, l.name+" (local CA not available)")
		}
	}
	var errs []error
	if e := m.storageErr(); e != "" {
		errs = append(errs, fmt.Errorf("tls storage in redis unreachable (serving cached certificates, retrying): %s", e))
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("no certificate yet for %s", strings.Join(missing, ", ")))
	}
	return errors.Join(errs...)
}

// expiries returns the expiry of the certificate of every configured name
// that has one, and where it comes from.
func (m *Manager) expiries() []expiry {
	s := m.snap.Load()
	var out []expiry
	for _, e := range s.entries() {
		var c *cryptotls.Certificate
		if e.source == config.SourceACME {
			if mc, ok := m.acmeCert(e.name); ok {
				c = &mc.Certificate
			}
		} else {
			c = e.slot.Load()
		}
		if c != nil && c.Leaf != nil {
			out = append(out, expiry{name: e.name, source: e.source.String(), notAfter: c.Leaf.NotAfter})
		}
	}
	return out
}

type expiry struct {
	name, source string
	notAfter     time.Time
}

// acmeCert returns the cached certmagic certificate for name.
func (m *Manager) acmeCert(name string) (certmagic.Certificate, bool) {
	mg := m.magic.Load()
	if mg == nil {
		return certmagic.Certificate{}, false
	}
	return mg.cached(name)
}

// logThrottled logs at most once a minute per key, so that a client
// retrying a failing handshake cannot flood the log.
func (m *Manager) logThrottled(key string, level slog.Level, msg string, args ...any) {
	now := time.Now()
	m.logMu.Lock()
	last, seen := m.lastLog[key]
	if seen && now.Sub(last) < time.Minute {
		m.logMu.Unlock()
		return
	}
	if len(m.lastLog) > 10000 { // names come from configuration, but stay bounded
		clear(m.lastLog)
	}
	m.lastLog[key] = now
	m.logMu.Unlock()
	m.log.Log(context.Background(), level, msg, args...)
}

// setFailure records the last ACME error for name; "" clears it.
func (m *Manager) setFailure(name, err string) {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	if err == "" {
		delete(m.failures, name)
		return
	}
	if len(m.failures) > 10000 { // on-demand names could be many
		clear(m.failures)
	}
	m.failures[name] = err
}

func (m *Manager) failure(name string) string {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	return m.failures[name]
}

// sortedKeys returns the keys of a set in order.
func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// rootPool reads a PEM bundle of trusted roots ("" gives nil: the system
// roots).
func rootPool(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tls.ca_root: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("tls.ca_root: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// openRedis connects the shared storage (tls.storage: redis): certmagic's
// files and locks under <redis.prefix>certmagic:, session ticket keys
// under <redis.prefix>tls:. Nothing is dialled yet, so a Redis that is
// down at start does not stop edge: what needs it is retried.
func (m *Manager) openRedis(cfg *config.Config) error {
	if cfg.Redis == nil {
		return errors.New("tls.storage redis needs redis.url")
	}
	rdb, err := redisconn.New(cfg.Redis)
	if err != nil {
		return err
	}
	m.rdb = rdb
	m.rstore = NewRedisStorage(rdb, cfg.Redis.Prefix+"certmagic:", m.opts.lockTTL, m.log)
	m.tickets = newTicketKeys(rdb, cfg.Redis.Prefix, m.opts.ticketRotate)
	m.ticketCfg = &cryptotls.Config{}
	return nil
}

// closeRedis releases what openRedis made.
func (m *Manager) closeRedis() {
	if m.rstore != nil {
		m.rstore.Close()
	}
	if m.rdb != nil {
		m.rdb.Close()
	}
}

// setStorageHealth records the outcome of the last call to shared storage
// for Ready, logging the changes.
func (m *Manager) setStorageHealth(err error) {
	m.logMu.Lock()
	prev := m.storeErr
	if err != nil {
		m.storeErr = err.Error()
	} else {
		m.storeErr = ""
	}
	m.logMu.Unlock()
	switch {
	case err != nil && prev == "":
		m.log.Warn("tls storage in redis unreachable: serving cached certificates and retrying", "err", err)
	case err == nil && prev != "":
		m.log.Info("tls storage in redis reachable again")
		// Local leaves wait for the CA in Redis, and certmagic gives up
		// on a name whose stored certificate it could not read (it logs
		// "initiating certificate management"): retry both now.
		m.maintain()
		m.mu.Lock()
		if m.runCtx != nil {
			m.manage(m.snap.Load())
		}
		m.mu.Unlock()
	}
}

func (m *Manager) storageErr() string {
	m.logMu.Lock()
	defer m.logMu.Unlock()
	return m.storeErr
}
