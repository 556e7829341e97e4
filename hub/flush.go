package hub

import (
	"context"
	"net"
	"runtime/pprof"
	"syscall"
)

// The fan-out's deliveries are written without a goroutine per client:
// channel.publish claims the writer role of every idle subscriber it
// queues a frame for (client.enqueue), and a few flushing goroutines,
// flushChunk clients each, write those frames with non-blocking writes.
// Only a client whose socket is full, that has more than one frame waiting
// or that is closing gets a writeLoop goroutine (conn.go describes how the
// writer role passes between them). This saves starting and ending a
// goroutine per delivery (about a tenth of the hub's CPU at 10,000
// subscribers × 10 messages/s) and still never waits on a client. Over
// TLS the frame is sealed by the flushing goroutine into the buffer of the
// connection under the TLS layer (edge's server provides one: a sealer),
// which sends the records with the same kind of non-blocking write; a
// TLS connection without one always gets a writeLoop.

// flushChunk is how many clients one flushing goroutine writes to.
const flushChunk = 256

// Profiler labels of the hub's short-lived goroutines, so that a CPU or
// goroutine profile tells them apart (go tool pprof -tagfocus hub=flush).
// A goroutine inherits its creator's labels, so each sets its own as it
// starts: a writeLoop started by a flushing goroutine is not a flusher.
var (
	flushLabels = pprof.WithLabels(context.Background(), pprof.Labels("hub", "flush"))
	writeLabels = pprof.WithLabels(context.Background(), pprof.Labels("hub", "write"))
	readLabels  = pprof.WithLabels(context.Background(), pprof.Labels("hub", "read"))
)

// flushClients writes to clients whose writer role it holds.
func flushClients(cs []*client) {
	pprof.SetGoroutineLabels(flushLabels)
	w := newRawWriter()
	for _, c := range cs {
		c.flush(w)
	}
}

// enqueue queues f like send (bounded), but when no writer runs it claims
// the writer role for the caller instead of starting one, and reports
// true: the caller must then call flush.
func (c *client) enqueue(f []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateOpen {
		return false
	}
	if len(c.queue) >= c.route.queueSize() {
		c.slowLocked()
		return false
	}
	c.queue = append(c.queue, f)
	if c.writing {
		return false
	}
	c.writing = true
	// As in startWriterLocked: the reader holds a count until the state is
	// dead, so this Add never races Wait.
	c.n.wg.Add(1)
	return true
}

// flush writes c's queued frame if it is the only one and the socket
// takes it at once, then gives up the writer role; otherwise (more queued,
// socket full, closing, not a plain socket) it hands the role to a
// writeLoop goroutine. The caller holds the role (enqueue).
func (c *client) flush(w *rawWriter) {
	c.mu.Lock()
	if c.sealer != nil && c.state == stateOpen && len(c.queue) == 1 {
		c.flushSealed()
	}
	if c.sock != nil && c.state == stateOpen && len(c.queue) == 1 {
		f := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[:0]
		c.mu.Unlock()
		n, ok := w.write(c.sock, f)
		c.mu.Lock()
		if n > 0 {
			c.n.stats.writes.Add(1)
		}
		if n == len(f) && ok {
			c.n.stats.written.Add(1)
			c.n.stats.direct.Add(1)
		} else {
			// The rest goes first; writeLoop waits for the socket or
			// meets the error.
			c.queue = append([][]byte{f[n:]}, c.queue...)
		}
	}
	if len(c.queue) == 0 && c.state != stateClosing {
		c.queue = nil // an idle client holds no queue
		c.writing = false
		c.mu.Unlock()
		c.n.wg.Done()
		return
	}
	c.mu.Unlock()
	go c.writeLoop() // takes over the role and its count on n.wg
}

// flushSealed sends c's one queued frame through its sealer, with c.mu
// held (and released meanwhile). If the sealer has bytes of an earlier
// write still waiting, or the write fails, the frame goes back to the
// queue for the writeLoop that flush then starts (which meets the error).
func (c *client) flushSealed() {
	f := c.queue[0]
	c.queue[0] = nil
	c.queue = c.queue[:0]
	c.mu.Unlock()
	sent, err := c.sealer.TryWrite(func() error {
		_, err := c.nc.Write(f)
		return err
	})
	c.mu.Lock()
	if sent && err == nil {
		c.n.stats.writes.Add(1)
		c.n.stats.written.Add(1)
		c.n.stats.direct.Add(1)
		return
	}
	c.queue = append([][]byte{f}, c.queue...)
}

// sealer is the connection under a TLS layer that can send sealed records
// without blocking: edge's server wraps every HTTPS connection in one.
// BatchWrites switches it to queued writes (reporting false if it cannot);
// TryWrite then calls write (a Write through the TLS layer) only when
// nothing is waiting, and sends the records with a non-blocking write,
// leaving the rest to its own writer. It never blocks on the peer.
type sealer interface {
	BatchWrites() bool
	TryWrite(write func() error) (sent bool, err error)
}

// sealerOf finds the sealer under nc's TLS layer, through wrappers that
// have NetConn as tls.Conn has, and switches it to queued writes; nil if
// there is none.
func sealerOf(nc net.Conn) sealer {
	for range 4 {
		if s, ok := nc.(sealer); ok {
			if s.BatchWrites() {
				return s
			}
			return nil
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = u.NetConn()
	}
	return nil
}

// rawWriter makes non-blocking writes through syscall.RawConn. One serves
// a flushing goroutine; its callback is built once.
type rawWriter struct {
	b   []byte
	n   int
	err error
	fn  func(fd uintptr) bool
}

func newRawWriter() *rawWriter {
	w := &rawWriter{}
	w.fn = w.do
	return w
}

func (w *rawWriter) do(fd uintptr) bool {
	for {
		n, err := syscall.Write(int(fd), w.b)
		if err == syscall.EINTR {
			continue
		}
		w.n, w.err = max(n, 0), err
		return true // never wait for the socket: that is writeLoop's job
	}
}

// write writes what of b the socket takes without blocking. It reports
// false when the write failed (EAGAIN included); n is then what was
// written before.
func (w *rawWriter) write(sock syscall.RawConn, b []byte) (n int, ok bool) {
	w.b = b
	err := sock.Write(w.fn)
	w.b = nil
	if err != nil || w.err != nil {
		return 0, false
	}
	return w.n, true
}

// socketOf returns nc's socket, or nil when nc is not a plain socket.
func socketOf(nc net.Conn) syscall.RawConn {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
