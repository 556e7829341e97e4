package proxy

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"edge/config"
	"edge/internal/httperr"
)

// connectError is a failure to connect to an upstream server (dial or TLS
// handshake): nothing was sent to it, so the request may go to another.
type connectError struct {
	err error
	tls bool // the TLS handshake failed, not the dial
}

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// dialer connects to upstream servers for both RoundTrippers (the
// http.Transport and the lean one). At most max_concurrent_dials
// connections are being opened to one server at a time: requests beyond
// that wait for a slot (the lean client also for a connection another
// request releases), so that clients cancelling requests en masse (HTTP/2
// rapid reset) cannot make edge open connections without bound. Static
// after construction.
type dialer struct {
	net       net.Dialer
	handshake time.Duration
	tls       *cryptotls.Config
	sockets   map[string]string        // dial address -> unix socket path
	slots     map[string]chan struct{} // dial address -> dials in progress; never closed
}

func newDialer(cfg *config.Proxy, p *upstreams) (*dialer, error) {
	tlsConf, err := upstreamTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	d := &dialer{
		net:       net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second},
		handshake: cfg.TLSHandshakeTimeout,
		tls:       tlsConf,
		sockets:   map[string]string{},
		slots:     map[string]chan struct{}{},
	}
	n := cfg.MaxConcurrentDials
	for _, s := range p.list {
		if s.sock != "" {
			d.sockets[s.addr] = s.sock
		}
		d.slots[s.addr] = make(chan struct{}, n)
	}
	return d, nil
}

// acquire takes a dial slot for addr, waiting until one is free or ctx is
// done. The caller calls release(addr) after dialling.
// An address that is no server's (none is expected) is not limited.
func (d *dialer) acquire(ctx context.Context, addr string) error {
	sem, ok := d.slots[addr]
	if !ok {
		return nil
	}
	select {
	case sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *dialer) release(addr string) {
	if sem, ok := d.slots[addr]; ok {
		<-sem
	}
}

// dial is the Transport's DialContext: connect to addr within a dial slot.
func (d *dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := d.acquire(ctx, addr); err != nil {
		return nil, err
	}
	defer d.release(addr)
	return d.connect(ctx, network, addr)
}

// dialTLS is the Transport's DialTLSContext: connect to addr and do the
// TLS handshake within a dial slot.
func (d *dialer) dialTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	if err := d.acquire(ctx, addr); err != nil {
		return nil, err
	}
	defer d.release(addr)
	return d.connectTLS(ctx, network, addr)
}

// connect connects to addr, or to the unix socket that stands for it.
func (d *dialer) connect(ctx context.Context, network, addr string) (net.Conn, error) {
	if sock, ok := d.sockets[addr]; ok {
		network, addr = "unix", sock
	}
	c, err := d.net.DialContext(ctx, network, addr)
	if err != nil {
		return nil, &connectError{err: err}
	}
	return c, nil
}

// connectTLS connects to addr and does the TLS handshake. The handshake is
// done here rather than by the Transport so that its failures are
// connectErrors too: nothing was sent, retry is safe.
func (d *dialer) connectTLS(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.connect(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conf := d.tls.Clone()
	if conf.ServerName == "" {
		conf.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := cryptotls.Client(c, conf)
	hctx, cancel := context.WithTimeout(ctx, d.handshake)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		return nil, &connectError{err: fmt.Errorf("tls handshake: %w", err), tls: true}
	}
	return tc, nil
}

// idleConnTimeout closes upstream connections left idle this long.
const idleConnTimeout = 90 * time.Second

// newTransport builds the Transport of one Handler: its own connection
// pool, no proxy from the environment, HTTP/1.1 to upstreams (so that
// Upgrade works), bounded connect and response-header waits and no timeout
// on bodies. It carries the requests the lean RoundTripper does not take:
// bodies, upgrades, health probes.
func newTransport(cfg *config.Proxy, d *dialer) *http.Transport {
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.dial,
		DialTLSContext:        d.dialTLS,
		TLSHandshakeTimeout:   d.handshake,
		ResponseHeaderTimeout: cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       idleConnTimeout,
		// The client's Accept-Encoding goes upstream unchanged and the
		// response comes back as the upstream encoded it.
		DisableCompression: true,
		// No ForceAttemptHTTP2: with a custom dialer the Transport speaks
		// HTTP/1.1 only, which Upgrade needs.
	}
	if n := *cfg.KeepAlive; n == 0 {
		t.DisableKeepAlives = true
	} else {
		t.MaxIdleConnsPerHost = n
	}
	return t
}

func upstreamTLS(c *config.UpstreamTLS) (*cryptotls.Config, error) {
	conf := &cryptotls.Config{
		MinVersion:         cryptotls.VersionTLS12,
		ClientSessionCache: cryptotls.NewLRUClientSessionCache(64),
		NextProtos:         []string{"http/1.1"},
	}
	if c == nil {
		return conf, nil
	}
	conf.ServerName = c.ServerName
	conf.InsecureSkipVerify = c.InsecureSkipVerify
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("upstream tls ca: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("upstream tls ca %s: no PEM certificate", c.CA)
		}
	}
	return conf, nil
}

// balancer is the RoundTripper ReverseProxy uses: it picks a server per
// attempt and retries on another server when connecting failed, so that
// nothing was sent. It also keeps passive health. Each attempt goes through
// the lean client when it takes the request, else through the Transport;
// both report connect failures as connectErrors.
type balancer struct {
	h         *Handler
	transport *http.Transport
	lean      *lean // nil: everything goes through transport
	retries   int
}

var (
	errNoUpstream = errors.New("no upstream server available")
)

func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	h := b.h
	st := stateFrom(req.Context())
	var body *trackedBody
	if req.Body != nil {
		// Transport closes the body when it fails; another attempt still
		// needs it. ReverseProxy closes the original when it is done.
		body = &trackedBody{rc: httperr.BodyReader(req.Body)}
	}
	useLean := b.lean.takes(req)
	var tried []*upstream
	for attempt := 0; ; attempt++ {
		s := h.upstreams.pick(st.client, tried)
		if s == nil {
			if attempt == 0 {
				return nil, errNoUpstream
			}
			return nil, st.err
		}
		s.active.Add(1)
		st.upstream = s
		httperr.NoteUpstream(st.w, s.name) // the access log's upstream field
		out := req
		if attempt == 0 {
			// req is ReverseProxy's own copy of the client's request, with
			// its own URL, made for this RoundTrip: the first attempt may
			// change it rather than copy it.
			req.URL.Scheme, req.URL.Host = s.scheme, s.host
		} else {
			// A failed attempt may still be referenced by the Transport.
			o := *req
			u := *req.URL
			u.Scheme, u.Host = s.scheme, s.host
			o.URL = &u
			out = &o
		}
		if body != nil {
			out.Body = body
		}
		var res *http.Response
		var err error
		if useLean {
			res, err = b.lean.roundTrip(out, s)
		} else {
			res, err = b.transportTrip(out)
		}
		if err == nil {
			return res, nil
		}
		s.active.Add(-1)
		err = body.cause(err)
		st.upstream, st.failed, st.err = nil, s, err
		if clientFault(req, err) {
			return nil, err // the client's doing, not the server's
		}
		var ce *connectError
		retry := errors.As(err, &ce) && (body == nil || !body.read.Load()) && attempt < b.retries
		h.upstreamFailed(req, s, err, retry)
		if !retry {
			return nil, err
		}
		tried = append(tried, s)
	}
}

// transportTrip sends req through the Transport. Unless it is an upgrade
// (whose tunnel outlives the request), the upstream exchange gets
// abandonGrace beyond the client's going away, as the lean client's: a
// response that comes in time is drained (up to drainLimit) so that the
// Transport keeps the connection, where cancelling at once would close it;
// otherwise clients resetting requests en masse (HTTP/2 rapid reset, with
// POST) would cost the backend a connection each.
func (b *balancer) transportTrip(req *http.Request) (*http.Response, error) {
	if upgradeType(req.Header) != "" {
		return b.transport.RoundTrip(req)
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err // the client has gone already: nothing to send
	}
	uctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(abandonGrace, cancel) })
	end := func() { stop(); cancel() }
	res, err := b.transport.RoundTrip(req.WithContext(uctx))
	switch {
	case err != nil:
		end()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	case ctx.Err() != nil:
		// The client went away while the upstream answered.
		drained(res.Body)
		res.Body.Close()
		end()
		return nil, ctx.Err()
	}
	res.Body = &graceBody{ReadCloser: res.Body, ctx: ctx, end: end}
	return res, nil
}

// graceBody is a Transport response body whose exchange may outlive the
// client by abandonGrace: closed early after the client went away, a
// short rest is drained so that the connection is kept. Read and Close are
// called by one goroutine, ReverseProxy's.
type graceBody struct {
	io.ReadCloser
	ctx context.Context // the client's
	end func()          // ends the upstream exchange's context
}

func (b *graceBody) Close() error {
	if b.ctx.Err() != nil {
		drained(b.ReadCloser)
	}
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// trackedBody passes a request body to one attempt after another: Close
// does nothing, read records whether any attempt took bytes from it, and
// failed the client's body error, if any. The Transport reports a body
// that failed by timeout as the request's cancellation (net/http cancels
// the request's context when a read from the client connection fails);
// failed keeps the cause.
type trackedBody struct {
	rc     io.ReadCloser
	read   atomic.Bool
	failed atomic.Pointer[httperr.BodyError]
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.rc.Read(p)
	var be *httperr.BodyError
	if err != nil && errors.As(err, &be) {
		b.failed.CompareAndSwap(nil, be)
	}
	return n, err
}

// cause returns the client's body error, else err.
func (b *trackedBody) cause(err error) error {
	if b == nil {
		return err
	}
	if be := b.failed.Load(); be != nil {
		return be
	}
	return err
}

func (b *trackedBody) Close() error { return nil }

// errorCause names err for logs and metrics, and says whether it counts
// as a timeout.
func errorCause(err error) (cause string, timeout bool) {
	var ne net.Error
	isTimeout := errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
	var ce *connectError
	if errors.As(err, &ce) {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return "connect_refused", false
		case isTimeout:
			return "connect_timeout", false
		case ce.tls:
			return "tls", false
		}
		return "connect_error", false
	}
	switch {
	case isTimeout:
		return "timeout", true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "upstream_closed", false
	}
	return "upstream_error", false
}
