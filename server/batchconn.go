package server

import (
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// batchConn sits under the TLS layer of an HTTPS connection. Until batch
// is called it passes everything through. After it, writes are queued and
// a writer goroutine sends everything queued since its last write with one
// write(2).
//
// Why: Go's HTTP/2 server flushes after every frame it writes when its
// queue is momentarily empty, which under load is about two write(2)
// calls per request (measured: 1.89 per 1 KiB response at 32 connections
// × 10 streams), each a TLS record and a syscall. With the writer
// goroutine, frames that handlers finish while a write is in progress
// leave together. No timer is involved: a lone frame is written as soon as
// the writer runs.
//
// Backpressure is kept: Write blocks while more than batchMax bytes wait.
// A write error (the peer is gone, the write deadline passed) is returned
// by every later Write.
type batchConn struct {
	net.Conn

	mu       sync.Mutex
	drained  sync.Cond // signalled when the writer has taken or written the queue
	batching bool
	queue    *[]byte // written by Write, taken by the writer; from batchPool, nil while idle
	writing  bool    // a writer goroutine runs
	err      error   // the first write error
	closed   bool
	deadline time.Time // the write deadline last set
	// holding is set during TryWrite's write: queued records wait for
	// its non-blocking send instead of starting the writer.
	holding bool
	raw     syscall.RawConn // the socket, for TryWrite; nil if not one
}

// batchMax bounds the bytes a connection queues: twice an HTTP/2 frame of
// the default maximum size, so that a streaming response still meets TCP
// backpressure early.
const batchMax = 32 << 10

// batchPool holds queue buffers, so that an idle connection holds none and
// a busy one does not grow a new one for every batch.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchMax); return &b }}

// queued is the number of bytes waiting, with c.mu held.
func (c *batchConn) queued() int {
	if c.queue == nil {
		return 0
	}
	return len(*c.queue)
}

func newBatchConn(c net.Conn) *batchConn {
	b := &batchConn{Conn: c}
	b.drained.L = &b.mu
	return b
}

// batch turns batching on. Called once the TLS handshake is done and the
// connection speaks HTTP/2.
func (c *batchConn) batch() {
	c.mu.Lock()
	c.batching = true
	c.mu.Unlock()
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if !c.batching {
		c.mu.Unlock()
		return c.Conn.Write(p)
	}
	if !c.holding { // TryWrite's own records never wait: it checked the queue was empty
		if err := c.waitRoom(); err != nil {
			c.mu.Unlock()
			return 0, err
		}
	}
	switch {
	case c.err != nil:
		err := c.err
		c.mu.Unlock()
		return 0, err
	case c.closed:
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	if c.queue == nil {
		c.queue = batchPool.Get().(*[]byte)
	}
	*c.queue = append(*c.queue, p...)
	if !c.writing && !c.holding {
		c.writing = true
		go c.writer()
	}
	c.mu.Unlock()
	return len(p), nil
}

// BatchWrites turns batching on for a connection that the hub took over
// (a WebSocket over TLS), so that its fan-out can use TryWrite. It reports
// false when the connection is not over a socket.
func (c *batchConn) BatchWrites() bool {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	c.mu.Lock()
	c.raw, c.batching = raw, true
	c.mu.Unlock()
	return true
}

// TryWrite is the hub's fan-out over TLS without a goroutine per
// delivery: when nothing is queued (the peer keeps up), it calls write,
// which seals a frame through the TLS layer into the queue, and sends the
// records with one non-blocking write(2). Records the socket does not take
// at once are left to the writer goroutine, in order. When bytes are
// still queued it reports false without calling write: the caller then
// writes the blocking way (its own goroutine). BatchWrites must have been
// called. Never blocks on the peer.
func (c *batchConn) TryWrite(write func() error) (bool, error) {
	c.mu.Lock()
	if c.raw == nil || c.writing || c.holding || c.queued() > 0 || c.err != nil || c.closed {
		c.mu.Unlock()
		return false, nil
	}
	c.holding = true
	c.mu.Unlock()
	err := write()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	if c.queue == nil || c.writing || c.err != nil {
		return true, err
	}
	c.sendLocked()
	if len(*c.queue) == 0 {
		batchPool.Put(c.queue)
		c.queue = nil
		return true, err
	}
	c.writing = true
	go c.writer()
	return true, err
}

// sendLocked writes what of the queue the socket takes without blocking
// and drops it from the queue. Errors are left for the writer to meet.
func (c *batchConn) sendLocked() {
	q := *c.queue
	var n int
	c.raw.Write(func(fd uintptr) bool {
		for {
			m, err := syscall.Write(int(fd), q)
			if err == syscall.EINTR {
				continue
			}
			n = max(m, 0)
			return true // never wait: that is the writer's job
		}
	})
	*c.queue = q[:copy(q, q[n:])]
}

// waitRoom waits, with c.mu held, until the queue has room, the
// connection failed or closed, or the write deadline passed.
func (c *batchConn) waitRoom() error {
	if c.err != nil || c.closed || c.queued() < batchMax {
		return nil
	}
	if !c.deadline.IsZero() {
		d := time.Until(c.deadline)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.AfterFunc(d, func() {
			c.mu.Lock()
			c.drained.Broadcast()
			c.mu.Unlock()
		})
		defer t.Stop()
	}
	for c.err == nil && !c.closed && c.queued() >= batchMax {
		if !c.deadline.IsZero() && !time.Now().Before(c.deadline) {
			return os.ErrDeadlineExceeded
		}
		c.drained.Wait()
	}
	return nil
}

// SetWriteDeadline bounds Write. Once batching, it bounds only a Write
// waiting for room in the queue and is not passed to the socket: the TLS
// layer sets a deadline of now right after queueing its close_notify ("any
// later write fails"), which on the socket would also cut the writer off
// before the queued close frame and close_notify leave. The writer's own
// writes are bounded by Close's linger instead.
func (c *batchConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	batching := c.batching
	c.drained.Broadcast()
	c.mu.Unlock()
	if batching {
		return nil
	}
	return c.Conn.SetWriteDeadline(t)
}

func (c *batchConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	batching := c.batching
	c.drained.Broadcast()
	c.mu.Unlock()
	if batching {
		return c.Conn.SetReadDeadline(t)
	}
	return c.Conn.SetDeadline(t)
}

// writer writes the queue until it is empty, then ends. It is started by
// the Write that finds no writer running, so it has an exit whenever the
// queue drains or a write fails.
func (c *batchConn) writer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.queue != nil && c.err == nil {
		b := c.queue
		c.queue = nil
		c.mu.Unlock()
		_, err := c.Conn.Write(*b)
		c.mu.Lock()
		if cap(*b) <= 2*batchMax {
			*b = (*b)[:0]
			batchPool.Put(b)
		}
		if err != nil {
			c.err = err
		}
		c.drained.Broadcast()
	}
	c.writing = false
	c.drained.Broadcast()
}

// closeLinger bounds how long Close waits for queued bytes (a GOAWAY, a
// close_notify alert) to leave before it closes anyway.
const closeLinger = time.Second

// Close sends what is queued (waiting at most closeLinger for a peer that
// does not read) and closes the connection.
func (c *batchConn) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.writing {
		c.Conn.SetWriteDeadline(time.Now().Add(closeLinger))
		for c.writing {
			c.drained.Wait()
		}
	}
	c.drained.Broadcast()
	c.mu.Unlock()
	return c.Conn.Close()
}

// SyscallConn exposes the socket for reads (waiting for readability). It
// must not be written to directly once batching is on.
func (c *batchConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, syscall.EINVAL
}

// NetConn returns the wrapped connection, as tls.Conn.NetConn does.
func (c *batchConn) NetConn() net.Conn { return c.Conn }
