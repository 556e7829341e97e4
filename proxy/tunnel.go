package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// smallBuf is what an idle tunnel direction holds while it waits for
	// data: enough for a typical WebSocket message in one read. A read
	// that fills it switches to a pooled bigBuf until the source drains.
	smallBuf = 1 << 10
	// goAwayLinger bounds how long a tunnel waits for its peers to answer
	// the close frames of CloseTunnels before its connections are closed.
	goAwayLinger = 3 * time.Second
)

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
	mu  sync.Mutex
	set map[*tunnel]struct{} // guarded by mu
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
	running   atomic.Int32 // copy goroutines still running
	closeOnce sync.Once
	reason    string // written once in closeOnce

	timerMu sync.Mutex
	timer   *time.Timer // guarded by timerMu; idle timeout; nil when stopped
}

const (
	toUpstream = 0
	toClient   = 1
)

// pipe is one direction of a tunnel. Its copy goroutine owns the buffers;
// CloseAll meets it under mu.
type pipe struct {
	t      *tunnel
	src    io.Reader
	dst    io.Writer
	masked bool   // frames written to dst must be masked (towards the upstream)
	pre    []byte // bytes read before the tunnel started, sent first
	small  [smallBuf]byte

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
	ws       bool          // WebSocket: frames are followed for CloseAll
	idle     time.Duration // 0: no idle timeout
	onEnd    func()        // called once when the tunnel has ended
}

func newTunnel(s tunnelSpec) *tunnel {
	t := &tunnel{ts: s.set, log: s.log, upstream: s.upstream, client: s.client, backend: s.backend, ws: s.ws,
		idle: s.idle, onEnd: s.onEnd, started: time.Now(), done: make(chan struct{})}
	t.pipes[toUpstream] = pipe{t: t, src: s.client, dst: s.backend, masked: true, pre: s.pre}
	t.pipes[toClient] = pipe{t: t, src: s.backend, dst: s.client}
	return t
}

// run starts the tunnel's two copy goroutines; it ends by itself.
func (t *tunnel) run() {
	t.ts.add(t)
	t.running.Store(2)
	if t.idle > 0 {
		t.last.Store(mono())
		t.timerMu.Lock()
		t.timer = time.AfterFunc(t.idle, t.checkIdle)
		t.timerMu.Unlock()
	}
	go t.copy(&t.pipes[toUpstream])
	go t.copy(&t.pipes[toClient])
}

func (t *tunnel) copy(p *pipe) {
	err := p.run()
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
	if t.running.Add(-1) == 0 {
		t.finish()
	}
}

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
// goroutines. The first reason given is kept.
func (t *tunnel) close(reason string) {
	t.closeOnce.Do(func() {
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

// run copies src to dst until src ends or a write fails. An idle
// direction holds only its small buffer.
func (p *pipe) run() error {
	if len(p.pre) > 0 {
		if err := p.write(p.pre); err != nil {
			return err
		}
		p.pre = nil
	}
	buf := p.small[:]
	var big *[]byte
	defer func() {
		if big != nil {
			bufPool.Put(big)
		}
	}()
	for {
		n, err := p.src.Read(buf)
		if n > 0 {
			p.t.touch()
			if werr := p.write(buf[:n]); werr != nil {
				return werr
			}
			switch {
			case n == len(buf) && big == nil:
				big = bufPool.Get().(*[]byte) // more is likely waiting
				buf = *big
			case n < len(buf) && big != nil:
				bufPool.Put(big) // drained: wait on the small buffer again
				big, buf = nil, p.small[:]
			}
		}
		if err != nil {
			return err
		}
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
