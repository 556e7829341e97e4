package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"edge/config"
	"edge/hub"
	"edge/internal/clientip"
	"edge/proxy"
	"edge/server"
	edgetls "edge/tls"
)

func cmdRun(args []string, stderr io.Writer) error {
	fs, cfgPath := newFlags("run", "run [-config FILE]", stderr)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	log := newLogger(cfg.Log, level, stderr)
	for _, w := range cfg.Warnings {
		log.Warn("configuration warning", "problem", w.String())
	}
	setRedisLogger(log)
	a := newApp(*cfgPath, log, level)
	return a.run(cfg)
}

// newLogger builds the process logger: text or JSON on stderr (journald
// under systemd), with a level a reload can change.
func newLogger(lc config.Log, level *slog.LevelVar, w io.Writer) *slog.Logger {
	setLevel(level, lc.Level)
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func setLevel(level *slog.LevelVar, s string) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err == nil {
		level.Set(l)
	}
}

// app is one running edge process: listeners, handlers, the hub node and
// the certificate manager, and the reload and shutdown sequences.
type app struct {
	path  string
	log   *slog.Logger
	level *slog.LevelVar
	srv   *server.Server
	reg   *prometheus.Registry
	stats *server.Metrics

	// ctx is cancelled when shutdown has drained; everything started with
	// it is waited for by wg.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// reloadMu serialises reloads (SIGHUP and the admin endpoint).
	reloadMu sync.Mutex
	cfg      *config.Config   // guarded by reloadMu
	gen      *generation      // guarded by reloadMu
	node     *hub.Node        // set once in run
	tls      *edgetls.Manager // guarded by reloadMu; nil without HTTPS
	// reloadErr is why the last reload failed; nil when it succeeded.
	// Guarded by reloadMu.
	reloadErr error
	// tunnels holds every proxied upgraded connection of every
	// generation, so that shutdown closes them all with a close frame.
	tunnels proxy.Tunnels

	// started and reloads are for the admin dashboard.
	started time.Time
	reloads reloadLog
}

// generation is the set of handlers built from one configuration.
type generation struct {
	proxies []*proxy.Handler
	pools   []pool // proxies with their site and route, for the dashboard
	hubKeys []string
	ctx     context.Context // cancelled when the generation is retired
	cancel  context.CancelFunc
}

func newApp(path string, log *slog.Logger, level *slog.LevelVar) *app {
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &app{
		path: path, log: log, level: level, reg: reg,
		stats:   server.NewMetrics(reg),
		srv:     server.New(log.With("component", "server")),
		ctx:     ctx,
		cancel:  cancel,
		started: time.Now(),
	}
}

// goRun runs fn in a goroutine owned by the app until ctx is done.
func (a *app) goRun(name string, ctx context.Context, fn func(context.Context) error) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
			a.log.Error("background task stopped", "task", name, "err", err)
		}
	}()
}

func (a *app) run(cfg *config.Config) error {
	node, err := hub.NewNode(hub.NodeOptions{Redis: cfg.Redis, Log: a.log, Registerer: a.reg})
	if err != nil {
		return err
	}
	a.node = node
	a.goRun("hub", a.ctx, node.Run)

	// Signals are caught before listening so that none is lost in between.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	defer signal.Stop(sigs)

	a.reloadMu.Lock()
	err = a.apply(cfg)
	a.reloadMu.Unlock()
	a.reloads.add("start", err)
	if err != nil {
		a.cancel()
		a.wg.Wait()
		return err
	}
	notify(a.log, "READY=1\nSTATUS=serving")
	ver, rev := buildInfo()
	a.log.Info("edge started", "config", a.path, "version", ver, "commit", rev)

	watchdog := watchdogTicker()
	for {
		select {
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				a.reload("signal")
			case syscall.SIGUSR1:
				a.stats.ReopenLogs()
				a.log.Info("access logs reopened")
			default:
				return a.shutdown(s, sigs)
			}
		case <-watchdog:
			notify(a.log, "WATCHDOG=1")
		}
	}
}

// reload re-reads the configuration. Any problem leaves the running
// configuration untouched and is returned, and /readyz reports it until a
// reload succeeds. by says what asked for it ("signal", "admin"), for the
// dashboard's reload history.
func (a *app) reload(by string) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	defer func() { a.reloads.add(by, a.reloadErr) }()
	notify(a.log, fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	a.log.Info("reloading", "config", a.path)
	a.reloadErr = a.reloadLocked()
	if a.reloadErr != nil {
		// systemctl status shows it next to the unit's state.
		notify(a.log, "READY=1\nSTATUS=serving the previous configuration; last reload failed: "+
			strings.ReplaceAll(a.reloadErr.Error(), "\n", "; "))
		return fmt.Errorf("reload failed; still serving the previous configuration: %w", a.reloadErr)
	}
	notify(a.log, "READY=1\nSTATUS=serving")
	return nil
}

// reloadLocked is reload with reloadMu held.
func (a *app) reloadLocked() error {
	cfg, err := config.Load(a.path)
	if err != nil {
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				a.log.Error("reload refused: configuration problem", "problem", p.String())
			}
		}
		a.log.Error("reload failed; still serving the previous configuration")
		return err
	}
	for _, w := range cfg.Warnings {
		a.log.Warn("configuration warning", "problem", w.String())
	}
	if !reflect.DeepEqual(a.cfg.Redis, cfg.Redis) {
		// The hub node holds one Redis subscription for the process.
		a.log.Warn("redis settings changed: they take effect when edge restarts")
	}
	if err := a.apply(cfg); err != nil {
		a.log.Error("reload failed; still serving the previous configuration", "err", err)
		return err
	}
	a.log.Info("reloaded", "config", a.path)
	return nil
}

// apply builds the generation of cfg (TLS hosts and certificates,
// handlers, hub route settings, listeners bound) and makes it the served
// one. Until server.Apply has swapped the listeners in, nothing built is
// visible; if any step fails, everything built is dropped and nothing
// changes. Called with reloadMu held.
func (a *app) apply(cfg *config.Config) error {
	next, err := a.prepareTLS(cfg)
	if err != nil {
		return err
	}
	gen, specs, err := a.build(cfg, next.m)
	if err != nil {
		a.abandon(next)
		return err
	}
	opts := server.Options{
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		MaxHeaderBytes:    int(cfg.Server.MaxHeaderBytes),
		MaxConns:          cfg.Server.MaxConnections,
		MaxConnsPerIP:     cfg.Server.MaxConnectionsPerIP,
		// Body timeout and trusted proxies reach the Router through cfg.
		MaxRequestsPerConn: cfg.Server.MaxRequestsPerConnection,
		ProxyProtocol:      proxyProtocol(cfg.Listen.ProxyProtocol),
		Metrics:            a.stats,
	}
	if err := a.srv.Apply(specs, opts, cfg.Server.ShutdownTimeout); err != nil {
		gen.retire()
		a.abandon(next)
		return err
	}
	a.commit(cfg, gen, next)
	return nil
}

// commit makes a generation whose listeners server.Apply has just swapped
// in the served one: its certificates and hub route settings, its
// background work; the old generation is retired. Nothing here fails.
func (a *app) commit(cfg *config.Config, gen *generation, next tlsStep) {
	next.commit()
	for _, p := range gen.proxies {
		a.goRun("proxy health checks", gen.ctx, p.Run)
	}
	if old := a.gen; old != nil {
		old.retire()
	}
	a.node.Retire(gen.hubKeys)
	if next.fresh {
		a.goRun("certificates", a.ctx, next.m.Run)
	}
	if a.tls != nil && next.m == nil {
		a.tls.Close()
	}
	a.tls, a.gen, a.cfg = next.m, gen, cfg
	setLevel(a.level, cfg.Log.Level)
}

// abandon drops what a failed apply built outside its generation: the
// prepared certificates and the hub route settings given during build.
func (a *app) abandon(next tlsStep) {
	next.abort()
	var keep []string
	if a.gen != nil {
		keep = a.gen.hubKeys
	}
	a.node.Abandon(keep)
}

// tlsStep is the certificate side of a generation being applied.
type tlsStep struct {
	m       *edgetls.Manager // serves the generation; nil without HTTPS
	pending *edgetls.Pending // m's prepared configuration when m already serves
	fresh   bool             // m was made for this generation: nothing serves it yet
}

// prepareTLS readies the certificates of cfg without serving them: a new
// Manager when HTTPS is turned on, else the running one's Prepare.
func (a *app) prepareTLS(cfg *config.Config) (tlsStep, error) {
	if cfg.Listen.HTTPS == "" {
		return tlsStep{}, nil
	}
	if a.tls == nil {
		m, err := edgetls.New(cfg, a.log.With("component", "tls"), a.reg)
		if err != nil {
			return tlsStep{}, err
		}
		return tlsStep{m: m, fresh: true}, nil
	}
	p, err := a.tls.Prepare(cfg)
	if err != nil {
		return tlsStep{}, err
	}
	return tlsStep{m: a.tls, pending: p}, nil
}

func (t tlsStep) commit() {
	if t.pending != nil {
		t.pending.Commit()
	}
}

func (t tlsStep) abort() {
	if t.pending != nil {
		t.pending.Abort()
	}
	if t.fresh {
		t.m.Close()
	}
}

// retire stops a generation's background work. Proxy tunnels opened by it
// continue until they end or shutdown closes them.
func (g *generation) retire() {
	g.cancel()
	for _, p := range g.proxies {
		p.Close()
	}
}

func (a *app) shutdown(sig os.Signal, sigs <-chan os.Signal) error {
	notify(a.log, "STOPPING=1")
	a.log.Info("shutting down", "signal", sig.String())
	go func() {
		// A second signal means: stop now.
		s := <-sigs
		a.log.Warn("second signal: exiting at once", "signal", s.String())
		os.Exit(1)
	}()
	a.reloadMu.Lock()
	timeout := a.cfg.Server.ShutdownTimeout
	a.reloadMu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := a.node.Close(ctx); err != nil {
			a.log.Warn("hub shutdown", "err", err)
		}
	}()
	if err := a.srv.Shutdown(ctx); err != nil {
		a.log.Warn("drain incomplete", "err", err)
	}
	// In-flight requests are done (or out of time): close proxied tunnels
	// with a close frame.
	tctx, tcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer tcancel()
	a.tunnels.CloseAll(tctx)
	wg.Wait()
	a.reloadMu.Lock()
	if a.gen != nil {
		a.gen.retire()
	}
	if a.tls != nil {
		a.tls.Close()
	}
	a.reloadMu.Unlock()
	a.cancel()
	a.wg.Wait()
	a.stats.Close()
	a.log.Info("stopped")
	return nil
}

// httpsPort returns the port of the HTTPS listener for redirects.
func httpsPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "443"
	}
	return port
}

var _ http.Handler = (*server.Router)(nil)

// proxyProtocol turns listen.proxy_protocol into the server's setting; nil
// when off.
func proxyProtocol(pp *config.ProxyProtocol) *server.ProxyProtocol {
	if pp == nil {
		return nil
	}
	out := &server.ProxyProtocol{Timeout: pp.Timeout, Required: pp.Required == nil || *pp.Required}
	for _, s := range pp.Trusted {
		if p, ok := clientip.ParsePrefix(s); ok { // config validated it
			out.Trusted = append(out.Trusted, p)
		}
	}
	return out
}
