package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	// smallBuf is the pooled buffer a tunnel direction reads into while
	// data flows: enough for a typical WebSocket message in one read. A
	// read that fills it switches to a pooled bigBuf until the source
	// drains.
	smallBuf = 1 << 10
	// goAwayLinger bounds how long a tunnel waits for its peers to answer
	// the close frames of CloseTunnels before its connections are closed.
	goAwayLinger = 3 * time.Second
)

// parkAfter is how long a direction waits for more data before it parks:
// its buffers go back to the pools, its goroutine ends, and the poller
// waits for its socket instead. A busy direction pays one read-deadline
// wakeup per parkAfter. Short, because RSS follows the peak: with 1 s,
// the goroutines of a burst of new connections overlapped and 5,000 idle
// wss connections cost 29.0 KiB each instead of 21.3 (bench/run.sh
// ws-idle-mem), while ws-echo per core moved by 3%, within noise. A
// variable so that tests can shorten it.
var parkAfter = 100 * time.Millisecond

// epoch anchors mono, a cheap monotonic clock for tunnel activity.
var epoch = time.Now()

func mono() int64 { return int64(time.Since(epoch)) }

// Tunnels is a set of open tunnels: upgraded connections (WebSockets and
// other protocols switched with a 101) that a Handler copies between a
// client and an upstream server. Tunnels outlive the Handler that opened
// them: Handler.Close leaves them alone, and they end when a side closes,
// when they stay idle for tunnel_idle_timeout, or in CloseAll.
//
// Share one Tunnels between the handler generations of a process (pass it
// in Options.Tunnels of every New) so that one CloseAll at shutdown reaches
// the tunnels opened before a reload too. The zero value is an empty set
// ready to use. Safe for concurrent use.
type Tunnels struct {
	mu   sync.Mutex
	set  map[*tunnel]struct{} // guarded by mu
	poll poller               // waits for the sockets of idle tunnels
}

func (ts *Tunnels) add(t *tunnel) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.set == nil {
		ts.set = map[*tunnel]struct{}{}
	}
	ts.set[t] = struct{}{}
}

func (ts *Tunnels) remove(t *tunnel) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	delete(ts.set, t)
}

func (ts *Tunnels) snapshot() []*tunnel {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	list := make([]*tunnel, 0, len(ts.set))
	for t := range ts.set {
		list = append(list, t)
	}
	return list
}

// Len returns the number of open tunnels.
func (ts *Tunnels) Len() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.set)
}

// CloseAll ends every open tunnel and returns when they have ended. A
// WebSocket tunnel first gets a close frame with status 1001 "going away"
// in both directions, each put between two frames: unmasked to the client,
// masked to the upstream, as a server and a client would send it. Then it
// waits, up to a few seconds, for the peers to close. Other tunnels are
// closed at once. When ctx is done, whatever is left is closed without
// further ado.
func (ts *Tunnels) CloseAll(ctx context.Context) {
	for {
		list := ts.snapshot()
		if len(list) == 0 {
			return
		}
		var wg sync.WaitGroup
		for _, t := range list {
			wg.Go(t.goAway)
		}
		for _, t := range list {
			select {
			case <-t.done:
				continue
			case <-ctx.Done():
			}
			for _, t := range append(list, ts.snapshot()...) {
				t.close("shutdown")
			}
			for _, t := range list {
				<-t.done
			}
			wg.Wait()
			return
		}
		wg.Wait()
	}
}

// tunnel copies an upgraded connection both ways.
type tunnel struct {
	// Static after newTunnel.
	ts       *Tunnels
	log      *slog.Logger // the Handler's: no per-tunnel attributes to keep
	upstream string
	client   net.Conn
	backend  io.ReadWriteCloser // the Transport's 101 response body
	ws       bool               // WebSocket: frames are followed for CloseAll
	idle     time.Duration      // 0: no idle timeout
	onEnd    func()
	started  time.Time
	done     chan struct{} // closed when the tunnel has ended; never sent on

	pipes [2]pipe // toUpstream, toClient

	last      atomic.Int64 // mono() of the last traffic either way
	open      atomic.Int32 // pipes not ended yet, running or parked
	closed    atomic.Bool  // set in closeOnce, before the connections are closed
	closeOnce sync.Once
	reason    string // written once in closeOnce

	timerMu sync.Mutex
	timer   *time.Timer // guarded by timerMu; idle timeout; nil when stopped
}

const (
	toUpstream = 0
	toClient   = 1
)

// pipe is one direction of a tunnel. It either runs, in a copy goroutine
// that owns pre and the buffers, or is parked in the poller, with no
// goroutine and no buffer; CloseAll meets it under mu.
type pipe struct {
	t      *tunnel
	src    io.Reader
	dst    io.Writer
	masked bool   // frames written to dst must be masked (towards the upstream)
	pre    []byte // bytes read before the tunnel started, sent first
	// Static after newTunnel: the connection whose read deadline bounds
	// src's reads, and its socket; both nil when src cannot park.
	conn net.Conn
	raw  syscall.RawConn
	id   uint64 // park id while parked, else 0; guarded by the poller's mu
	gen  uint64 // the poller's epoll instance the socket was added to; guarded by the poller's mu

	mu        sync.Mutex // held while writing to dst; guards what follows
	n         int64      // bytes read from src
	frames    frameScanner
	goingAway bool // send a close frame at the next frame boundary
	shut      bool // dst takes no more data: close frame sent or write side closed
}

// tunnelSpec is what a tunnel is made of.
type tunnelSpec struct {
	set      *Tunnels     // the tunnel joins it while it runs
	log      *slog.Logger // the Handler's
	upstream string       // the server's name, for logs
	client   net.Conn     // the hijacked client connection
	pre      []byte       // bytes the client sent before the 101, sent upstream first
	backend  io.ReadWriteCloser
	upConn   net.Conn      // the connection under backend, from the Transport; nil if unknown
	ws       bool          // WebSocket: frames are followed for CloseAll
	idle     time.Duration // 0: no idle timeout
	onEnd    func()        // called once when the tunnel has ended
}

func newTunnel(s tunnelSpec) *tunnel {
	t := &tunnel{ts: s.set, log: s.log, upstream: s.upstream, client: s.client, backend: s.backend, ws: s.ws,
		idle: s.idle, onEnd: s.onEnd, started: time.Now(), done: make(chan struct{})}
	t.pipes[toUpstream] = pipe{t: t, src: s.client, dst: s.backend, masked: true, pre: s.pre}
	t.pipes[toClient] = pipe{t: t, src: s.backend, dst: s.client}
	if pollerSupported {
		if raw := socketOf(s.client); raw != nil {
			t.pipes[toUpstream].conn, t.pipes[toUpstream].raw = s.client, raw
		}
		if raw := socketOf(s.upConn); raw != nil {
			t.pipes[toClient].conn, t.pipes[toClient].raw = s.upConn, raw
		}
	}
	return t
}

// socketOf returns the socket under c, through TLS and wrappers that have
// NetConn as tls.Conn has, or nil. Parking relies on what every such layer
// does: a read returns what the layer has buffered before it reads below,
// and a read deadline passes down to the socket.
func socketOf(c net.Conn) syscall.RawConn {
	for range 8 {
		if c == nil {
			return nil
		}
		if sc, ok := c.(syscall.Conn); ok {
			if raw, err := sc.SyscallConn(); err == nil {
				return raw
			}
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

// run starts the tunnel's two copy goroutines; it ends by itself.
func (t *tunnel) run() {
	t.ts.add(t)
	t.open.Store(2)
	if t.idle > 0 {
		t.last.Store(mono())
		t.timerMu.Lock()
		t.timer = time.AfterFunc(t.idle, t.checkIdle)
		t.timerMu.Unlock()
	}
	go t.copy(&t.pipes[toUpstream])
	go t.copy(&t.pipes[toClient])
}

// copy runs p until it parks or ends. The poller calls it again for a
// parked pipe whose socket became readable.
func (t *tunnel) copy(p *pipe) {
	parked, err := p.run()
	if parked {
		return // the poller or close has it now
	}
	if errors.Is(err, io.EOF) {
		// Pass the half-close on and keep copying the other way.
		p.mu.Lock()
		p.shut = true
		p.mu.Unlock()
		if cw, ok := p.dst.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
			t.close("closed")
		}
	} else {
		t.close("error")
		if !errors.Is(err, net.ErrClosed) {
			t.log.Debug("tunnel copy failed", "upstream", t.upstream, "remote_addr", t.client.RemoteAddr().String(), "err", err)
		}
	}
	t.pipeDone()
}

func (t *tunnel) pipeDone() {
	if t.open.Add(-1) == 0 {
		t.finish()
	}
}

// finish runs once, when the last pipe has ended.
func (t *tunnel) finish() {
	t.close("closed")
	t.ts.remove(t)
	t.onEnd()
	t.log.Debug("tunnel closed", "upstream", t.upstream, "remote_addr", t.client.RemoteAddr().String(),
		"reason", t.reason, "duration", time.Since(t.started).Round(time.Millisecond),
		"bytes_to_upstream", t.pipes[toUpstream].n, "bytes_to_client", t.pipes[toClient].n)
	close(t.done)
}

// close ends the tunnel: both connections are closed, which ends the copy
// goroutines, and parked pipes are taken back from the poller and end
// here. The first reason given is kept.
func (t *tunnel) close(reason string) {
	t.closeOnce.Do(func() {
		t.closed.Store(true)
		t.reason = reason
		t.timerMu.Lock()
		if t.timer != nil {
			t.timer.Stop()
			t.timer = nil
		}
		t.timerMu.Unlock()
		t.client.Close()
		t.backend.Close()
	})
	for i := range t.pipes {
		if t.ts.poll.unpark(&t.pipes[i]) {
			t.pipeDone()
		}
	}
}

func (t *tunnel) touch() {
	if t.idle > 0 {
		t.last.Store(mono())
	}
}

// checkIdle runs when the idle timer fires. Traffic only records its time,
// so the timer is moved on here rather than on every read.
func (t *tunnel) checkIdle() {
	quiet := time.Duration(mono() - t.last.Load())
	if quiet >= t.idle {
		t.close("idle timeout")
		return
	}
	t.timerMu.Lock()
	defer t.timerMu.Unlock()
	if t.timer != nil {
		t.timer.Reset(t.idle - quiet)
	}
}

// goAway starts a clean close for CloseAll.
func (t *tunnel) goAway() {
	if !t.ws {
		t.close("shutdown")
		return
	}
	// The peers answer with their own close frames and close; whoever
	// does not is closed after the linger time, which also bounds a close
	// frame that waits behind a slow write.
	timer := time.AfterFunc(goAwayLinger, func() { t.close("shutdown") })
	defer timer.Stop()
	t.client.SetWriteDeadline(time.Now().Add(goAwayLinger))
	t.pipes[toClient].goAway()
	t.pipes[toUpstream].goAway()
	<-t.done
}

// run copies src to dst until src ends or a write fails, or until src
// has been quiet for parkAfter and p is parked: then it returns true.
// Buffers come from the pools and go back before p parks.
//
// The read deadline makes parking safe over TLS and buffered readers: a
// read that times out has returned everything buffered above the socket
// (a partial TLS record aside, whose rest will make the socket readable),
// and a timeout loses no data (crypto/tls treats it as temporary).
func (p *pipe) run() (parked bool, err error) {
	if len(p.pre) > 0 {
		if err := p.write(p.pre); err != nil {
			return false, err
		}
		p.pre = nil
	}
	small := smallPool.Get().(*[]byte)
	buf := *small
	var big *[]byte
	defer func() {
		if small != nil {
			smallPool.Put(small)
		}
		if big != nil {
			bufPool.Put(big)
		}
	}()
	canPark := p.raw != nil
	armed, got := false, false // a deadline is set; data came since
	for {
		if canPark && !armed {
			if p.conn.SetReadDeadline(time.Now().Add(parkAfter)) != nil {
				canPark = false
			}
			armed, got = canPark, false
		}
		n, err := p.src.Read(buf)
		if n > 0 {
			got = true
			p.t.touch()
			if werr := p.write(buf[:n]); werr != nil {
				return false, werr
			}
			switch {
			case n == len(buf) && big == nil:
				big = bufPool.Get().(*[]byte) // more is likely waiting
				buf = *big
			case n < len(buf) && big != nil:
				bufPool.Put(big) // drained: back to the small buffer
				big, buf = nil, *small
			}
		}
		if err == nil {
			continue
		}
		if !canPark || !errors.Is(err, os.ErrDeadlineExceeded) {
			return false, err
		}
		armed = false
		if got {
			continue // not quiet for parkAfter yet
		}
		if big != nil {
			bufPool.Put(big)
			big, buf = nil, *small
		}
		smallPool.Put(small)
		small = nil
		if p.t.ts.poll.park(p) {
			return true, nil
		}
		// Closing, or epoll failed: read on without deadlines.
		canPark = false
		p.conn.SetReadDeadline(time.Time{})
		small = smallPool.Get().(*[]byte)
		buf = *small
	}
}

func (p *pipe) write(b []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(len(b))
	if p.shut {
		return nil // after our close frame: drop the rest
	}
	if !p.t.ws {
		_, err := p.dst.Write(b)
		return err
	}
	if !p.goingAway {
		p.frames.scan(b, false)
		_, err := p.dst.Write(b)
		return err
	}
	if p.frames.atBoundary() {
		return p.sendCloseLocked()
	}
	k, boundary := p.frames.scan(b, true)
	if _, err := p.dst.Write(b[:k]); err != nil {
		return err
	}
	if boundary {
		return p.sendCloseLocked()
	}
	return nil
}

// goAway sends a close frame now if the stream is between two frames, or
// asks the copy goroutine to send it when the current frame ends.
func (p *pipe) goAway() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut {
		return
	}
	if p.frames.atBoundary() {
		p.sendCloseLocked()
		return
	}
	p.goingAway = true
}

func (p *pipe) sendCloseLocked() error {
	p.shut, p.goingAway = true, false
	_, err := p.dst.Write(closeFrame(p.masked))
	return err
}
