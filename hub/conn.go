package hub

import (
	"errors"
	"net"
	"runtime/pprof"
	"sync"
	"syscall"
	"time"

	"golang.org/x/time/rate"

	"edge/internal/wsframe"
)

// Timings of a connection that are not configurable.
const (
	// closeGrace is how long a closing connection waits for its close frame
	// to be written and for the client's close reply.
	closeGrace = time.Second
	// maxWriteBatch is the most bytes gathered into one write.
	maxWriteBatch = 16 << 10
	// publishTimeout bounds a client's publish into the broker.
	publishTimeout = 5 * time.Second
)

type connState uint8

const (
	stateOpen    connState = iota // delivering
	stateClosing                  // close frame queued; nothing more is queued
	stateDead                     // nothing more is written
)

// The writer role. At most one goroutine at a time writes to a client's
// socket (gorilla/websocket's rule: one concurrent writer): the one that
// holds the writer role. The role moves between goroutines like this:
//
//   - send (any goroutine) queues a frame; when no goroutine holds the
//     role, startWriterLocked takes it and starts a writeLoop goroutine.
//   - enqueue (the fan-out, channel.publish) queues a frame; when no
//     goroutine holds the role, the caller takes it and passes the client
//     to a flushing goroutine (flushClients), which calls flush.
//   - flush writes the one queued frame with a non-blocking write when it
//     can and gives the role up; otherwise (socket full, more queued,
//     closing, TLS) it hands the role to a new writeLoop goroutine.
//   - writeLoop writes batches until the queue is empty, the close frame
//     is written or a write fails, and then gives the role up.
//
// Invariants:
//
//  1. writing is true exactly while a goroutine holds the role, and only
//     that goroutine writes to nc. Control frames (pong, ping, close) are
//     queued like data, never written from elsewhere. (serveWebSocket
//     writes one close frame itself, to a connection it never registered.)
//  2. The role is taken and given up under mu, and given up only with
//     the queue empty (or the state dead): a frame queued after that
//     takes the role anew, so no frame is left behind.
//  3. The role holds one count on n.wg, added where writing is set
//     (startWriterLocked, enqueue) and done where it is cleared; a
//     hand-off from flush to writeLoop passes the count along. The Add
//     never races n.wg.Wait: the reader role holds its own count until
//     the state is dead, and nothing is queued once it is.
//  4. Frames go out whole and in queue order: flush puts what the socket
//     did not take back at the head of the queue before handing over.
//  5. The close frame is queued last (closeLocked sets stateClosing, after
//     which nothing is queued); the goroutine that writes it, or fails to,
//     closes closeSent, which finish waits for (closeGrace at most).

// client is one WebSocket connection. It has one reader goroutine at a time
// (readLoop, renewed after each burst of client frames) for its whole life,
// and a writer only while frames are queued: a flushing goroutine of the
// fan-out (flush.go) or its own writeLoop. An idle connection holds no
// writer, no write buffer and no read buffer.
type client struct {
	// Static after construction.
	n     *Node
	route *route
	nc    net.Conn // frames are written (conn.go, flush.go) and read (reader.go) here
	// sock is nc's socket for the fan-out's non-blocking writes (flush.go);
	// nil when nc is not a plain socket (TLS).
	sock syscall.RawConn
	// sealer is the connection under nc's TLS layer when it can send a
	// sealed frame without blocking (flush.go); nil otherwise.
	sealer sealer
	ip     string
	raw    bool // bare payloads (route raw: true at connect)
	// deflate is set when the client negotiated permessage-deflate
	// (deflate.go); deflateMin is compression_min_size at connect.
	deflate    bool
	deflateMin uint32
	// heartbeat answers a raw client's literal ping (raw_heartbeat at
	// connect); nil without.
	heartbeat *heartbeat
	subject   string // presence subject, "" when not listed
	// id numbers the node's connections (connID makes it cluster-unique);
	// connected is the upgrade time, in unix seconds. For the admin API.
	id        uint64
	connected int64

	// Owned by the reader goroutine.
	rd         readBuffer
	maxMessage int           // max_message_size at connect
	limiter    *rate.Limiter // created on the first publish

	// subsMu guards subs and grant: the reader changes them (subscribe,
	// unsubscribe, refresh), and so does the admin API (control.go). Lock
	// order: subsMu, then a channel's mu, then mu.
	// Only the reader writes grant, so it reads grant without the lock;
	// every other access takes it.
	subsMu sync.Mutex
	subs   []*channel
	grant  *grant // replaced by a token refresh (refresh.go)

	mu sync.Mutex
	// queue holds frames waiting for the writer. Guarded by mu.
	queue [][]byte
	// writing is set while a goroutine holds the writer role: a writeLoop,
	// or a flushing goroutine that claimed it (enqueue). Guarded by mu.
	// The role holds a count on n.wg.
	writing bool
	state   connState // guarded by mu
	// closeSent is closed by the writer once the close frame is written (or
	// writing failed); nil unless closing. Guarded by mu.
	closeSent chan struct{}
	// ping sends a ping frame every ping interval. Reset and stopped under mu.
	ping *time.Timer
	// expiry closes the connection when its token's exp passes; nil for
	// tokens without exp. Set and stopped under mu.
	expiry *time.Timer
}

// resume is where a reconnecting client left off, for every channel it
// names at connect (SSE's Last-Event-ID): node-wide sequence numbers make
// one position valid for all of them.
type resume struct {
	since uint64
	epoch string
}

// start sets up a registered connection and starts its reader. With
// from, the channels are subscribed as if each had asked since from.
func (c *client) start(cfg *routeConfig, channels []string, from *resume) {
	h := cfg.hub
	c.maxMessage = int(h.MaxMessageSize)
	c.nc.SetReadDeadline(time.Now().Add(h.IdleTimeout))
	if !c.raw {
		c.send(controlFrame(welcomeMsg{Type: "welcome", Epoch: c.n.Epoch(), Protocol: 1}), false)
	}
	c.subsMu.Lock()
	for _, name := range channels {
		if c.subscribedLocked(name) != nil {
			continue
		}
		req := c.request(cfg, nil)
		req.ack = !c.raw
		if from != nil {
			req.since, req.hasSince, req.epoch = from.since, true, from.epoch
		}
		c.joinLocked(name, req)
	}
	c.subsMu.Unlock()
	c.mu.Lock()
	if c.state == stateOpen {
		c.ping = time.AfterFunc(h.PingInterval, c.onPing)
		if c.grant.exp != 0 {
			// PROTOCOL.md: closed once exp passes, not at the next ping.
			c.expiry = time.AfterFunc(time.Until(time.Unix(c.grant.exp, 0)), c.onExpiry)
		}
	}
	c.mu.Unlock()
	go c.readLoop()
}

// onExpiry runs on the expiry timer, at the token's exp.
func (c *client) onExpiry() {
	c.n.stats.expired.Add(1)
	c.closeWith(wsframe.ClosePolicy, "token expired")
}

// send queues a frame for the writer without ever blocking. When bounded
// and the queue is full, the client is closed as a slow consumer.
func (c *client) send(f []byte, bounded bool) {
	c.mu.Lock()
	c.sendLocked(f, bounded)
	c.mu.Unlock()
}

func (c *client) sendLocked(f []byte, bounded bool) {
	if c.state != stateOpen {
		return
	}
	if bounded && len(c.queue) >= c.route.queueSize() {
		c.slowLocked()
		return
	}
	c.queue = append(c.queue, f)
	c.startWriterLocked()
}

func (c *client) startWriterLocked() {
	if c.writing {
		return
	}
	c.writing = true
	// The reader goroutine holds a count on n.wg until the state is dead,
	// and nothing is queued once it is, so this Add never races Wait.
	c.n.wg.Add(1)
	go c.writeLoop()
}

// slowLocked drops what is queued and closes the client with 1013.
func (c *client) slowLocked() {
	c.n.stats.drop(dropQueueFull, len(c.queue)+1) // + the frame refused
	c.n.stats.slow.Add(1)
	clear(c.queue)
	c.queue = c.queue[:0]
	c.closeLocked(slowCloseFrame)
	// A write stuck on a full socket gives up soon rather than at the
	// idle timeout.
	c.nc.SetWriteDeadline(time.Now().Add(closeGrace))
	c.n.log.Warn("hub client dropped: queue full", "remote_addr", c.ip, "route", c.route.path)
}

// closeWith starts the closing handshake: the close frame goes after what
// is queued, and the reader waits closeGrace at most for the reply.
func (c *client) closeWith(code int, reason string) {
	c.mu.Lock()
	if c.state == stateOpen {
		f := goingAwayFrame
		if code != wsframe.CloseGoingAway || reason != "going away" {
			f = wsframe.CloseFrame(code, reason)
		}
		c.closeLocked(f)
	}
	c.mu.Unlock()
}

func (c *client) closeLocked(f []byte) {
	c.state = stateClosing
	c.closeSent = make(chan struct{})
	c.queue = append(c.queue, f)
	c.startWriterLocked()
	c.nc.SetReadDeadline(time.Now().Add(closeGrace))
	c.stopTimersLocked()
}

// stopTimersLocked stops the ping and expiry timers.
func (c *client) stopTimersLocked() {
	if c.ping != nil {
		c.ping.Stop()
	}
	if c.expiry != nil {
		c.expiry.Stop()
	}
}

// touch extends the idle deadline after a frame or pong from the client.
func (c *client) touch() {
	idle := c.route.config().hub.IdleTimeout
	c.mu.Lock()
	if c.state == stateOpen {
		c.nc.SetReadDeadline(time.Now().Add(idle))
	}
	c.mu.Unlock()
}

// pingFrame is a server ping with no payload.
var pingFrame = wsframe.Frame(wsframe.OpPing, nil)

// onPing runs on the ping timer: it sends a ping frame.
func (c *client) onPing() {
	every := c.route.config().hub.PingInterval
	c.mu.Lock()
	if c.state == stateOpen {
		c.sendLocked(pingFrame, false)
		c.ping.Reset(every)
	}
	c.mu.Unlock()
}

// writeLoop writes queued frames in batches until the queue is empty.
func (c *client) writeLoop() {
	pprof.SetGoroutineLabels(writeLabels)
	defer c.n.wg.Done()
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		// The close frame is queued together with the closing state, and
		// nothing is queued after it: a batch taken while closing ends
		// with it.
		final := c.state == stateClosing
		if len(batch) == 0 || c.state == stateDead {
			c.n.stats.drop(dropClosed, len(batch))
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()

		err := c.writeBatch(batch, final)
		if err == nil && !final {
			continue
		}
		c.mu.Lock()
		if err != nil {
			c.n.stats.drop(dropWriteError, len(c.queue))
			c.state = stateDead
			c.queue = nil
		}
		if c.closeSent != nil {
			close(c.closeSent)
			c.closeSent = nil
		}
		c.writing = false
		c.mu.Unlock()
		if err != nil {
			c.nc.Close() // the reader sees it and cleans up
		}
		return
	}
}

// writeBufs holds buffers for gathering several frames into one write.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxWriteBatch); return &b }}

// writeBatch writes frames, gathering small ones so that a batch costs
// one write(2) per maxWriteBatch bytes rather than one per frame.
//
// Writes carry no deadline of their own (setting one per batch costs a
// timer update per delivery): a client that stops reading stops answering
// pings, so its reader ends after idle_timeout and closes the socket,
// which ends a blocked write; under traffic its queue fills first and
// slowLocked sets a short deadline. The final batch (the close frame) is
// bounded by closeGrace.
func (c *client) writeBatch(batch [][]byte, final bool) error {
	if final {
		c.nc.SetWriteDeadline(time.Now().Add(closeGrace))
	}
	defer c.n.stats.written.Add(uint64(len(batch)))
	if len(batch) == 1 {
		return c.write(batch[0])
	}
	bp := writeBufs.Get().(*[]byte)
	defer writeBufs.Put(bp)
	buf := (*bp)[:0]
	for _, f := range batch {
		if len(buf) > 0 && len(buf)+len(f) > maxWriteBatch {
			if err := c.write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		if len(f) >= maxWriteBatch {
			if err := c.write(f); err != nil {
				return err
			}
			continue
		}
		buf = append(buf, f...)
	}
	if len(buf) > 0 {
		return c.write(buf)
	}
	return nil
}

func (c *client) write(b []byte) error {
	c.n.stats.writes.Add(1)
	_, err := c.nc.Write(b)
	return err
}

// finish releases everything the connection holds, on every path.
func (c *client) finish(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.closeWith(wsframe.CloseGoingAway, "idle timeout")
	}
	c.mu.Lock()
	sent := c.closeSent
	if c.state == stateOpen {
		c.state = stateDead // gone without a close handshake
	}
	c.stopTimersLocked()
	c.mu.Unlock()
	if sent != nil {
		// Let the close frame go out before the socket closes.
		t := time.NewTimer(closeGrace)
		select {
		case <-sent:
		case <-t.C:
		}
		t.Stop()
	}
	c.mu.Lock()
	c.state = stateDead
	c.n.stats.drop(dropClosed, len(c.queue))
	c.queue = nil
	c.mu.Unlock()
	c.nc.Close()

	c.subsMu.Lock()
	for _, ch := range c.subs {
		ch.unsubscribe(c)
	}
	c.subs = nil
	c.subsMu.Unlock()
	c.route.remove(c)
	c.n.stats.conns.Add(-1)
	c.n.wg.Done()
}
