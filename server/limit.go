package server

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
)

// limitListener caps open connections: max in total (Accept waits, leaving
// further clients in the kernel backlog) and perIP per client address (a
// connection over the cap is closed at once). Zero means no cap.
func limitListener(ln net.Listener, max, perIP int) net.Listener {
	if max <= 0 && perIP <= 0 {
		return ln
	}
	l := &limitedListener{Listener: ln, perIP: perIP, byIP: map[netip.Addr]int{}}
	if max > 0 {
		l.sem = make(chan struct{}, max)
	}
	return l
}

type limitedListener struct {
	net.Listener
	sem   chan struct{} // nil: no total cap; never closed
	perIP int

	mu   sync.Mutex
	byIP map[netip.Addr]int // guarded by mu
}

func (l *limitedListener) Accept() (net.Conn, error) {
	for {
		if l.sem != nil {
			l.sem <- struct{}{}
		}
		c, err := l.Listener.Accept()
		if err != nil {
			if l.sem != nil {
				<-l.sem
			}
			return nil, err
		}
		ip := remoteIP(c)
		if !l.admit(ip) {
			c.Close()
			if l.sem != nil {
				<-l.sem
			}
			continue
		}
		return &limitedConn{Conn: c, l: l, ip: ip}, nil
	}
}

func (l *limitedListener) admit(ip netip.Addr) bool {
	if l.perIP <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byIP[ip] >= l.perIP {
		return false
	}
	l.byIP[ip]++
	return true
}

func (l *limitedListener) release(ip netip.Addr) {
	if l.perIP > 0 {
		l.mu.Lock()
		if l.byIP[ip]--; l.byIP[ip] <= 0 {
			delete(l.byIP, ip)
		}
		l.mu.Unlock()
	}
	if l.sem != nil {
		<-l.sem
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

type limitedConn struct {
	net.Conn
	l    *limitedListener
	ip   netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.ip) })
	return err
}

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
