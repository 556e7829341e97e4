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
)

// connectError is a failure to connect to an upstream server (dial or TLS
// handshake): nothing was sent to it, so the request may go to another.
type connectError struct {
	err error
	tls bool // the TLS handshake failed, not the dial
}

func (e *connectError) Error() string { return "connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// newTransport builds the Transport of one Handler: its own connection
// pool, no proxy from the environment, HTTP/1.1 to upstreams (so that
// Upgrade works), bounded connect and response-header waits and no timeout
// on bodies.
func newTransport(cfg *config.Proxy, p *pool) (*http.Transport, error) {
	tlsConf, err := upstreamTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: orDefault(cfg.DialTimeout, 5*time.Second), KeepAlive: 30 * time.Second}
	handshake := orDefault(cfg.TLSHandshakeTimeout, 5*time.Second)
	sockets := map[string]string{} // dial address -> unix socket path
	for _, s := range p.servers {
		if s.sock != "" {
			sockets[s.host] = s.sock
		}
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if sock, ok := sockets[addr]; ok {
			network, addr = "unix", sock
		}
		c, err := dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, &connectError{err: err}
		}
		return c, nil
	}
	// The TLS handshake is done here rather than by the Transport so that
	// its failures are connectErrors too: nothing was sent, retry is safe.
	dialTLS := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conf := tlsConf.Clone()
		if conf.ServerName == "" {
			conf.ServerName, _, _ = net.SplitHostPort(addr)
		}
		tc := cryptotls.Client(c, conf)
		hctx, cancel := context.WithTimeout(ctx, handshake)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			c.Close()
			return nil, &connectError{err: fmt.Errorf("tls handshake: %w", err), tls: true}
		}
		return tc, nil
	}
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           dial,
		DialTLSContext:        dialTLS,
		TLSHandshakeTimeout:   handshake,
		ResponseHeaderTimeout: orDefault(cfg.ResponseHeaderTimeout, 60*time.Second),
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		// The client's Accept-Encoding goes upstream unchanged and the
		// response comes back as the upstream encoded it.
		DisableCompression: true,
		// No ForceAttemptHTTP2: with a custom dialer the Transport speaks
		// HTTP/1.1 only, which Upgrade needs.
	}
	keepAlive := 32
	if cfg.KeepAlive != nil {
		keepAlive = *cfg.KeepAlive
	}
	if keepAlive == 0 {
		t.DisableKeepAlives = true
	} else {
		t.MaxIdleConnsPerHost = keepAlive
	}
	return t, nil
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
// nothing was sent. It also keeps passive health.
type balancer struct {
	h         *Handler
	transport *http.Transport
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
		body = &trackedBody{rc: req.Body}
	}
	var tried []*server
	for attempt := 0; ; attempt++ {
		s := h.pool.pick(st.client, tried)
		if s == nil {
			if attempt == 0 {
				return nil, errNoUpstream
			}
			return nil, st.err
		}
		s.active.Add(1)
		st.server = s
		out := *req
		u := *req.URL
		u.Scheme, u.Host = s.scheme, s.host
		out.URL = &u
		if body != nil {
			out.Body = body
		}
		res, err := b.transport.RoundTrip(&out)
		if err == nil {
			return res, nil
		}
		s.active.Add(-1)
		st.server, st.failed, st.err = nil, s, err
		if req.Context().Err() != nil || isBodyTooLarge(err) {
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

// trackedBody passes a request body to one attempt after another: Close
// does nothing, and read records whether any attempt took bytes from it.
type trackedBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *trackedBody) Close() error { return nil }

func isBodyTooLarge(err error) bool {
	var mb *http.MaxBytesError
	return errors.As(err, &mb)
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
