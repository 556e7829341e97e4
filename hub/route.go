package hub

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"

	"edge/config"
	"edge/internal/clientip"
	"edge/internal/httperr"
)

// route is the handler of one hub route path. Its configuration is swapped
// atomically on reload; connected clients stay.
type route struct {
	n    *Node
	path string
	base string // path with a trailing slash, for client.js

	cfg      atomic.Pointer[routeConfig]
	upgrader websocket.Upgrader // static after construction

	mu      sync.Mutex
	clients map[*client]struct{} // guarded by mu
	// postLimits are the publish rate limiters of SSE clients' POSTs, by
	// address (sse.go). Guarded by mu.
	postLimits map[string]*rate.Limiter
	perIP      map[string]int // open connections per client IP; guarded by mu
	retired    bool           // guarded by mu
	// hosts accumulates the site hosts of every Route call since the last
	// Retire, so that a path shared by several sites allows all of their
	// origins by default. Guarded by n.mu.
	hosts map[string]bool
	gen   uint64 // Node.gen when hosts was last reset; guarded by n.mu
	// pending is the configuration a reload gave, applied at Retire.
	// Guarded by n.mu.
	pending *routeConfig
}

// routeConfig is a compiled, immutable route configuration.
type routeConfig struct {
	hub     *config.Hub
	origins originPolicy
	auth    authenticator
	history histLimits
	// pubProxy and subProxy are the application's publish and subscribe
	// proxies (backend.go); nil without.
	pubProxy *backend
	subProxy *subscribeProxy
}

func (rt *route) config() *routeConfig { return rt.cfg.Load() }

func (rt *route) queueSize() int { return rt.cfg.Load().hub.QueueSize }

// compileRoute checks and prepares cfg for serving.
func (n *Node) compileRoute(cfg *config.Hub, hosts []string) (*routeConfig, error) {
	auth, err := newAuthenticator(&cfg.Auth, n.authTransport)
	if err != nil {
		return nil, err
	}
	op, err := newOriginPolicy(cfg.Origins, hosts)
	if err != nil {
		return nil, err
	}
	// cfg is defaulted (config.Parse, config.Load): History.Size is set.
	h := histLimits{size: *cfg.History.Size, ttl: cfg.History.TTL, maxBytes: int64(cfg.History.MaxBytes)}
	rc := &routeConfig{hub: cfg, origins: op, auth: auth, history: h}
	if p := cfg.PublishProxy; p != nil {
		rc.pubProxy = newBackend(p.URL, p.Timeout, n.authTransport, n)
	}
	if p := cfg.SubscribeProxy; p != nil {
		rc.subProxy = newSubscribeProxy(p, n.authTransport, n)
	}
	return rc, nil
}

func newRoute(n *Node, path string) *route {
	base := path
	if !strings.HasSuffix(base, "/") {
		base += "/"
	}
	rt := &route{n: n, path: path, base: base, clients: map[*client]struct{}{}, perIP: map[string]int{}}
	rt.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// gorilla only does the handshake: frames are written (conn.go)
		// and read (reader.go) by the hub. With no read buffer size
		// gorilla reuses net/http's reader instead of allocating one, and
		// the pool keeps it from allocating a write buffer.
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{Subprotocol},
		CheckOrigin:     func(r *http.Request) bool { return rt.config().origins.allow(r) },
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			rt.refuse(w, refuseHandshake, status, strings.TrimPrefix(reason.Error(), "websocket: "))
		},
		// The hub decides on permessage-deflate itself and leaves gorilla
		// a request that agrees (negotiateDeflate).
		EnableCompression: true,
	}
	return rt
}

// Subprotocol is the WebSocket subprotocol of hub protocol v1. A client
// that offers subprotocols (for example to carry a "bearer.<token>") must
// offer this one too, since the server selects it.
const Subprotocol = "edge.v1"

// ServeHTTP serves the browser client at <path>client.js, the SSE
// transport at <path>sse and <path>publish (sse.go), and WebSocket
// upgrades everywhere under the route.
func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, rt.base) {
	case "client.js":
		serveClientJS(w, r, clientJS)
		return
	case "client.mjs":
		serveClientJS(w, r, clientMJS)
		return
	case "sse":
		if !websocket.IsWebSocketUpgrade(r) {
			rt.serveSSE(w, r)
			return
		}
	case "publish":
		if !websocket.IsWebSocketUpgrade(r) {
			rt.servePublish(w, r)
			return
		}
	}
	rt.serveWebSocket(w, r)
}

// writeRefusal answers a request that may not connect: a real status and a
// one-line reason, never a 200 and never a silent close. The page is
// edge's one error page (httperr) with the reason as its text.
func writeRefusal(w http.ResponseWriter, status int, reason string) {
	h := w.Header()
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="edge hub"`)
	}
	if status == http.StatusUpgradeRequired {
		h.Set("Upgrade", "websocket")
		h.Set("Connection", "Upgrade")
	}
	httperr.Text(w, status, reason)
}

// refuse answers a refused upgrade and counts it under why, the label an
// operator sees (edge_hub_connections_refused_total{reason}); reason is
// the text the client gets.
func (rt *route) refuse(w http.ResponseWriter, why refuseReason, status int, reason string) {
	rt.n.stats.refused.Add(1)
	rt.n.stats.refusedBy[why].Add(1)
	rt.n.log.Debug("hub connection refused", "route", rt.path, "status", status, "why", why.String(), "reason", reason)
	writeRefusal(w, status, reason)
}

func (rt *route) serveWebSocket(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		rt.refuse(w, refuseNotWebSocket, http.StatusUpgradeRequired, "this is a WebSocket endpoint: connect with a WebSocket client")
		return
	}
	a := rt.admitConn(w, r)
	if a == nil {
		return
	}
	defer a.done()
	deflate := negotiateDeflate(r, a.cfg.hub.Compression)
	tap := &hijackTap{ResponseWriter: w}
	ws, err := rt.upgrader.Upgrade(tap, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	// From here on the hub reads and writes the socket itself; ws is
	// left to the garbage collector.
	c := a.client(ws.UnderlyingConn())
	if deflate {
		c.deflate, c.deflateMin = true, uint32(min(uint64(a.cfg.hub.CompressionMinSize), 1<<31))
	}
	c.sock = socketOf(c.nc)
	if c.sock == nil {
		c.sealer = sealerOf(c.nc)
	}
	c.rd.setEarly(tap.early)
	if !rt.register(c) {
		c.nc.SetWriteDeadline(time.Now().Add(closeGrace))
		c.nc.Write(goingAwayFrame)
		c.nc.Close()
		c.rd.release()
		return
	}
	a.admitted = true
	c.start(a.cfg, a.channels, nil)
}

// admission is a connection that passed every check before it is
// established (WebSocket upgrade or SSE stream). It holds a count against
// the per-IP cap until done, unless admitted.
type admission struct {
	rt       *route
	cfg      *routeConfig
	g        *grant
	ip       string
	channels []string
	admitted bool // the connection is registered: it releases the count itself
}

func (a *admission) done() {
	if !a.admitted {
		a.rt.release(a.ip)
	}
}

// client returns the connection's client on nc.
func (a *admission) client(nc net.Conn) *client {
	c := &client{n: a.rt.n, route: a.rt, nc: nc, ip: a.ip, grant: a.g, raw: a.cfg.hub.Raw,
		heartbeat: newHeartbeat(a.cfg.hub.RawHeartbeat), id: a.rt.n.connSeq.Add(1), connected: time.Now().Unix()}
	if a.cfg.hub.PresenceSubs {
		c.subject = a.g.sub
	}
	return c
}

// admitConn runs the checks of PROTOCOL.md §1 on a connection request, in
// order: the route is serving, the origin, the channels, the per-IP cap,
// authentication, the channels' grants and the subscribe proxy. On a
// refusal it answers and returns nil.
func (rt *route) admitConn(w http.ResponseWriter, r *http.Request) *admission {
	if rt.n.isClosed() || rt.isRetired() {
		rt.refuse(w, refuseUnavailable, http.StatusServiceUnavailable, "hub shutting down")
		return nil
	}
	cfg := rt.config()
	if cfg == nil {
		rt.refuse(w, refuseUnavailable, http.StatusServiceUnavailable, "hub route not configured")
		return nil
	}
	if !cfg.origins.allow(r) {
		rt.refuse(w, refuseOrigin, http.StatusForbidden, "origin not allowed")
		return nil
	}
	channels := r.URL.Query()["channel"]
	for _, ch := range channels {
		if !config.ValidChannel(ch) {
			rt.refuse(w, refuseBadRequest, http.StatusBadRequest, fmt.Sprintf("invalid channel name %q", ch))
			return nil
		}
	}
	if len(channels) > cfg.hub.MaxSubscriptions {
		rt.refuse(w, refuseBadRequest, http.StatusBadRequest, fmt.Sprintf("too many channels: at most %d", cfg.hub.MaxSubscriptions))
		return nil
	}
	// The one client identity (server.trusted_proxies): behind a load
	// balancer every visitor has their own budget, not the balancer's.
	ip := clientip.String(r)
	if !rt.admit(ip, cfg.hub.MaxConnectionsPerIP) {
		rt.refuse(w, refusePerIP, http.StatusTooManyRequests, "too many connections from this address")
		return nil
	}
	a := &admission{rt: rt, cfg: cfg, ip: ip, channels: channels}
	g, ref := cfg.auth.authenticate(r)
	if ref != nil {
		why := refuseAuth
		if ref.status == http.StatusServiceUnavailable {
			why = refuseAuthUnavailable // the backend's fault, not the client's
		}
		rt.refuse(w, why, ref.status, ref.reason)
		a.done()
		return nil
	}
	for _, ch := range channels {
		if !cfg.allowed(g, ch) {
			rt.refuse(w, refuseChannel, http.StatusForbidden, fmt.Sprintf("channel not allowed: %s", ch))
			a.done()
			return nil
		}
	}
	for _, ch := range channels {
		switch code, msg := cfg.subProxy.check(g, ip, "", ch); code {
		case errForbidden:
			rt.refuse(w, refuseChannel, http.StatusForbidden, fmt.Sprintf("channel not allowed: %s: %s", ch, msg))
			a.done()
			return nil
		case errUnavailable:
			rt.refuse(w, refuseAuthUnavailable, http.StatusServiceUnavailable, "subscribe backend unavailable")
			a.done()
			return nil
		}
	}
	a.g = cfg.keep(g)
	return a
}

// hijackTap hands the upgrader the hijacked connection with nothing
// buffered, keeping what net/http had already read past the request: a
// client may send its first frames in the same packet as the handshake,
// and gorilla refuses a connection with buffered bytes ("client sent data
// before handshake is complete"). The client's reader parses them first.
type hijackTap struct {
	http.ResponseWriter
	early []byte
}

func (t *hijackTap) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(t.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	if n := brw.Reader.Buffered(); n > 0 {
		t.early = make([]byte, n)
		brw.Reader.Read(t.early) // buffered bytes only: no socket read
	}
	return nc, brw, nil
}

// keep returns g as a connection keeps it: the token's claims only when
// the application (publish or subscribe proxy) is sent them, since every
// idle connection would hold them otherwise.
func (rc *routeConfig) keep(g *grant) *grant {
	if rc.pubProxy == nil && rc.subProxy == nil {
		g.claims = nil
	}
	return g
}

// allowed reports whether g may subscribe to channel on this route.
func (rc *routeConfig) allowed(g *grant, channel string) bool {
	if len(rc.hub.Channels) > 0 && !matchAny(rc.hub.Channels, channel, g.sub) {
		return false
	}
	if g.channels != nil && !matchAny(g.channels, channel, g.sub) {
		return false
	}
	return true
}

// register adds c to the route unless the node is closing or the route
// retired.
func (rt *route) register(c *client) bool {
	rt.n.mu.RLock()
	defer rt.n.mu.RUnlock()
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.n.closed || rt.retired {
		return false
	}
	rt.clients[c] = struct{}{}
	rt.n.wg.Add(1) // released in client.finish
	rt.n.stats.conns.Add(1)
	rt.n.stats.accepted.Add(1)
	return true
}

func (rt *route) isRetired() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.retired
}

func (rt *route) remove(c *client) {
	rt.mu.Lock()
	delete(rt.clients, c)
	rt.mu.Unlock()
	rt.release(c.ip)
}

// admit counts a connection from ip against the per-IP cap (0: none).
func (rt *route) admit(ip string, limit int) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if limit > 0 && rt.perIP[ip] >= limit {
		return false
	}
	rt.perIP[ip]++
	return true
}

func (rt *route) release(ip string) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.perIP[ip]--; rt.perIP[ip] <= 0 {
		delete(rt.perIP, ip)
	}
}

// snapshot returns the route's clients.
func (rt *route) snapshot() []*client {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	cs := make([]*client, 0, len(rt.clients))
	for c := range rt.clients {
		cs = append(cs, c)
	}
	return cs
}
