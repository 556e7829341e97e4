package server

import (
	"net"
	"sync"
)

// handoff is the Accept side of a listener that prepares each connection
// in a goroutine of its own (a TLS handshake, a PROXY header) before
// net/http may have it, so that a slow or silent peer never holds up the
// accept loop: run accepts and starts prepare; Accept returns what is
// ready.
type handoff struct {
	inner     net.Listener
	ready     chan net.Conn // prepared connections; never closed
	errs      chan error    // Accept errors of inner; never closed
	done      chan struct{} // closed by close
	closeOnce sync.Once
}

func newHandoff(inner net.Listener) handoff {
	return handoff{inner: inner, ready: make(chan net.Conn), errs: make(chan error), done: make(chan struct{})}
}

// acceptLoop accepts connections and calls start with each until the inner
// listener fails for good (Close). start either hands the connection over
// (which waits for Accept, as with any listener) or starts a goroutine for
// the slow part: it never waits on the peer.
func (h *handoff) acceptLoop(start func(net.Conn)) {
	for {
		c, err := h.inner.Accept()
		if err != nil {
			select {
			case h.errs <- err:
			case <-h.done:
				return
			}
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				continue // EMFILE and the like: http.Server backs off and asks again
			}
			return
		}
		start(c)
	}
}

// hand passes a prepared c to Accept, or closes it when the listener
// closes first.
func (h *handoff) hand(c net.Conn) {
	select {
	case h.ready <- c:
	case <-h.done:
		c.Close()
	}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.ready:
		return c, nil
	case err := <-h.errs:
		return nil, err
	case <-h.done:
		return nil, net.ErrClosed
	}
}

// close stops Accept, runs also (may be nil) the first time, and closes
// the inner listener.
func (h *handoff) close(also func()) error {
	h.closeOnce.Do(func() {
		close(h.done)
		if also != nil {
			also()
		}
	})
	return h.inner.Close()
}

func (h *handoff) Addr() net.Addr { return h.inner.Addr() }
