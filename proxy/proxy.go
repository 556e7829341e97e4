// Package proxy is edge's reverse proxy: a route handler that forwards
// requests to a pool of upstream servers (http, https, unix sockets) with
// balancing, passive and active health, retries of failed connects,
// forwarding headers, streaming, and pass-through of WebSockets and other
// upgrades.
//
// It is built on httputil.ReverseProxy, which rewrites the request (Rewrite,
// so client-sent forwarding headers are dropped), strips hop-by-hop headers
// both ways, keeps Connection/Upgrade for upgrades (also from Firefox's
// "Connection: keep-alive, Upgrade"), streams bodies and flushes SSE and
// chunked responses at once. edge adds around it: the choice of server and
// retries in a RoundTripper, a lean HTTP/1.1 client for requests without a
// body (lean.go; the rest goes through an http.Transport), request
// buffering and the blame for client body failures (body.go: they answer
// 400/408/413 or are abandoned as 499, and never count against an
// upstream), a cap on concurrent dials per server, and its own
// handling of 101 responses, so that tunnels have an idle timeout, hold
// no goroutine or buffer while idle (tunnel.go, park_linux.go), outlive
// the Handler and the HTTP server's timeouts, and can be closed with a
// WebSocket 1001 at shutdown.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http/httpguts"

	"edge/config"
	"edge/internal/clientip"
	"edge/internal/compress"
	"edge/internal/httperr"
)

// Options are what a Handler takes besides its route configuration.
type Options struct {
	// Log receives failures (Warn) and per-request detail (Debug); the
	// caller adds the component attribute. Nil discards.
	Log *slog.Logger
	// Registerer receives the proxy's metrics; handlers of the same
	// Registerer share them. Nil: no metrics.
	Registerer prometheus.Registerer
	// Site and Route label the proxy's metrics ({site, route}, as the
	// server's and every handler's) and its log records: the site's name
	// (config.Site.Name: its first host, or "default") and the route's
	// path, such as "dash.example.com" and "/socket/". Default "".
	Site, Route string
	// Transport, when set, makes the client that talks to the upstreams in
	// place of HTTP (fastcgi.NewTransport): it gets the proxy's dial
	// (dial slots, unix sockets, and connect errors that the retries and
	// passive health recognise) and carries every request, health probes
	// included. The lean HTTP/1.1 path is off then: it speaks HTTP only.
	// Nil: HTTP/1.1 through the lean client and an http.Transport.
	Transport func(dial DialFunc) RoundTripper
	// Tunnels is the set this Handler's upgraded connections join. Pass the
	// same set to every Handler of the process so that one CloseAll (or
	// CloseTunnels on any handler) at shutdown reaches tunnels opened
	// before a reload too. Nil: a set of this Handler's own.
	Tunnels *Tunnels
}

// Handler proxies the requests of one route to its upstream pool. It is
// safe for concurrent use. New starts no goroutines: Run runs the active
// health checks, Close releases idle upstream connections. Upgraded
// connections (tunnels) live on after Close until they end or CloseTunnels.
type Handler struct {
	// Static after New.
	cfg        *config.Proxy
	log        *slog.Logger
	upstreams  *upstreams
	transport  RoundTripper
	lean       *lean // nil: keepalive 0 or Options.Transport, everything goes through transport
	rp         *httputil.ReverseProxy
	tunnels    *Tunnels
	tunnelIdle time.Duration
	buffering  int64                // request_buffering in bytes; 0: off
	comp       *compress.Compressor // nil: compress off
	metrics    *metrics             // nil: no metrics

	inflight atomic.Int64 // requests in ServeHTTP
	closed   atomic.Bool

	mu    sync.Mutex
	quit  chan struct{}  // closed by Close; never sent on
	runWG sync.WaitGroup // Run calls; Add only under mu before quit is closed
}

// New builds the Handler of a route. cfg must have had the config defaults
// applied (config.Load and config.Parse do): the defaults are written once,
// in config, and New refuses a configuration without them.
func New(cfg *config.Proxy, opts Options) (*Handler, error) {
	if !defaulted(cfg) {
		return nil, errNoDefaults
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.Site != "" || opts.Route != "" {
		log = log.With("site", opts.Site, "route", opts.Route)
	}
	p, err := newUpstreams(cfg)
	if err != nil {
		return nil, err
	}
	d, err := newDialer(cfg, p)
	if err != nil {
		return nil, err
	}
	var tr RoundTripper
	var ln *lean
	if opts.Transport != nil {
		tr = opts.Transport(d.dial)
	} else {
		tr, ln = newTransport(cfg, d), newLean(cfg, d, p)
	}
	h := &Handler{
		cfg: cfg, log: log, upstreams: p, transport: tr, lean: ln,
		tunnels:    opts.Tunnels,
		tunnelIdle: *cfg.TunnelIdleTimeout,
		buffering:  int64(*cfg.RequestBuffering),
		comp:       compress.New(cfg.Compress),
		quit:       make(chan struct{}),
	}
	if h.tunnels == nil {
		h.tunnels = &Tunnels{}
	}
	if opts.Registerer != nil {
		if h.metrics, err = newMetrics(opts.Registerer, opts.Site, opts.Route); err != nil {
			return nil, err
		}
		h.metrics.up.add(p, opts.Site, opts.Route)
	}
	h.rp = &httputil.ReverseProxy{
		Rewrite:        h.rewrite,
		Transport:      &retryTransport{h: h, transport: tr, lean: h.lean, retries: *cfg.Retries},
		FlushInterval:  cfg.FlushInterval,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BufferPool:     bufferPool{},
		ModifyResponse: h.modifyResponse,
		ErrorHandler:   h.handleError,
	}
	return h, nil
}

// DialFunc connects to an upstream's address, as net.Dialer.DialContext.
type DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error)

// RoundTripper is what carries a Handler's requests to its upstreams:
// an http.Transport, or the one Options.Transport makes.
type RoundTripper interface {
	http.RoundTripper
	// CloseIdleConnections closes the idle connections, as
	// http.Transport's.
	CloseIdleConnections()
}

var errNoDefaults = errors.New("proxy: configuration without defaults: build it with config.Parse or config.Load")

// defaulted reports whether the config defaults were applied to cfg: every
// field that config defaults is set (a zero there means "default" before
// config.Parse, and never after it).
func defaulted(cfg *config.Proxy) bool {
	if cfg.Balance == "" || cfg.MaxFails == nil || cfg.FailTimeout == 0 || cfg.DialTimeout == 0 ||
		cfg.TLSHandshakeTimeout == 0 || cfg.ResponseHeaderTimeout == 0 || cfg.TunnelIdleTimeout == nil ||
		cfg.KeepAlive == nil || cfg.Retries == nil || cfg.RequestBuffering == nil || cfg.MaxConcurrentDials == 0 {
		return false
	}
	for _, u := range cfg.Upstreams {
		if u.Weight == 0 || u.MaxFails == nil || u.FailTimeout == 0 {
			return false
		}
	}
	if hc := cfg.HealthCheck; hc != nil && (hc.Path == "" || hc.Interval == 0 || hc.Timeout == 0 || hc.Fails == 0 || hc.Passes == 0) {
		return false
	}
	return true
}

// reqState is what the stages of one request share, through its context:
// it is the request's context, with itself as the value of stateKey (one
// allocation less than context.WithValue).
type reqState struct {
	context.Context
	w        http.ResponseWriter
	client   netip.Addr // for ip_hash
	upstream *upstream  // the server of the successful attempt
	failed   *upstream  // the server of the last failed attempt
	err      error      // the error of the last failed attempt
	logged   bool       // err was logged with its upstream
	buffered bool       // the whole body was read before the upstream was contacted
	tunnel   bool       // upgraded: the tunnel now owns server.active
	upConn   net.Conn   // the connection an upgrade request went out on
}

type stateKey struct{}

// Value implements context.Context.
func (st *reqState) Value(key any) any {
	if key == (stateKey{}) {
		return st
	}
	return st.Context.Value(key)
}

func stateFrom(ctx context.Context) *reqState {
	st, _ := ctx.Value(stateKey{}).(*reqState)
	if st == nil {
		st = &reqState{} // a request that did not come through ServeHTTP
	}
	return st
}

// ServeHTTP proxies r. The request may be for any path under any route
// prefix: the path goes upstream unchanged. The client's identity comes
// from clientip (the server's router resolves it once per request).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code := h.refuse(r); code != 0 {
		if code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", allowedMethods)
		}
		h.metrics.request("", code)
		httperr.Error(w, code)
		return
	}
	st := &reqState{Context: r.Context(), w: w}
	h.inflight.Add(1)
	defer h.done(st)
	r = r.WithContext(st)
	if err := h.bufferBody(r, st); err != nil {
		h.clientFailed(w, r, st, err)
		return
	}
	h.rp.ServeHTTP(w, r)
}

// allowedMethods is the Allow header of a 405: the methods edge forwards.
const allowedMethods = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

// refuse returns the status of a request that must not reach an upstream,
// or 0. CONNECT would make edge an open tunnel. TRACE makes the backend
// echo the request back, the client's cookies and the headers edge adds
// included (cross-site tracing), unless the route allows it. Both are
// matched in any case: methods are case-sensitive on the wire, but
// frameworks (Symfony, Laravel) upper-case them, so "trace" is a TRACE to
// them. An Upgrade value that is not printable ASCII would be copied into
// a 101.
func (h *Handler) refuse(r *http.Request) int {
	switch {
	case strings.EqualFold(r.Method, http.MethodConnect):
		return http.StatusMethodNotAllowed
	case strings.EqualFold(r.Method, http.MethodTrace) && !h.cfg.AllowTrace:
		return http.StatusMethodNotAllowed
	}
	if httpguts.HeaderValuesContainsToken(r.Header["Connection"], "upgrade") {
		if up := r.Header.Get("Upgrade"); up != "" && !printableASCII(up) {
			return http.StatusBadRequest
		}
	}
	return 0
}

func (h *Handler) done(st *reqState) {
	if st.upstream != nil && !st.tunnel {
		st.upstream.active.Add(-1)
	}
	if h.inflight.Add(-1) == 0 && h.closed.Load() {
		// Connections that went back to the pool after Close.
		h.transport.CloseIdleConnections()
	}
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// rewrite is ReverseProxy's Rewrite: the server is chosen later, per
// attempt, by the retryTransport; here the request gets its Host and forwarding
// headers.
func (h *Handler) rewrite(pr *httputil.ProxyRequest) {
	st := stateFrom(pr.In.Context())
	s := h.upstreams.list[0]
	pr.Out.URL.Scheme, pr.Out.URL.Host = s.scheme, s.host // replaced per attempt
	pr.Out.Host = pr.In.Host
	if h.cfg.Host != "" {
		pr.Out.Host = h.cfg.Host
	}
	info := clientip.InfoOf(pr.In)
	st.client = info.Client
	setForwarding(info, pr.In, pr.Out, h.cfg.Forwarded)
	if st.buffered {
		// The client got its 100 Continue when edge read the body; the
		// upstream gets the body at once rather than after its own.
		pr.Out.Header.Del("Expect")
	}
	// h2c upgrades would turn the tunnel into a second HTTP server behind
	// edge's routing (h2c smuggling): forward such a request as plain
	// HTTP/1.1.
	if strings.EqualFold(pr.Out.Header.Get("Upgrade"), "h2c") {
		pr.Out.Header.Del("Upgrade")
		pr.Out.Header.Del("Connection")
	}
}

// modifyResponse counts the response, takes over 101 responses and
// compresses what proxy.compress says (compress.go). A
// response without a Content-Type goes to the client without one, as
// nginx passes it: net/http would sniff one from the first body write
// (text/html for "<html>") unless ReverseProxy's flush of the header came
// first, which depends on timing for streamed bodies.
func (h *Handler) modifyResponse(res *http.Response) error {
	st := stateFrom(res.Request.Context())
	if res.StatusCode == http.StatusSwitchingProtocols {
		return h.upgrade(st, res)
	}
	if _, ok := res.Header["Content-Type"]; !ok && st.w != nil {
		st.w.Header()["Content-Type"] = nil // present: no sniffing; nil: not written
	}
	if h.comp != nil {
		h.compressResponse(res)
	}
	h.metrics.request(upstreamName(st.upstream), res.StatusCode)
	return nil
}

func upstreamName(s *upstream) string {
	if s == nil {
		return ""
	}
	return s.name
}

// errTunnel tells handleError that the response was an upgrade, now a
// tunnel: nothing is left to write.
var errTunnel = errors.New("upgraded to a tunnel")

// errBadUpgrade is an upstream switching to another protocol than asked.
var errBadUpgrade = errors.New("bad upgrade")

// upgrade takes over a 101 response from ReverseProxy (whose own copy has
// no idle timeout, ends with the request and pools no buffers): it
// hijacks the client connection, writes the 101 and starts a tunnel that
// lives on after ServeHTTP returns. It returns errTunnel once the
// connection is hijacked, or an error that handleError answers with 502.
func (h *Handler) upgrade(st *reqState, res *http.Response) error {
	reqUp := upgradeType(res.Request.Header)
	resUp := upgradeType(res.Header)
	if reqUp == "" {
		// RFC 9110 section 15.2.2: only to a protocol the client asked for.
		return fmt.Errorf("%w: upstream switched protocols unasked", errBadUpgrade)
	}
	if !printableASCII(resUp) || !strings.EqualFold(reqUp, resUp) {
		return fmt.Errorf("%w: upstream switched to %q when %q was asked for", errBadUpgrade, resUp, reqUp)
	}
	backend, ok := res.Body.(io.ReadWriteCloser)
	if !ok {
		return fmt.Errorf("%w: 101 response body is not writable", errBadUpgrade)
	}
	conn, brw, err := http.NewResponseController(st.w).Hijack()
	if err != nil {
		return fmt.Errorf("%w: hijack: %w", errBadUpgrade, err)
	}
	// The connections are ours now: ReverseProxy must not close the
	// upstream one, and no error page can be written any more.
	res.Body = http.NoBody
	s := st.upstream

	hdr := res.Header
	removeHopByHop(hdr)
	hdr.Set("Connection", "Upgrade")
	hdr.Set("Upgrade", resUp)
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	hdr.Write(brw)
	brw.WriteString("\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		backend.Close()
		h.log.Debug("writing 101 to client failed", "upstream", s.name, "remote_addr", conn.RemoteAddr().String(), "err", err)
		h.metrics.request(s.name, httperr.StatusClientClosed)
		return errTunnel // not a tunnel: ServeHTTP releases s.active
	}
	// Bytes the client sent after its request, before the 101 (a pipelining
	// client), are in the hijacked reader; they go first.
	var pre []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pre = append([]byte(nil), b...)
	}
	st.tunnel = true
	h.metrics.request(s.name, http.StatusSwitchingProtocols)
	h.metrics.tunnel(1)
	ws := strings.EqualFold(resUp, "websocket")
	t := newTunnel(tunnelSpec{
		set: h.tunnels, log: h.log, upstream: s.name,
		client: conn, pre: pre, backend: backend, upConn: st.upConn,
		ws: ws, idle: h.tunnelIdle,
		onEnd: func() {
			s.active.Add(-1)
			h.metrics.tunnel(-1)
		},
	})
	h.log.Debug("tunnel open", "upstream", s.name, "remote_addr", conn.RemoteAddr().String(), "protocol", resUp)
	t.run()
	return errTunnel
}

// upgradeType returns the protocol a request or response upgrades to, as
// ReverseProxy reads it: Connection must hold the "upgrade" token.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// hopHeaders are removed from a 101 response before Connection and Upgrade
// are set again, as ReverseProxy does for other responses (RFC 9110
// section 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for _, sf := range strings.Split(f, ",") {
			if sf = strings.TrimSpace(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, f := range hopHeaders {
		h.Del(f)
	}
}

// handleError is ReverseProxy's ErrorHandler: it answers a request that
// got no response from upstream. Failures of the client (its body, its
// going away) are answered by clientFailed; they were not counted against
// the upstream.
func (h *Handler) handleError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, errTunnel) {
		return
	}
	st := stateFrom(r.Context())
	if clientFault(r, err) {
		h.clientFailed(w, r, st, err)
		return
	}
	code, cause := h.classify(err)
	upstream := upstreamName(st.upstream)
	if upstream == "" {
		upstream = upstreamName(st.failed)
	}
	if !st.logged {
		h.log.Warn("proxy error", "upstream", upstream, "cause", cause, "status", code,
			"method", r.Method, "path", r.URL.Path, "err", err)
		h.metrics.failure(upstream, cause)
	}
	h.metrics.request(upstream, code)
	httperr.Error(w, code)
}

// classify maps an upstream error to the status code the client gets and
// a cause.
func (h *Handler) classify(err error) (int, string) {
	switch {
	case errors.Is(err, errNoUpstream):
		return http.StatusServiceUnavailable, "no_upstream"
	case errors.Is(err, errBadUpgrade):
		return http.StatusBadGateway, "bad_upgrade"
	}
	cause, timeout := errorCause(err)
	if timeout {
		return http.StatusGatewayTimeout, cause
	}
	return http.StatusBadGateway, cause
}

// upstreamFailed logs and counts a failed attempt, and keeps passive
// health.
func (h *Handler) upstreamFailed(r *http.Request, s *upstream, err error, retry bool) {
	st := stateFrom(r.Context())
	cause, _ := errorCause(err)
	down := h.upstreams.fail(s)
	h.upstreams.noteError(s, cause+": "+err.Error())
	h.log.Warn("upstream failed", "upstream", s.name, "cause", cause, "retry", retry,
		"marked_down", down, "method", r.Method, "path", r.URL.Path, "err", err)
	h.metrics.failure(s.name, cause)
	st.logged = true
}

// CloseTunnels ends the open tunnels of this Handler's Tunnels set (all of
// the process's when the set is shared): WebSockets get a 1001 "going away"
// close frame both ways first. It returns when they have ended, closing
// what is left when ctx is done. Call it at shutdown, after the drain.
func (h *Handler) CloseTunnels(ctx context.Context) {
	h.tunnels.CloseAll(ctx)
}

// Close stops the active health checks (Run returns), waits for them, and
// closes idle upstream connections; requests in flight finish and their
// connections are closed after them. Open tunnels are left alone. Close is
// idempotent.
func (h *Handler) Close() error {
	h.mu.Lock()
	if !h.closed.Load() {
		h.closed.Store(true)
		close(h.quit)
	}
	h.mu.Unlock()
	h.runWG.Wait()
	if h.metrics != nil {
		h.metrics.up.remove(h.upstreams)
	}
	h.transport.CloseIdleConnections()
	h.lean.closeIdle()
	return nil
}

var (
	_ http.Handler        = (*Handler)(nil)
	_ http.RoundTripper   = (*retryTransport)(nil)
	_ httputil.BufferPool = bufferPool{}
)
