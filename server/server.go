package server

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Listener describes one listening socket and what it serves.
type Listener struct {
	// Name identifies the listener across reloads: "http", "https", "admin".
	Name string
	// Addr is host:port; ":0" picks a free port (tests).
	Addr string
	// TLS, when non-nil, makes this an HTTPS listener (h2 and http/1.1).
	TLS *cryptotls.Config
	// Handler serves every request on this listener.
	Handler http.Handler
	// Uncapped leaves this listener's connections out of MaxConns and
	// MaxConnsPerIP, so that it answers when clients fill the caps (the
	// admin listener: health checks and metrics).
	Uncapped bool
	// HTTP3 also serves HTTP/3 on the UDP port of Addr (TLS listeners
	// only) and announces it with Alt-Svc on the TCP listener's
	// responses. QUIC connections are not counted in MaxConns and
	// MaxConnsPerIP, and carry no WebSocket upgrades.
	HTTP3 bool
}

// Options are the limits of every http.Server edge runs.
type Options struct {
	// ReadHeaderTimeout bounds reading request headers (slowloris).
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes idle keep-alive connections.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
	// MaxConns caps open client connections across all listeners; 0 means
	// unlimited. Further connections wait in the kernel backlog.
	MaxConns int
	// MaxConnsPerIP caps open connections per client IP across all
	// listeners; 0 means unlimited. Further ones are closed at once.
	MaxConnsPerIP int
	// MaxRequestsPerConn is how many requests one client connection may
	// carry (HTTP/1.1 and HTTP/2); the last response closes it. 0 means
	// unlimited. A reload changes it for kept listeners too.
	MaxRequestsPerConn int
	// ProxyProtocol, when non-nil, reads PROXY protocol headers on the
	// capped listeners. A reload changes it for new connections, also on
	// kept listeners.
	ProxyProtocol *ProxyProtocol
	// Metrics, when non-nil, counts the requests refused before any site
	// sees them (edge_http_refused_total: framing, reset budget, plain
	// HTTP on HTTPS). The requests sites answer are counted by the
	// Router's Metrics.
	Metrics *Metrics
}

// sameHTTP reports whether o and p set the http.Server the same way.
func (o Options) sameHTTP(p Options) bool {
	return o.ReadHeaderTimeout == p.ReadHeaderTimeout && o.IdleTimeout == p.IdleTimeout &&
		o.MaxHeaderBytes == p.MaxHeaderBytes
}

// Server runs a set of named listeners. Apply binds, swaps and retires them;
// Shutdown drains them. Its serving goroutines are owned by the Server and
// end in Shutdown. Safe for concurrent use.
type Server struct {
	log *slog.Logger

	// hijackCtx is the base context of every request. It is cancelled after
	// the shutdown drain, which ends hijacked connections (proxied
	// WebSockets) that http.Server.Shutdown does not track.
	hijackCtx    context.Context
	cancelHijack context.CancelFunc

	// limits counts the connections of every listener; Apply sets its caps.
	limits *connLimits
	// proxy is Options.ProxyProtocol of the last Apply, which the capped
	// listeners read for each new connection.
	proxy atomic.Pointer[ProxyProtocol]

	mu       sync.Mutex
	active   map[string]*listener             // guarded by mu
	retiring map[*listener]context.CancelFunc // guarded by mu: draining after Apply retired them; the func ends the drain
	opts     Options                          // guarded by mu: of the last Apply
	wg       sync.WaitGroup                   // serving and draining goroutines
}

type listener struct {
	spec    Listener
	ln      net.Listener
	srv     *http.Server
	log     *slog.Logger
	handler atomic.Pointer[http.Handler]
	tls     atomic.Pointer[cryptotls.Config]
	// tlsBase is the config handshakes start from; nil for plain HTTP.
	tlsBase *cryptotls.Config
	// maxRequests is Options.MaxRequestsPerConn of the last Apply.
	maxRequests atomic.Int64
	// metrics is Options.Metrics of the last Apply; nil: not counted.
	metrics atomic.Pointer[Metrics]
	// handshakeTimeout bounds a TLS handshake, as net/http does with
	// ReadHeaderTimeout.
	handshakeTimeout time.Duration
	// proxy reads PROXY protocol headers under ln; nil on an uncapped
	// listener. Its run goroutine is started by serve.
	proxy *proxyListener
	// tcpAddr is the bound address of the TCP socket.
	tcpAddr string
	// h3 serves HTTP/3 on the UDP port of tcpAddr; nil when off. Guarded
	// by Server.mu for writes; serveHTTP loads it for Alt-Svc.
	h3 atomic.Pointer[h3Server]
}

// New returns a Server with no listeners.
func New(log *slog.Logger) *Server {
	ctx, cancel := context.WithCancel(context.Background())
	return &Server{log: log, hijackCtx: ctx, cancelHijack: cancel, limits: newConnLimits(),
		active: map[string]*listener{}, retiring: map[*listener]context.CancelFunc{}}
}

// Apply makes the running listeners match specs. New addresses are bound
// first: if any bind fails, nothing changes and the error is returned, so a
// reload that names a taken port keeps the old configuration serving.
// Listeners whose name and address are unchanged keep their socket and get
// the new handler and TLS settings atomically; in-flight requests and
// connections continue. Listeners no longer wanted are drained in the
// background: they stop accepting at once, their in-flight requests get
// until drain, then what is left is closed (Shutdown, if sooner, applies
// its own deadline to them too).
func (s *Server) Apply(specs []Listener, opts Options, drain time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := map[string]*listener{}
	var fresh []*listener
	startH3 := map[*listener]*h3Server{} // kept listeners turning HTTP/3 on
	undo := func() {
		for _, f := range fresh {
			f.ln.Close()
			if h := f.h3.Load(); h != nil {
				h.pc.Close()
			}
		}
		for _, h := range startH3 {
			h.pc.Close()
		}
	}
	for _, sp := range specs {
		if old, ok := s.active[sp.Name]; ok && old.spec.Addr == sp.Addr && (old.spec.TLS == nil) == (sp.TLS == nil) {
			keep[sp.Name] = old
			if sp.HTTP3 && sp.TLS != nil && old.h3.Load() == nil {
				h, err := old.bindH3(old.tcpAddr, opts)
				if err != nil {
					undo()
					return err
				}
				startH3[old] = h
			}
			continue
		}
		l, err := s.bind(sp, opts)
		if err != nil {
			undo()
			return err
		}
		fresh = append(fresh, l)
	}
	// Everything is bound: from here on nothing fails.
	s.limits.set(opts.MaxConns, opts.MaxConnsPerIP)
	s.proxy.Store(opts.ProxyProtocol)
	if len(keep) > 0 && !s.opts.sameHTTP(opts) {
		s.log.Warn("server.read_header_timeout, idle_timeout and max_header_bytes changed: " +
			"they take effect on listeners bound from now on (a changed address) and at restart")
	}
	s.opts = opts
	for _, l := range fresh {
		l.maxRequests.Store(int64(opts.MaxRequestsPerConn))
		l.metrics.Store(opts.Metrics)
	}
	for _, sp := range specs {
		if l, ok := keep[sp.Name]; ok {
			l.maxRequests.Store(int64(opts.MaxRequestsPerConn))
			l.metrics.Store(opts.Metrics)
			l.spec.Handler, l.spec.TLS, l.spec.HTTP3 = sp.Handler, sp.TLS, sp.HTTP3
			l.handler.Store(&sp.Handler)
			if sp.TLS != nil {
				l.tls.Store(sp.TLS)
			}
			if h := startH3[l]; h != nil {
				l.h3.Store(h)
				s.serveH3(l, h)
			} else if h := l.h3.Load(); h != nil && !sp.HTTP3 {
				l.h3.Store(nil)
				s.log.Info("http3 listener retired", "listener", l.spec.Name, "addr", h.pc.LocalAddr().String())
				s.retireH3(h, drain)
			}
		}
	}
	for name, old := range s.active {
		if keep[name] == nil {
			s.log.Info("listener retired", "listener", name, "addr", old.ln.Addr().String())
			s.retire(old, drain)
			delete(s.active, name)
		}
	}
	for _, l := range fresh {
		if prev := s.active[l.spec.Name]; prev != nil {
			// Same name, new address: retire the old socket.
			s.retire(prev, drain)
		}
		s.active[l.spec.Name] = l
		s.serve(l)
	}
	return nil
}

// retire drains l in a goroutine that Shutdown waits for. Called with mu
// held.
func (s *Server) retire(l *listener, drain time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), drain)
	s.retiring[l] = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer cancel()
		if h := l.h3.Load(); h != nil {
			defer h.stop(ctx)
		}
		if l.srv.Shutdown(ctx) != nil {
			l.srv.Close()
		}
		s.mu.Lock()
		delete(s.retiring, l)
		s.mu.Unlock()
	}()
}

// retireH3 drains an HTTP/3 server that a reload turned off, in a
// goroutine that Shutdown waits for. Called with mu held.
func (s *Server) retireH3(h *h3Server, drain time.Duration) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), drain)
		defer cancel()
		h.stop(ctx)
	}()
}

func (s *Server) bind(sp Listener, opts Options) (*listener, error) {
	ln, err := net.Listen("tcp", sp.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s on %s: %w", sp.Name, sp.Addr, err)
	}
	l := &listener{spec: sp, log: s.log.With("listener", sp.Name), handshakeTimeout: opts.ReadHeaderTimeout, tcpAddr: ln.Addr().String()}
	if !sp.Uncapped {
		// The PROXY header is read first, so that the caps count the
		// client it names and TLS starts after it.
		l.proxy = newProxyListener(ln, &s.proxy, l.log)
		l.proxy.refused = func(reason string) { l.metrics.Load().refuse(reason) }
		ln = newLimitedListener(l.proxy, s.limits)
	}
	l.ln = ln
	l.handler.Store(&sp.Handler)
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(l.serveHTTP),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		// No ReadTimeout or WriteTimeout: they would cut downloads, SSE
		// and uploads; slow clients are bounded by ReadHeaderTimeout and
		// per-handler deadlines instead.
		ErrorLog:    slog.NewLogLogger(s.log.With("listener", sp.Name).Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return s.hijackCtx },
		ConnContext: connContext,
		// "OPTIONS *" reaches the handler (which refuses the path) instead
		// of net/http's own answer, so that every HTTP/1 request on a
		// connection passes the top handler and the framing guard's
		// request count stays exact.
		DisableGeneralOptionsHandler: true,
	}
	if sp.TLS != nil {
		l.tls.Store(sp.TLS)
		base := sp.TLS.Clone()
		// Handshakes read the current TLS settings, so a reload can change
		// them without rebinding.
		base.GetConfigForClient = func(hello *cryptotls.ClientHelloInfo) (*cryptotls.Config, error) {
			cur := l.tls.Load()
			if cur.GetConfigForClient != nil {
				return cur.GetConfigForClient(hello)
			}
			return cur, nil
		}
		// No srv.TLSConfig: tlsListener does the handshakes, and net/http
		// sets up HTTP/2 for the *tls.Conns it hands over with ALPN h2.
		l.tlsBase = base
		l.srv.HTTP2 = &http.HTTP2Config{
			// Browsers open up to 100 streams; 250 leaves headroom for
			// pages with many assets while bounding per-connection work.
			MaxConcurrentStreams: 250,
			// Probe silent h2 connections so dead peers are noticed.
			SendPingTimeout: 60 * time.Second,
			PingTimeout:     15 * time.Second,
		}
		// RFC 8441 (WebSockets over HTTP/2) stays off: gorilla/websocket
		// cannot serve it, and browsers would then fail the upgrade. Go
		// enables it only with GODEBUG=http2xconnect=1; never set that.
		// Likewise RFC 9220 on HTTP/3 (quic-go's default).
		if sp.HTTP3 {
			h, err := l.bindH3(l.tcpAddr, opts)
			if err != nil {
				ln.Close()
				return nil, err
			}
			l.h3.Store(h)
		}
	}
	return l, nil
}

// serveHTTP is the top handler of every request on the listener: the
// per-connection rules (framing guard, request cap, HTTP/2 reset budget),
// then the current handler.
func (l *listener) serveHTTP(w http.ResponseWriter, r *http.Request) {
	st, _ := r.Context().Value(connStateKey{}).(*connState)
	if st != nil {
		if !l.admit(st, w, r) {
			return
		}
		if r.ProtoMajor == 2 {
			defer l.afterHTTP2(st, r)
		}
	}
	if h := l.h3.Load(); h != nil && r.ProtoMajor < 3 {
		w.Header().Set("Alt-Svc", h.altSvc)
	}
	(*l.handler.Load()).ServeHTTP(w, r)
}

// afterHTTP2 counts a request whose stream the client reset before the
// handler finished (its context is then cancelled; a stream that ends
// normally is cancelled only after this runs).
func (l *listener) afterHTTP2(st *connState, r *http.Request) {
	if r.Context().Err() != nil {
		l.countReset(st, r)
	}
}

func (s *Server) serve(l *listener) {
	s.log.Info("listening", "listener", l.spec.Name, "addr", l.ln.Addr().String(), "tls", l.spec.TLS != nil)
	isTLS := l.spec.TLS != nil // l.spec changes on reload; read it here
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var err error
		if l.proxy != nil {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				l.proxy.run()
			}()
		}
		if isTLS {
			tl := newTLSListener(l.ln, l.tlsBase, l.handshakeTimeout, l.log)
			tl.refused = func() { l.metrics.Load().refuse(RefusedPlainHTTP) }
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				tl.run()
			}()
			err = l.srv.Serve(tl)
		} else {
			err = l.srv.Serve(guardListener{l.ln})
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("listener stopped", "listener", l.spec.Name, "err", err)
		}
	}()
	if h := l.h3.Load(); h != nil {
		s.serveH3(l, h)
	}
}

// serveH3 starts serving HTTP/3 on h, owned by s.wg.
func (s *Server) serveH3(l *listener, h *h3Server) {
	s.log.Info("listening", "listener", l.spec.Name, "addr", h.pc.LocalAddr().String(), "http3", true)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		h.run(l.log)
	}()
}

// Addr returns the bound address of the named listener, or nil.
func (s *Server) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.active[name]; ok {
		return l.ln.Addr()
	}
	return nil
}

// UDPAddr returns the bound UDP address of the named listener's HTTP/3
// server, or nil when it has none.
func (s *Server) UDPAddr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.active[name]; ok {
		if h := l.h3.Load(); h != nil {
			return h.pc.LocalAddr()
		}
	}
	return nil
}

// Shutdown stops accepting, waits for in-flight requests until ctx is done,
// then closes what is left, hijacked connections included. Listeners that
// an Apply retired and that are still draining are part of it: Shutdown
// returns when every serving and draining goroutine has ended.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ls := make([]*listener, 0, len(s.active))
	for _, l := range s.active {
		ls = append(ls, l)
	}
	s.active = map[string]*listener{}
	for _, endDrain := range s.retiring {
		// Their drain ends with ctx at the latest; s.wg waits for it.
		stop := context.AfterFunc(ctx, endDrain)
		defer stop()
	}
	s.mu.Unlock()
	s.limits.stop()

	var wg sync.WaitGroup
	errs := make([]error, len(ls))
	for i, l := range ls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if h := l.h3.Load(); h != nil {
				// In parallel with the TCP drain, under the same deadline.
				wg.Add(1)
				go func() {
					defer wg.Done()
					h.stop(ctx)
				}()
			}
			if err := l.srv.Shutdown(ctx); err != nil {
				l.srv.Close()
				errs[i] = fmt.Errorf("%s: %w", l.spec.Name, err)
			}
		}()
	}
	wg.Wait()
	s.cancelHijack()
	s.wg.Wait()
	return errors.Join(errs...)
}
