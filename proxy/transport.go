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
	"syscall"
	"time"

	"edge/config"
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
		// The lean client's limit too: one bound for both paths.
		MaxResponseHeaderBytes: maxResponseHeaderBytes,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        idleConnTimeout,
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
