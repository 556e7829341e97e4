package server

import (
	"context"
	cryptotls "crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"edge/internal/httperr"
)

// ResetBudget is how many HTTP/2 requests per second a client may cancel
// (RST_STREAM) before their handler finished, on one connection, before
// edge closes that connection. Browsers cancel a few streams when a page
// navigates away; the rapid-reset attack (CVE-2023-44487) cancels
// thousands, each costing a handler and an upstream request.
const ResetBudget = 100

// connState is what edge knows of one client connection. It lives in the
// connection's context (http.Server.ConnContext) and is shared by the
// connection's reader, which writes the framing verdicts, and its request
// handlers (several at once on HTTP/2), which read them: hence atomics.
type connState struct {
	conn net.Conn // static: closed on abuse (rapid reset)
	// tls is the TLS state of an HTTP/1 connection over TLS, which
	// net/http serves as a plain connection (see tlsListener); nil
	// otherwise. Static.
	tls *cryptotls.ConnectionState

	// badAt is 1 + the index of the first request whose framing is
	// ambiguous, 0 while there is none; blindAt is 1 + the index of the
	// request after which framing is no longer followed (an upgrade,
	// CONNECT, a scan cap). Written by framing.
	badAt   atomic.Int64
	blindAt atomic.Int64
	// requests counts the requests the connection carried.
	requests atomic.Int64

	mu          sync.Mutex
	windowStart time.Time // guarded by mu: of the reset count
	resets      int       // guarded by mu: in the second from windowStart
	closed      bool      // guarded by mu: closed for resets
}

// noteReset counts a request the client cancelled before its handler
// finished and reports whether that takes the connection over the budget
// (only once).
func (st *connState) noteReset(now time.Time) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if now.Sub(st.windowStart) >= time.Second {
		st.windowStart, st.resets = now, 0
	}
	st.resets++
	if st.resets > ResetBudget && !st.closed {
		st.closed = true
		return true
	}
	return false
}

type connStateKey struct{}

// connContext puts a connection's state in its context. It runs before
// the connection's goroutine starts; from then on the context (and, while
// it follows the bytes, the framing) holds the state, not the guardConn,
// so that a hijacked connection kept for hours does not.
func connContext(ctx context.Context, c net.Conn) context.Context {
	st := &connState{conn: c}
	if g, ok := c.(*guardConn); ok {
		st, g.st = g.st, nil
	}
	return context.WithValue(ctx, connStateKey{}, st)
}

// guardConn is an HTTP/1 client connection whose bytes framing follows as
// net/http reads them. It keeps the optional interfaces of the connection
// it wraps that net/http and the handlers use.
type guardConn struct {
	wrapped
	st *connState // until connContext takes it
	f  *framing   // owned by the reader; nil once framing is done
}

func newGuardConn(c net.Conn, tls *cryptotls.ConnectionState) *guardConn {
	st := &connState{conn: c, tls: tls}
	g := &guardConn{wrapped: wrapped{c}, st: st, f: &framing{st: st}}
	st.conn = g
	return g
}

func (c *guardConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.f != nil && n > 0 {
		c.f.feed(p[:n])
		if c.f.state == stDone {
			c.f = nil // a hijacked connection's tunnel costs nothing more
		}
	}
	return n, err
}

// wrapped is the connection a wrapper (guardConn, proxyConn) holds, with
// the optional interfaces of the socket it wraps passed through, so that
// wrapping keeps sendfile, half-close and the raw socket working.
type wrapped struct{ net.Conn }

// NetConn returns the wrapped connection (the *tls.Conn over HTTPS, the
// socket under a PROXY header), as tls.Conn.NetConn does.
func (c wrapped) NetConn() net.Conn { return c.Conn }

// ReadFrom keeps sendfile(2) for static files over plain HTTP.
func (c wrapped) ReadFrom(r io.Reader) (int64, error) { return io.Copy(c.Conn, r) }

// CloseWrite keeps half-close working for proxied upgrades.
func (c wrapped) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// SyscallConn exposes a plain socket for the hub's non-blocking fan-out
// (hub/flush.go) and the proxy's parked tunnels; over TLS there is none
// (the *tls.Conn is not one).
func (c wrapped) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// guardListener wraps each accepted plain connection in a guardConn.
type guardListener struct{ net.Listener }

func (l guardListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return newGuardConn(c, nil), nil
}

// admit applies the per-connection rules before a request is routed. It
// reports false when it answered the request itself.
func (l *listener) admit(st *connState, w http.ResponseWriter, r *http.Request) bool {
	seq := st.requests.Add(1)
	if r.ProtoMajor == 1 {
		if st.tls != nil && r.TLS == nil {
			r.TLS = st.tls // net/http saw a plain connection
		}
		if bad := st.badAt.Load(); bad != 0 && seq >= bad {
			// RFC 9112 §6.1/§6.3: ambiguous framing. This request and
			// whatever follows on the connection are refused.
			l.log.Debug("ambiguous request framing refused", "remote_addr", r.RemoteAddr)
			l.metrics.Load().refuse(RefusedFraming)
			w.Header().Set("Connection", "close")
			httperr.Error(w, http.StatusBadRequest)
			return false
		}
		if blind := st.blindAt.Load(); blind != 0 && seq > blind {
			// After an upgrade or CONNECT that was not hijacked, the
			// framing is not followed: serve this one and close.
			w.Header().Set("Connection", "close")
		}
	} else if r.Context().Err() != nil {
		// Reset before its handler started: nothing to do but count it.
		l.countReset(st, r)
		return false
	}
	if max := l.maxRequests.Load(); max > 0 && seq >= max && r.Header.Get("Upgrade") == "" {
		// nginx keepalive_requests. HTTP/2: net/http turns this header
		// into a graceful GOAWAY; the connection closes once its
		// streams are done.
		w.Header().Set("Connection", "close")
	}
	return true
}

// countReset counts a cancelled HTTP/2 request and closes the connection
// past ResetBudget. Go's HTTP/2 server offers no way to send GOAWAY
// ENHANCE_YOUR_CALM from a handler, so the connection is closed outright.
func (l *listener) countReset(st *connState, r *http.Request) {
	if st.noteReset(time.Now()) {
		l.log.Warn("closing HTTP/2 connection: too many cancelled requests",
			"remote_addr", r.RemoteAddr, "budget_per_second", ResetBudget)
		l.metrics.Load().refuse(RefusedResetBudget)
		st.conn.Close()
	}
}

// tlsListener does the TLS handshakes of an HTTPS listener itself, each in
// its own goroutine bounded by the handshake timeout, so that it can hand
// http.Server an HTTP/1 connection wrapped in the framing guard: net/http
// reads a *tls.Conn directly, and a wrapper under the TLS layer would see
// only ciphertext. HTTP/2 connections (ALPN h2) are handed over as the
// *tls.Conn, which net/http gives to its HTTP/2 server. The listener's
// top handler restores r.TLS for the wrapped ones.
type tlsListener struct {
	handoff // Accept, Addr: handshaken connections
	config  *cryptotls.Config
	timeout time.Duration // of a handshake; 0: none
	log     *slog.Logger
	refused func() // counts a plain HTTP request answered 400; set before run
}

func newTLSListener(inner net.Listener, config *cryptotls.Config, timeout time.Duration, log *slog.Logger) *tlsListener {
	return &tlsListener{handoff: newHandoff(inner), config: config, timeout: timeout, log: log}
}

// run accepts connections and starts their handshakes until the inner
// listener fails for good (Close). Each handshake goroutine ends within
// the handshake timeout.
func (l *tlsListener) run() {
	l.acceptLoop(func(c net.Conn) { go l.handshake(c) })
}

func (l *tlsListener) handshake(raw net.Conn) {
	if l.timeout > 0 {
		raw.SetDeadline(time.Now().Add(l.timeout))
	}
	bc := newBatchConn(raw)
	tc := cryptotls.Server(bc, l.config)
	if err := tc.Handshake(); err != nil {
		var re cryptotls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			// As net/http does: a plain HTTP client gets a readable 400.
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
			if l.refused != nil {
				l.refused()
			}
		}
		l.log.Debug("tls handshake failed", "remote_addr", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	raw.SetDeadline(time.Time{})
	var c net.Conn = tc
	if st := tc.ConnectionState(); st.NegotiatedProtocol != "h2" {
		c = newGuardConn(tc, &st)
	} else {
		bc.batch()
	}
	l.hand(c)
}

func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

func (l *tlsListener) Close() error { return l.close(nil) }
