package proxy

import (
	"bufio"
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"

	"edge/config"
)

// lean is the proxy's own HTTP/1.1 client for the common request: no
// body, no upgrade, a method that net/http replays (GET, HEAD, OPTIONS,
// TRACE). It writes the request and reads the response in the calling
// goroutine, on connections from its own idle pool per server, where
// http.Transport hands each request to a reader and a writer goroutine
// per connection through channels; that hand-off was the largest cost of
// proxying small responses (bench/README.md, proxy-1k). Everything else
// (bodies, upgrades, other methods, keepalive 0, health probes) goes
// through the http.Transport.
//
// It keeps the Transport's behaviour: dial and TLS handshake with the same
// dialer (connectErrors, so retryTransport retries them the same way),
// response_header_timeout, header validation and size limit, 1xx responses
// passed to the request's httptrace, the connection kept only when the
// response allows it and its body was read to the end, and one transparent
// retry on a fresh connection when a reused idle connection turns out to be
// closed by the server before any response byte came (net/http's
// errServerClosedIdle). It does not read idle connections in the
// background, so it notices such a close only when it uses the connection.
// Safe for concurrent use.
type lean struct {
	// Static after construction.
	dialer        *dialer
	headerTimeout time.Duration
	pools         map[*upstream]*connPool
}

// maxResponseHeaderBytes bounds a response header (and its 1xx
// responses) on both paths: the lean client's and the Transport's
// MaxResponseHeaderBytes (net/http's default too).
const maxResponseHeaderBytes = 10 << 20

// newLean returns the lean client of a Handler, or nil when keep-alive is
// off: then every connection serves one request anyway, and the Transport
// asks for Connection: close.
func newLean(cfg *config.Proxy, d *dialer, p *upstreams) *lean {
	n := *cfg.KeepAlive
	if n == 0 {
		return nil
	}
	l := &lean{
		dialer:        d,
		headerTimeout: cfg.ResponseHeaderTimeout,
		pools:         make(map[*upstream]*connPool, len(p.list)),
	}
	for _, s := range p.list {
		l.pools[s] = &connPool{max: n, idleTimeout: idleConnTimeout}
	}
	return l
}

// takes reports whether req goes the lean way.
func (l *lean) takes(req *http.Request) bool {
	if l == nil {
		return false
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		// Not replayable for net/http, so a request on a connection the
		// server closed while idle could not be retried (see lean); the
		// Transport's read loop notices such closes before reuse.
		return false
	}
	return (req.Body == nil || req.Body == http.NoBody) && req.ContentLength == 0 &&
		len(req.TransferEncoding) == 0 && len(req.Trailer) == 0 && !req.Close &&
		len(req.Header["Connection"]) == 0 && len(req.Header["Upgrade"]) == 0
}

// closeIdle closes the idle connections and every connection released
// from now on.
func (l *lean) closeIdle() {
	if l == nil {
		return
	}
	for _, p := range l.pools {
		p.close()
	}
}

// roundTrip sends req to s. Errors from connecting are connectErrors, as
// the Transport's. A request whose client has gone already is not sent.
func (l *lean) roundTrip(req *http.Request, s *upstream) (*http.Response, error) {
	if err := validateHeaders(req.Header); err != nil {
		return nil, err
	}
	ctx := req.Context()
	p := l.pools[s]
	c, reused, err := l.conn(ctx, s, p)
	for {
		if err != nil {
			return nil, err
		}
		if ctx.Err() != nil {
			c.putBack()
			return nil, ctx.Err()
		}
		res, rerr := c.roundTrip(req, l.headerTimeout)
		if rerr == nil {
			return res, nil
		}
		if !reused || !errors.Is(rerr, errClosedIdle) {
			return nil, rerr
		}
		// The server closed the connection while it was idle; the
		// connections idle for longer probably went the same way. Retry
		// once: a fresh connection is not retried.
		p.dropIdleSince(c.idleAt)
		c, reused, err = l.dialHeld(ctx, s, p, false)
	}
}

// conn returns a connection to s: an idle one; else the first to come of
// a connection another request releases and a free dial slot (then it
// dials). While connections to s are open but all busy it waits up to
// reuseWait for one of them before it competes for a dial slot: on a
// fast backend one comes back sooner than a new one would be set up, and
// a burst of requests (or of HTTP/2 streams reset at once) then reuses
// the open connections rather than adding its own. reused reports a
// connection that served requests before (a server may have closed it
// since).
func (l *lean) conn(ctx context.Context, s *upstream, p *connPool) (c *leanConn, reused bool, err error) {
	c, w := p.wait()
	if c != nil {
		return c, true, nil
	}
	if p.open.Load() > 0 {
		t := time.NewTimer(reuseWait)
		defer t.Stop()
		select {
		case r := <-w:
			return r.c, true, r.err
		case <-ctx.Done():
			return nil, false, p.leave(w, ctx.Err())
		case <-t.C:
		}
	}
	sem := l.dialer.slots[s.addr]
	select {
	case r := <-w:
		return r.c, true, r.err
	case sem <- struct{}{}:
		if c := p.unwait(w); c != nil {
			<-sem
			return c, true, nil
		}
		return l.dialHeld(ctx, s, p, true)
	case <-ctx.Done():
		return nil, false, p.leave(w, ctx.Err())
	}
}

// reuseWait is how long a request waits for a busy connection to come
// back before it may open a new one.
const reuseWait = time.Millisecond

// dialHeld opens a connection to s, in a dial slot already taken when held,
// else waiting for one. The dial does not end with the request: a
// connection opened for a client that went away serves the next request
// (as net/http's Transport does) rather than being thrown away, which
// would make cancelled requests cost the backend a connection each. A
// failed dial fails the requests waiting for this server too, at once.
func (l *lean) dialHeld(ctx context.Context, s *upstream, p *connPool, held bool) (*leanConn, bool, error) {
	if !held {
		if err := l.dialer.acquire(ctx, s.addr); err != nil {
			return nil, false, err
		}
	}
	c, err := l.dial(context.WithoutCancel(ctx), s, p)
	l.dialer.release(s.addr)
	if err != nil {
		p.failWaiters(err)
		return nil, false, err
	}
	if ctx.Err() != nil {
		c.putBack()
		return nil, false, ctx.Err()
	}
	return c, false, nil
}

// dial connects to s; the caller holds a dial slot.
func (l *lean) dial(ctx context.Context, s *upstream, p *connPool) (*leanConn, error) {
	var nc net.Conn
	var err error
	if s.scheme == "https" {
		nc, err = l.dialer.connectTLS(ctx, "tcp", s.addr)
	} else {
		nc, err = l.dialer.connect(ctx, "tcp", s.addr)
	}
	if err != nil {
		return nil, err
	}
	p.open.Add(1)
	c := &leanConn{conn: nc, pool: p}
	c.abandonFn = c.abandon
	c.abandonCh.L = &c.mu
	if tc, ok := nc.(*cryptotls.Conn); ok {
		st := tc.ConnectionState()
		c.tls = &st
	}
	c.br = bufio.NewReaderSize(c, 4<<10)
	return c, nil
}

// validateHeaders rejects what the Transport rejects before sending.
func validateHeaders(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("net/http: invalid header field name %q", k)
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("net/http: invalid header field value for %q", k)
			}
		}
	}
	return nil
}

// errClosedIdle marks a failure of a connection before any byte of the
// response came and not by timeout or cancellation: on a reused
// connection, the server closed it while it was idle.
var errClosedIdle = errors.New("connection closed before the response")

// headerTimeoutError is response_header_timeout running out: a timeout
// (504), as the Transport's.
type headerTimeoutError struct{ err error }

func (e *headerTimeoutError) Error() string {
	return "timeout awaiting response headers: " + e.err.Error()
}
func (e *headerTimeoutError) Unwrap() error   { return e.err }
func (e *headerTimeoutError) Timeout() bool   { return true }
func (e *headerTimeoutError) Temporary() bool { return true }

var errHeaderTooLarge = fmt.Errorf("response header longer than %d bytes", maxResponseHeaderBytes)

// leanConn is one upstream connection of the lean client. It is used by
// one request at a time: the goroutine that took it from the pool or
// dialled it owns it until it is back in the pool or closed.
type leanConn struct {
	// Static after dial.
	conn net.Conn
	br   *bufio.Reader // reads through the leanConn (Read)
	pool *connPool
	tls  *cryptotls.ConnectionState
	// abandonFn is abandon as a func value, made once for
	// context.AfterFunc.
	abandonFn func()

	// Owned by the request using the connection.
	limit   int64 // bytes Read may still take: the header limit, then unbounded
	written int64 // bytes written
	werr    error // the first error writing to the connection

	mu        sync.Mutex
	abandonCh sync.Cond // on mu: signalled when abandon has run
	abandoned bool      // guarded by mu: the request's client went away; deadlines are short
	ended     bool      // guarded by mu: the request is done with the connection

	idleAt time.Time   // when it went idle; guarded by pool.mu while idle
	closed atomic.Bool // close ran
}

const (
	// abandonGrace is how long a connection whose client went away may
	// still take to deliver the response, so that it can be kept. A reset
	// stream must not cost the backend a new connection (HTTP/2 rapid
	// reset), and closing it would not stop the backend's work anyway.
	abandonGrace = time.Second
	// drainLimit is the most of an abandoned response read to keep its
	// connection; a longer one closes the connection, as the Transport
	// does.
	drainLimit = 64 << 10
)

// Read reads from the connection within limit (the response header bound).
func (c *leanConn) Read(p []byte) (int, error) {
	if c.limit <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > c.limit {
		p = p[:c.limit]
	}
	n, err := c.conn.Read(p)
	c.limit -= int64(n)
	return n, err
}

// Write writes to the connection and counts what was written.
func (c *leanConn) Write(p []byte) (int, error) {
	n, err := c.conn.Write(p)
	c.written += int64(n)
	if err != nil && c.werr == nil {
		c.werr = err
	}
	return n, err
}

// close closes the connection, once.
func (c *leanConn) close() {
	if c.closed.CompareAndSwap(false, true) {
		c.conn.Close()
		c.pool.open.Add(-1)
	}
}

// putBack returns a connection that carries no request to the pool, or
// closes it.
func (c *leanConn) putBack() {
	if !c.pool.put(c) {
		c.close()
	}
}

// begin starts a request on the connection.
func (c *leanConn) begin() {
	c.mu.Lock()
	c.abandoned, c.ended = false, false
	c.mu.Unlock()
}

// abandon runs when the request's context ends (context.AfterFunc): rather
// than close the connection, it bounds what is left of the exchange by
// abandonGrace, so that a response that comes soon keeps the connection
// for the next request.
func (c *leanConn) abandon() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.ended {
		c.abandoned = true
		c.conn.SetDeadline(time.Now().Add(abandonGrace))
		c.abandonCh.Broadcast()
	}
}

// setReadDeadline sets the read deadline unless the request was abandoned:
// then abandon's shorter one stays.
func (c *leanConn) setReadDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.abandoned {
		c.conn.SetReadDeadline(t)
	}
}

// end marks the request done with the connection and clears deadlines
// abandon set. When abandon has started already (stop reports false), end
// waits for it, so that it cannot touch the connection once the next
// request has it.
func (c *leanConn) end(stop func() bool) {
	stopped := stop()
	c.mu.Lock()
	for !stopped && !c.abandoned {
		c.abandonCh.Wait()
	}
	c.ended = true
	if c.abandoned {
		c.conn.SetDeadline(time.Time{})
	}
	c.mu.Unlock()
}

// roundTrip writes req and reads the response header. When ctx ends
// before the response has been read, the connection gets abandonGrace to
// deliver it; a short response is then read and the connection kept.
func (c *leanConn) roundTrip(req *http.Request, headerTimeout time.Duration) (*http.Response, error) {
	ctx := req.Context()
	c.begin()
	stop := context.AfterFunc(ctx, c.abandonFn)
	c.written, c.werr = 0, nil
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(c)
	err := req.Write(bw)
	if err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writers.Put(bw)
	if err != nil {
		if c.werr != nil && c.written == 0 && ctx.Err() == nil {
			// Nothing went out on a broken connection: the server reset it.
			err = fmt.Errorf("%w: write: %w", errClosedIdle, err)
		}
		return nil, c.fail(ctx, stop, err)
	}
	if headerTimeout > 0 {
		c.setReadDeadline(time.Now().Add(headerTimeout))
	}
	c.limit = maxResponseHeaderBytes
	if _, err := c.br.Peek(1); err != nil {
		if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() || ctx.Err() != nil {
			return nil, c.fail(ctx, stop, err)
		}
		return nil, c.fail(ctx, stop, fmt.Errorf("%w: %w", errClosedIdle, err))
	}
	res, err := c.readResponse(req)
	if err != nil {
		return nil, c.fail(ctx, stop, err)
	}
	if headerTimeout > 0 {
		c.setReadDeadline(time.Time{})
	}
	c.limit = math.MaxInt64
	res.TLS = c.tls
	if res.StatusCode == http.StatusSwitchingProtocols {
		// Not asked for (upgrades go through the Transport): the
		// connection speaks something else now. The Handler answers 502.
		stop()
		c.close()
		res.Body = http.NoBody
		return res, nil
	}
	if ctx.Err() != nil {
		// The client went away while the upstream answered.
		c.drain(res.Body, stop, !res.Close)
		return nil, ctx.Err()
	}
	if res.Body == http.NoBody {
		c.release(stop, !res.Close)
		return res, nil
	}
	res.Body = &leanBody{c: c, body: res.Body, stop: stop, ctx: ctx, reuse: !res.Close}
	return res, nil
}

// readResponse reads the final response header; 1xx responses before it go
// to the request's httptrace (ReverseProxy forwards them to the client),
// as the Transport does.
func (c *leanConn) readResponse(req *http.Request) (*http.Response, error) {
	for {
		res, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		code := res.StatusCode
		if code < 100 || code > 199 || code == http.StatusSwitchingProtocols {
			return res, nil
		}
		if trace := httptrace.ContextClientTrace(req.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(code, textproto.MIMEHeader(res.Header)); err != nil {
				return nil, err
			}
			// Delivered: the next header gets the whole limit again.
			c.limit = maxResponseHeaderBytes
		}
	}
}

// fail closes the connection after err and returns what the round trip
// reports: the context's error when it ended the request.
func (c *leanConn) fail(ctx context.Context, stop func() bool, err error) error {
	stop()
	c.close()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return &headerTimeoutError{err: err}
	}
	return err
}

// release returns the connection to the pool after a complete response,
// or closes it: the response asked to close, or the server sent more than
// the response.
func (c *leanConn) release(stop func() bool, reuse bool) {
	c.end(stop)
	if reuse && c.br.Buffered() == 0 && c.pool.put(c) {
		return
	}
	c.close()
}

// drain reads the rest of a response nobody wants, up to drainLimit and
// within abandonGrace, and keeps the connection if that reaches its end.
func (c *leanConn) drain(body io.Reader, stop func() bool, reuse bool) {
	if drained(body) {
		c.release(stop, reuse)
		return
	}
	stop()
	c.close()
}

// drained reads body to its end if that is at most drainLimit bytes away,
// and reports whether it got there.
func drained(body io.Reader) bool {
	n, err := io.CopyN(io.Discard, body, drainLimit+1)
	return err == io.EOF && n <= drainLimit
}

// leanBody is a response body: the connection is released when it has
// been read to the end, and closed when it is closed before that (the
// Transport does the same rather than drain an unknown rest), unless the
// client went away: then a short rest is drained to keep the connection.
// Read and Close are called by one goroutine, ReverseProxy's.
type leanBody struct {
	c     *leanConn // nil once released or closed
	body  io.ReadCloser
	stop  func() bool
	ctx   context.Context
	reuse bool
	err   error // returned by Read once c is nil
}

func (b *leanBody) Read(p []byte) (int, error) {
	if b.c == nil {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	switch {
	case err == io.EOF:
		b.c.release(b.stop, b.reuse)
		b.c, b.err = nil, io.EOF
	case err != nil:
		b.stop()
		b.c.close()
		if b.ctx.Err() != nil {
			err = b.ctx.Err() // as the Transport: ReverseProxy does not log it
		}
		b.c, b.err = nil, err
	}
	return n, err
}

func (b *leanBody) Close() error {
	if b.c == nil {
		return nil
	}
	c := b.c
	b.c, b.err = nil, http.ErrBodyReadAfterClose
	if b.ctx.Err() != nil {
		c.drain(b.body, b.stop, b.reuse)
		return nil
	}
	b.stop()
	c.close()
	return nil
}

// connPool holds the idle connections to one server, newest last: a
// request takes the newest (warm, least likely closed by the server), and
// the oldest time out after idleTimeout. Requests that wait for a dial
// slot queue here too: a connection released while they wait goes to the
// first of them rather than to the idle list. Safe for concurrent use.
type connPool struct {
	// Static after construction.
	max         int
	idleTimeout time.Duration

	open atomic.Int64 // connections dialled and not closed, idle or busy

	mu      sync.Mutex
	idle    []*leanConn     // guarded by mu; by idleAt, oldest first
	waiters []chan waitDone // guarded by mu; oldest first; each buffered 1, gets one value
	timer   *time.Timer     // guarded by mu; sweeps timed-out connections
	armed   bool            // guarded by mu: timer is pending
	closed  bool            // guarded by mu
}

// waitDone is what a waiting request gets: a connection, or the error of
// a dial to the server that failed meanwhile.
type waitDone struct {
	c   *leanConn
	err error
}

// wait returns an idle connection, or queues the caller for the next
// released one: it then receives on the channel, or calls unwait.
func (p *connPool) wait() (*leanConn, chan waitDone) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.pop(); c != nil {
		return c, nil
	}
	w := make(chan waitDone, 1)
	p.waiters = append(p.waiters, w)
	return nil, w
}

// unwait leaves the queue. It returns the connection handed to w if one
// was handed before; the caller owns it.
func (p *connPool) unwait(w chan waitDone) *leanConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range p.waiters {
		if x == w {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			return nil
		}
	}
	return (<-w).c // handed under mu before we took it: it is there
}

// leave takes w out of the queue of a request that no longer wants a
// connection, passing on one handed to it meanwhile. It returns err.
func (p *connPool) leave(w chan waitDone, err error) error {
	if c := p.unwait(w); c != nil {
		c.putBack()
	}
	return err
}

// failWaiters hands err, a failed dial, to every waiting request.
func (p *connPool) failWaiters(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.waiters {
		w <- waitDone{err: err}
	}
	clear(p.waiters)
	p.waiters = p.waiters[:0]
}

// get returns the most recently idle connection, or nil.
func (p *connPool) get() *leanConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pop()
}

// pop takes the most recently idle connection, or nil. Called with p.mu
// held.
func (p *connPool) pop() *leanConn {
	n := len(p.idle)
	if n == 0 {
		return nil
	}
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	return c
}

// put makes c idle. It reports false, and the caller closes c, when the
// pool is full or closed.
func (p *connPool) put(c *leanConn) bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	if len(p.waiters) > 0 {
		w := p.waiters[0]
		p.waiters[0] = nil
		p.waiters = p.waiters[1:]
		c.idleAt = now
		w <- waitDone{c: c}
		return true
	}
	if len(p.idle) >= p.max {
		return false
	}
	c.idleAt = now
	p.idle = append(p.idle, c)
	if !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.idleTimeout, p.sweep)
		} else {
			p.timer.Reset(p.idleTimeout)
		}
	}
	return true
}

// sweep closes the connections idle for idleTimeout and waits for the
// next one to time out.
func (p *connPool) sweep() {
	now := time.Now()
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && now.Sub(p.idle[n].idleAt) >= p.idleTimeout {
		n++
	}
	expired := p.take(n)
	if len(p.idle) > 0 {
		p.timer.Reset(p.idle[0].idleAt.Add(p.idleTimeout).Sub(now))
	} else {
		p.armed = false
	}
	p.mu.Unlock()
	for _, c := range expired {
		c.close()
	}
}

// dropIdleSince closes the connections idle since t or longer.
func (p *connPool) dropIdleSince(t time.Time) {
	p.mu.Lock()
	n := 0
	for n < len(p.idle) && !p.idle[n].idleAt.After(t) {
		n++
	}
	stale := p.take(n)
	p.mu.Unlock()
	for _, c := range stale {
		c.close()
	}
}

// take removes and returns the n oldest idle connections. Called with
// p.mu held.
func (p *connPool) take(n int) []*leanConn {
	if n == 0 {
		return nil
	}
	out := make([]*leanConn, n)
	copy(out, p.idle)
	m := copy(p.idle, p.idle[n:])
	clear(p.idle[m:])
	p.idle = p.idle[:m]
	return out
}

// close closes the idle connections; connections put later are refused.
func (p *connPool) close() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
		p.armed = false
	}
	idle := p.take(len(p.idle))
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
}
