package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Server serves HTTP/3 (QUIC) on the UDP port of an HTTPS listener's
// address, with the listener's handler and TLS settings, so that a reload
// that changes them reaches HTTP/3 too without rebinding the socket.
type h3Server struct {
	pc     net.PacketConn // owned: closed by stop
	srv    *http3.Server
	altSvc string // the Alt-Svc value announcing it on HTTPS responses
}

// bindH3 binds the UDP socket for l at addr, the TCP listener's bound
// address (so that ":0" in tests gets the same port number).
func (l *listener) bindH3(addr string, opts Options) (*h3Server, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s (http3) on udp %s: %w", l.spec.Name, addr, err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	srv := &http3.Server{
		// tlsBase reads the listener's current TLS settings per
		// handshake; http3 clones what it returns and sets ALPN h3.
		TLSConfig: l.tlsBase,
		QUICConfig: &quic.Config{
			// No 0-RTT: early data can be replayed by an attacker, and
			// edge cannot know which proxied requests are idempotent.
			Allow0RTT:      false,
			MaxIdleTimeout: opts.IdleTimeout,
		},
		Handler:        http.HandlerFunc(l.serveHTTP),
		MaxHeaderBytes: opts.MaxHeaderBytes,
		IdleTimeout:    opts.IdleTimeout,
		// quic-go's errors reach edge as returned errors; its debug
		// output is per packet.
		Logger: slog.New(slog.DiscardHandler),
	}
	return &h3Server{pc: pc, srv: srv, altSvc: fmt.Sprintf(`h3=":%d"; ma=86400`, port)}, nil
}

// run serves until stop.
func (h *h3Server) run(log *slog.Logger) {
	if err := h.srv.Serve(h.pc); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		log.Error("http3 listener stopped", "err", err)
	}
}

// stop sends GOAWAY, waits for requests in flight until ctx is done, then
// closes the connections left and the UDP socket.
func (h *h3Server) stop(ctx context.Context) {
	if h.srv.Shutdown(ctx) != nil {
		h.srv.Close()
	}
	h.pc.Close()
}
