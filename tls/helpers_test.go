package tls

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/letsencrypt/challtestsrv"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/prometheus/client_golang/prometheus"

	"edge/config"
	"edge/internal/testutil"
)

// Pebble reads these in its constructors. They are set once for the whole
// package (not with t.Setenv) so that tests may run in parallel.
func TestMain(m *testing.M) {
	os.Setenv("PEBBLE_VA_NOSLEEP", "1")      // validate at once, not after 0-5 s
	os.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no random badNonce
	os.Setenv("PEBBLE_AUTHZREUSE", "0")      // renewals solve a challenge again
	code := m.Run()
	if challtestsrvDir != "" {
		os.RemoveAll(challtestsrvDir)
	}
	os.Exit(code)
}

// logSink is a slog.Handler that keeps records for assertions and can
// echo them to the test log (go test -v).
type logSink struct {
	mu      sync.Mutex
	records []string // guarded by mu
	t       *testing.T
	attrs   []slog.Attr
}

func newLogger(t *testing.T) (*slog.Logger, *logSink) {
	s := &logSink{t: t}
	return slog.New(s), s
}

func (s *logSink) Enabled(context.Context, slog.Level) bool { return true }

func (s *logSink) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	for _, a := range s.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	line := b.String()
	s.mu.Lock()
	s.records = append(s.records, line)
	s.mu.Unlock()
	if testing.Verbose() {
		fmt.Fprintln(os.Stderr, s.t.Name(), line)
	}
	return nil
}

func (s *logSink) WithAttrs(as []slog.Attr) slog.Handler {
	return &logView{s: s, attrs: append(append([]slog.Attr(nil), s.attrs...), as...)}
}

func (s *logSink) WithGroup(string) slog.Handler { return s }

// has reports whether some record contains every one of parts.
func (s *logSink) has(parts ...string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
next:
	for _, r := range s.records {
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		return true
	}
	return false
}

// logView is a logSink with attributes, sharing the records.
type logView struct {
	s     *logSink
	attrs []slog.Attr
}

func (v *logView) Enabled(ctx context.Context, l slog.Level) bool { return true }
func (v *logView) Handle(ctx context.Context, r slog.Record) error {
	r2 := r.Clone()
	r2.AddAttrs(v.attrs...)
	return v.s.Handle(ctx, r2)
}
func (v *logView) WithAttrs(as []slog.Attr) slog.Handler {
	return &logView{s: v.s, attrs: append(append([]slog.Attr(nil), v.attrs...), as...)}
}
func (v *logView) WithGroup(string) slog.Handler { return v }

// waitFor is testutil.WaitFor, the tests' one polling helper.
var waitFor = testutil.WaitFor

// pebble is an in-process ACME server (TESTING.md §1c) with knobs.
type pebble struct {
	dirURL    string
	caRoot    string         // PEM file with the API's certificate, for tls.ca_root
	issuers   *x509.CertPool // roots of the certificates it issues
	orders    atomic.Int32   // new-order requests
	down      atomic.Bool    // drop every connection, as if stopped
	rateLimit atomic.Bool    // answer new-order with a rateLimited problem
	db        *db.MemoryStore
	ca        *ca.CAImpl
}

type pebbleOpts struct {
	validity   uint64 // seconds; default 90 days
	requireEAB bool
	ocspURL    string // put into issued certificates
	keyAlg     string // of Pebble's own chain; default ecdsa
	dnsAddr    string // the DNS server its VA asks; default an in-process challtestsrv
}

// startPebble runs Pebble on loopback; its VA validates HTTP-01 on
// httpPort and TLS-ALPN-01 on tlsPort of 127.0.0.1 (every name resolves
// there).
func startPebble(t *testing.T, httpPort, tlsPort int, o pebbleOpts) *pebble {
	t.Helper()
	if o.validity == 0 {
		o.validity = 90 * 24 * 3600
	}
	logger := log.New(io.Discard, "", 0) // Pebble goroutines outlive tests
	dnsAddr := o.dnsAddr
	if dnsAddr == "" {
		dnsAddr = freeAddr(t)
		cts, err := challtestsrv.New(challtestsrv.Config{DNSAddrs: []string{dnsAddr}, Log: logger})
		if err != nil {
			t.Fatal(err)
		}
		cts.SetDefaultDNSIPv4("127.0.0.1")
		cts.SetDefaultDNSIPv6("") // else the VA tries ::1 first
		go cts.Run()
		t.Cleanup(cts.Shutdown)
	}

	if o.keyAlg == "" {
		o.keyAlg = "ecdsa"
	}
	p := &pebble{db: db.NewMemoryStore()}
	c := ca.New(logger, p.db, o.ocspURL, o.keyAlg, 0, 1, map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: o.validity}})
	v := va.New(logger, httpPort, tlsPort, false, dnsAddr, p.db)
	w := wfe.New(logger, p.db, v, c, []string{"pebble.letsencrypt.org"}, false, o.requireEAB, 0, 0)
	h := w.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if p.down.Load() {
			if hj, ok := rw.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			http.Error(rw, "down", http.StatusServiceUnavailable)
			return
		}
		if r.Method == http.MethodPost && r.URL.Path == "/order-plz" {
			p.orders.Add(1)
			if p.rateLimit.Load() {
				rw.Header().Set("Content-Type", "application/problem+json")
				rw.Header().Set("Retry-After", "3600")
				rw.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(rw, `{"type":"urn:ietf:params:acme:error:rateLimited","detail":"too many certificates (5) already issued for this exact set of identifiers","status":429}`)
				return
			}
		}
		h.ServeHTTP(rw, r)
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	p.dirURL = srv.URL + "/dir"
	p.caRoot = filepath.Join(t.TempDir(), "pebble-api.pem")
	writePEM(t, p.caRoot, "CERTIFICATE", srv.Certificate().Raw)
	p.ca = c
	p.issuers = x509.NewCertPool()
	p.issuers.AddCert(c.GetRootCert(0).Cert)
	return p
}

// freeAddr returns a loopback address that was free a moment ago, for a
// server that wants an address rather than a listener.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writePEM(t *testing.T, file, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// edgeServer is edge's two public listeners on loopback, serving a
// Manager: what cmd/edge wires, minus routing.
type edgeServer struct {
	httpLn, httpsLn net.Listener
	httpPort        int
	httpsPort       int
	dir             string // the configuration's directory; static root, storage below
}

// listen opens the listeners first so that their ports go into the
// configuration and into Pebble's VA.
func listen(t *testing.T) *edgeServer {
	t.Helper()
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hl.Close(); sl.Close() })
	return &edgeServer{
		httpLn: hl, httpsLn: sl,
		httpPort:  hl.Addr().(*net.TCPAddr).Port,
		httpsPort: sl.Addr().(*net.TCPAddr).Port,
		dir:       t.TempDir(),
	}
}

// parse builds a configuration from YAML written relative to e.dir, with
// {http}, {https} and {dir} replaced.
func (e *edgeServer) parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	r := strings.NewReplacer("{http}", strconv.Itoa(e.httpPort), "{https}", strconv.Itoa(e.httpsPort), "{dir}", e.dir)
	cfg, err := config.Parse(filepath.Join(e.dir, "edge.yaml"), []byte(r.Replace(yaml)))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// serve serves m on both listeners: the http one through HTTPHandler, the
// https one with TLSConfig and Secure. The inner handler answers "ok <host>".
func (e *edgeServer) serve(t *testing.T, m *Manager) {
	t.Helper()
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store") // as edge's handlers set one
		fmt.Fprintf(w, "ok %s %s", r.Host, r.Proto)
	})
	hs := &http.Server{Handler: m.HTTPHandler(inner, strconv.Itoa(e.httpsPort)), ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	ss := &http.Server{Handler: m.Secure(inner), TLSConfig: m.TLSConfig(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go hs.Serve(e.httpLn)
	go ss.ServeTLS(e.httpsLn, "", "")
	t.Cleanup(func() { hs.Close(); ss.Close() })
}

// newManager makes a Manager for cfg and closes it at cleanup.
func newManager(t *testing.T, cfg *config.Config, log *slog.Logger, opts ...Option) *Manager {
	t.Helper()
	m, err := New(cfg, log, nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// run starts m.Run and makes cleanup wait for it.
func run(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return 15 s after its context was cancelled")
		}
	})
}

// handshake connects to addr with SNI name, trusting roots, and returns the
// server's leaf. name "" sends no SNI; verification then checks verifyName.
func handshake(addr, name string, roots *x509.CertPool) (*x509.Certificate, error) {
	c, err := dialTLS(addr, name, roots)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func dialTLS(addr, name string, roots *x509.CertPool) (*cryptotls.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return cryptotls.DialWithDialer(d, "tcp", addr, &cryptotls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
}

// events records certmagic events for waiting on them.
type events struct {
	mu   sync.Mutex
	seen []string // "event identifier renewal"
	ch   chan struct{}
}

func newEvents() *events { return &events{ch: make(chan struct{}, 1)} }

func (ev *events) option() Option {
	return func(o *options) {
		o.onEvent = func(event string, data map[string]any) {
			ev.mu.Lock()
			ev.seen = append(ev.seen, fmt.Sprintf("%s %v %v", event, data["identifier"], data["renewal"]))
			ev.mu.Unlock()
			select {
			case ev.ch <- struct{}{}:
			default:
			}
		}
	}
}

func (ev *events) count(s string) int {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	n := 0
	for _, e := range ev.seen {
		if e == s {
			n++
		}
	}
	return n
}

// wait waits until the event s has been seen n times.
func (ev *events) wait(t *testing.T, s string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for ev.count(s) < n {
		select {
		case <-ev.ch:
		case <-deadline.C:
			ev.mu.Lock()
			defer ev.mu.Unlock()
			t.Fatalf("timed out after %v waiting for %d × %q; seen %q", timeout, n, s, ev.seen)
		}
	}
}

func withPollInterval(d time.Duration) Option { return func(o *options) { o.pollInterval = d } }
func withLeafLifetime(d time.Duration) Option { return func(o *options) { o.leafLifetime = d } }
func withRenewalRatio(r float64) Option       { return func(o *options) { o.renewalRatio = r } }
func withOCSPInterval(d time.Duration) Option { return func(o *options) { o.ocspInterval = d } }

// metricValue returns the value of the metric name with the given label
// pairs from reg; -1 when there is none.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for i := 0; i+1 < len(labels); i += 2 {
				if got[labels[i]] != labels[i+1] {
					continue next
				}
			}
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}
