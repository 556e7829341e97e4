package server

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// connLimits caps open client connections across all capped listeners of
// a Server: max in total and perIP per client address. Zero means no cap.
// A connection over the per-IP cap is closed at once; one over max is held,
// unserved, until a slot frees, and its listener accepts nothing more
// meanwhile, so further clients wait in the kernel backlog. The caps can
// change while connections are open (a reload); they apply to new
// connections. Safe for concurrent use.
type connLimits struct {
	mu    sync.Mutex
	max   int                // guarded by mu
	perIP int                // guarded by mu
	open  int                // guarded by mu: connections holding a slot
	byIP  map[netip.Addr]int // guarded by mu
	// freed is closed (and cleared) when a slot frees up or the caps
	// change while an Accept waits. Guarded by mu; nil when none waits.
	freed chan struct{}
	// stopped is set by stop when the Server shuts down: from then on no
	// waiting connection is admitted, whichever listener it waits on.
	stopped bool // guarded by mu
}

func newConnLimits() *connLimits {
	return &connLimits{byIP: map[netip.Addr]int{}}
}

// set changes the caps; waiting Accepts look again.
func (cl *connLimits) set(max, perIP int) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.max, cl.perIP = max, perIP
	cl.wakeLocked()
}

// stop admits no more waiting connections. The Server's listeners shut
// down in parallel, and one of them closing its idle connections frees
// slots that a listener not yet closed would otherwise hand out.
func (cl *connLimits) stop() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.stopped = true
	cl.wakeLocked()
}

func (cl *connLimits) wakeLocked() {
	if cl.freed != nil {
		close(cl.freed)
		cl.freed = nil
	}
}

// admitIP counts a connection from ip, or reports false when ip is at its
// cap.
func (cl *connLimits) admitIP(ip netip.Addr) bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.perIP > 0 && cl.byIP[ip] >= cl.perIP {
		return false
	}
	cl.byIP[ip]++
	return true
}

// releaseIP undoes admitIP for a connection that got no slot.
func (cl *connLimits) releaseIP(ip netip.Addr) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.releaseIPLocked(ip)
}

func (cl *connLimits) releaseIPLocked(ip netip.Addr) {
	if cl.byIP[ip]--; cl.byIP[ip] <= 0 {
		delete(cl.byIP, ip)
	}
}

// waitSlot blocks until a connection fits under max and takes the slot.
// It reports false, taking nothing, when done is closed first, or was
// closed when a slot freed: a closing listener admits nothing more (a
// select with both ready would pick at random, and Shutdown frees slots
// just after it closes the listeners).
func (cl *connLimits) waitSlot(done <-chan struct{}) bool {
	cl.mu.Lock()
	for {
		select {
		case <-done:
			cl.mu.Unlock()
			return false
		default:
		}
		if cl.stopped {
			cl.mu.Unlock()
			return false
		}
		if cl.max <= 0 || cl.open < cl.max {
			break
		}
		if cl.freed == nil {
			cl.freed = make(chan struct{})
		}
		ch := cl.freed
		cl.mu.Unlock()
		select {
		case <-ch:
		case <-done:
			return false
		}
		cl.mu.Lock()
	}
	cl.open++
	cl.mu.Unlock()
	return true
}

// release gives back the slot and the per-IP count of a connection.
func (cl *connLimits) release(ip netip.Addr) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.open--
	cl.releaseIPLocked(ip)
	cl.wakeLocked()
}

// limitedListener counts its connections against the Server's limits.
type limitedListener struct {
	net.Listener
	limits    *connLimits
	closed    chan struct{} // closed by Close: ends a wait for a slot
	closeOnce sync.Once
}

func newLimitedListener(ln net.Listener, limits *connLimits) *limitedListener {
	return &limitedListener{Listener: ln, limits: limits, closed: make(chan struct{})}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		if !l.limits.admitIP(ip) {
			c.Close()
			continue
		}
		if !l.limits.waitSlot(l.closed) {
			l.limits.releaseIP(ip)
			c.Close()
			return nil, net.ErrClosed
		}
		return &limitedConn{Conn: c, limits: l.limits, ip: ip}, nil
	}
}

func (l *limitedListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

type limitedConn struct {
	net.Conn
	limits *connLimits
	ip     netip.Addr
	once   sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.limits.release(c.ip) })
	return err
}

// NetConn returns the accepted connection, as tls.Conn.NetConn does: an
// idle proxied WebSocket waits on its socket without a goroutine.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }

// ReadFrom keeps sendfile(2) for static files: without it the wrapper
// would hide the TCP connection's ReaderFrom.
func (c *limitedConn) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

// CloseWrite keeps half-close working for proxied upgrades (TCP FIN one
// way while the other direction still flows).
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// SyscallConn exposes the socket, so that the hub's fan-out can write to it
// without blocking (hub/flush.go) also when connections are capped.
func (c *limitedConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}
