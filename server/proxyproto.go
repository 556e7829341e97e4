package server

import (
	"bufio"
	"bytes"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pires/go-proxyproto"

	"edge/config"
)

// ProxyProtocol accepts HAProxy's PROXY protocol header (v1 text, v2
// binary) from trusted load balancers on the capped listeners (http and
// https, not admin). The header's source address becomes the connection's
// RemoteAddr, so the per-IP caps, r.RemoteAddr and everything that reads
// the client from it (internal/clientip) see the real client.
type ProxyProtocol struct {
	// Trusted are the peers allowed to send the header. A connection from
	// any other peer that starts with a PROXY header is closed.
	Trusted []netip.Prefix
	// Timeout bounds the wait for a trusted peer's header; 0 means
	// config.DefaultProxyProtocolTimeout.
	Timeout time.Duration
	// Required closes a trusted peer's connection that does not start with
	// the header (nginx's proxy_protocol listener); false serves it with
	// the peer as the client.
	Required bool
}

func (pp *ProxyProtocol) trusts(a netip.Addr) bool {
	for _, p := range pp.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var (
	errProxyUntrusted = errors.New("PROXY protocol header from an untrusted peer")
	errProxyMissing   = errors.New("no PROXY protocol header")
)

// proxyListener sits right above the socket of a capped listener. With
// PROXY protocol off it hands connections on as they are. With it on, a
// trusted peer's header is read in a goroutine of its own, bounded by the
// timeout, so that a peer that connects and sends nothing never holds up
// Accept; other peers are handed on at once in a proxyConn that refuses a
// PROXY header on its first read. It runs below limitedListener, so the
// per-IP caps count the address from the header, and below tlsListener, so
// the header is read before the TLS handshake.
type proxyListener struct {
	handoff                                // Accept, Addr: connections past their header
	policy  *atomic.Pointer[ProxyProtocol] // the Server's; nil value: off
	log     *slog.Logger
	refused func(reason string) // counts a refused connection; set before run

	mu      sync.Mutex
	reading map[net.Conn]struct{} // guarded by mu: headers being read; Close cuts them short
	headers sync.WaitGroup        // header goroutines; run waits for them
}

func newProxyListener(inner net.Listener, policy *atomic.Pointer[ProxyProtocol], log *slog.Logger) *proxyListener {
	return &proxyListener{handoff: newHandoff(inner), policy: policy, log: log,
		reading: map[net.Conn]struct{}{}}
}

// run accepts connections until the inner listener fails for good
// (Close), then waits for the header goroutines it started, which end at
// once after Close.
func (l *proxyListener) run() {
	defer l.headers.Wait()
	l.acceptLoop(func(c net.Conn) {
		pp := l.policy.Load()
		switch {
		case pp == nil:
		case pp.trusts(remoteIP(c)):
			l.headers.Add(1)
			go l.readHeader(c, pp)
			return
		default:
			c = &proxyConn{wrapped: wrapped{c}, refuse: l.refuseFunc(c)}
		}
		l.hand(c)
	})
}

func (l *proxyListener) refuseFunc(c net.Conn) func() {
	return func() {
		l.log.Debug("PROXY protocol header refused", "remote_addr", c.RemoteAddr().String(), "err", errProxyUntrusted)
		if l.refused != nil {
			l.refused(RefusedProxyUntrusted)
		}
	}
}

// readHeader reads the PROXY header of a trusted peer's connection and
// hands the connection on with the header's addresses.
func (l *proxyListener) readHeader(c net.Conn, pp *ProxyProtocol) {
	defer l.headers.Done()
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		c.Close()
		return
	default:
	}
	l.reading[c] = struct{}{}
	l.mu.Unlock()

	timeout := pp.Timeout
	if timeout <= 0 {
		timeout = config.DefaultProxyProtocolTimeout
	}
	c.SetReadDeadline(time.Now().Add(timeout))
	pc, err := parseProxyHeader(c, pp.Required)
	c.SetReadDeadline(time.Time{})

	l.mu.Lock()
	delete(l.reading, c)
	l.mu.Unlock()
	if err != nil {
		l.log.Debug("PROXY protocol header refused", "remote_addr", c.RemoteAddr().String(), "err", err)
		if l.refused != nil {
			l.refused(RefusedProxyHeader)
		}
		c.Close()
		return
	}
	l.hand(pc)
}

// parseProxyHeader reads the header at the start of c. The bytes read past
// it (the start of the request or TLS handshake) stay in the returned
// connection. A v2 header longer than the read buffer (4 KiB) is refused
// rather than waited for.
func parseProxyHeader(c net.Conn, required bool) (*proxyConn, error) {
	br := bufio.NewReader(c)
	h, err := proxyproto.Read(br)
	pc := &proxyConn{wrapped: wrapped{c}, checked: true}
	switch {
	case errors.Is(err, proxyproto.ErrNoProxyProtocol):
		if required {
			return nil, errProxyMissing
		}
	case err != nil:
		return nil, err
	case h.Command.IsProxy():
		// LOCAL (a balancer's own health check) and UNKNOWN/UNSPEC keep the
		// peer's address, as the specification says; so do unix sockets.
		if src, ok := h.SourceAddr.(*net.TCPAddr); ok {
			pc.remote = src
		}
	}
	if n := br.Buffered(); n > 0 {
		rest, _ := br.Peek(n)
		pc.pending = bytes.Clone(rest)
	}
	return pc, nil
}

// Close stops accepting and cuts short the headers being read.
func (l *proxyListener) Close() error {
	return l.close(func() {
		l.mu.Lock()
		for c := range l.reading {
			c.SetReadDeadline(time.Now())
		}
		l.mu.Unlock()
	})
}

// proxyConn is a connection on a listener with PROXY protocol on: either a
// trusted peer's, whose header was read (remote and the bytes read
// past the header in pending), or another peer's, whose first bytes are
// checked on its first read (checked false): a PROXY header there closes
// the connection, so that no client can claim an address. It keeps the
// optional interfaces of the connection it wraps that the layers above
// use.
type proxyConn struct {
	wrapped
	remote net.Addr // static; nil: the peer's

	// Owned by the reader.
	checked bool
	pending []byte
	refuse  func() // called when an untrusted peer sends a header
}

// sniffLen is how many bytes tell a PROXY header from anything else: the
// v2 signature's length (v1's "PROXY" is shorter).
const sniffLen = 12

var (
	sigV1 = []byte("PROXY")
	sigV2 = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// sniff reports whether b starts with a PROXY signature (1), cannot (-1),
// or is too short to tell (0).
func sniff(b []byte) int {
	undecided := false
	for _, sig := range [][]byte{sigV1, sigV2} {
		n := min(len(b), len(sig))
		if bytes.Equal(b[:n], sig[:n]) {
			if n == len(sig) {
				return 1
			}
			undecided = true
		}
	}
	if undecided {
		return 0
	}
	return -1
}

func (c *proxyConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		if c.pending = c.pending[n:]; len(c.pending) == 0 {
			c.pending = nil
		}
		return n, nil
	}
	if c.checked || len(p) == 0 {
		return c.Conn.Read(p)
	}
	if len(p) < sniffLen {
		var buf [sniffLen]byte
		n, err := c.Read(buf[:])
		m := copy(p, buf[:n])
		c.pending = bytes.Clone(buf[m:n])
		if len(c.pending) > 0 {
			err = nil // reported on the read after the pending bytes
		}
		return m, err
	}
	n := 0
	for {
		m, err := c.Conn.Read(p[n:])
		n += m
		switch sniff(p[:n]) {
		case 1:
			c.refuse()
			c.Conn.Close()
			return 0, errProxyUntrusted
		case -1:
			c.checked = true
			return n, err
		}
		if err != nil {
			return n, err
		}
	}
}

func (c *proxyConn) RemoteAddr() net.Addr {
	if c.remote != nil {
		return c.remote
	}
	return c.Conn.RemoteAddr()
}

// NetConn (the accepted socket; reading it directly skips pending bytes,
// which the first read of net/http or the TLS layer takes long before
// anything parks on the socket), ReadFrom, CloseWrite and SyscallConn come
// from wrapped.
