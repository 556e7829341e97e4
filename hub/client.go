package hub

import (
	"context"
	"encoding/json"
	"errors"
	"net"
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

// client is one WebSocket connection. It has one reader goroutine at a time
// (readLoop, renewed after each burst of client frames) for its whole life,
// and a writer only while frames are queued: a flushing goroutine of the
// fan-out (flush.go) or its own writeLoop. An idle connection holds no
// writer, no write buffer and no read buffer.
type client struct {
	// Static after construction.
	n     *Node
	route *route
	nc    net.Conn // frames are written (frame.go) and read (reader.go) here
	// sock is nc's socket for the fan-out's non-blocking writes (flush.go);
	// nil when nc is not a plain socket (TLS).
	sock    syscall.RawConn
	ip      string
	grant   *grant
	raw     bool   // bare payloads (route raw: true at connect)
	subject string // presence subject, "" when not listed

	// Owned by the reader goroutine.
	rd         readBuffer
	maxMessage int // max_message_size at connect
	subs       []*channel
	limiter    *rate.Limiter // created on the first publish

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

	for _, ch := range c.subs {
		ch.unsubscribe(c)
	}
	c.subs = nil
	c.route.remove(c)
	c.n.stats.conns.Add(-1)
	c.n.wg.Done()
}

// Client messages. PROTOCOL.md documents them.

type inbound struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Since   *uint64         `json:"since"`
	Epoch   string          `json:"epoch"`
	Data    json.RawMessage `json:"data"`
	ID      json.RawMessage `json:"id"`
}

type replyMsg struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel,omitempty"`
	Seq     uint64          `json:"seq,omitempty"`
	Code    string          `json:"code,omitempty"`
	Message string          `json:"message,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
}

// Error codes of error replies.
const (
	errInvalidJSON      = "invalid_json"
	errBadRequest       = "bad_request"
	errUnknownType      = "unknown_type"
	errInvalidChannel   = "invalid_channel"
	errForbidden        = "forbidden"
	errTooManySubs      = "too_many_subscriptions"
	errRateLimited      = "rate_limited"
	errPublishFailed    = "publish_failed"
	errPublishForbidden = "publish_forbidden"
)

func (c *client) reply(m replyMsg) { c.send(controlFrame(m), true) }

func (c *client) replyError(id json.RawMessage, channel, code, msg string) {
	c.reply(replyMsg{Type: "error", Channel: channel, Code: code, Message: msg, ID: id})
}

// handle acts on one text message from the client.
func (c *client) handle(data []byte) {
	var m inbound
	if err := json.Unmarshal(data, &m); err != nil {
		if !json.Valid(data) {
			c.replyError(nil, "", errInvalidJSON, "message is not valid JSON")
		} else {
			c.replyError(nil, "", errBadRequest, "message is not a JSON object of the protocol")
		}
		return
	}
	switch m.Type {
	case "ping":
		c.reply(replyMsg{Type: "pong", ID: m.ID})
	case "subscribe":
		c.subscribeMsg(&m)
	case "unsubscribe":
		c.unsubscribeMsg(&m)
	case "publish":
		c.publishMsg(&m)
	case "":
		c.replyError(m.ID, "", errBadRequest, "missing type")
	default:
		c.replyError(m.ID, "", errUnknownType, "unknown message type")
	}
}

func (c *client) subscribed(name string) *channel {
	for _, ch := range c.subs {
		if ch.name == name {
			return ch
		}
	}
	return nil
}

func (c *client) subscribeMsg(m *inbound) {
	if !validChannel(m.Channel) {
		c.replyError(m.ID, m.Channel, errInvalidChannel, "invalid channel name")
		return
	}
	cfg := c.route.config()
	if !cfg.allowed(c.grant, m.Channel) {
		c.replyError(m.ID, m.Channel, errForbidden, "channel not allowed")
		return
	}
	if c.subscribed(m.Channel) != nil {
		// Already subscribed: confirm without replaying, so nothing is
		// delivered twice.
		req := c.request(cfg, m.ID)
		req.hasSince = false
		c.resubscribe(m.Channel, req)
		return
	}
	if len(c.subs) >= cfg.hub.MaxSubscriptions {
		c.replyError(m.ID, m.Channel, errTooManySubs, "subscription limit reached")
		return
	}
	req := c.request(cfg, m.ID)
	if m.Since != nil {
		req.since, req.hasSince, req.epoch = *m.Since, true, m.Epoch
	}
	c.join(m.Channel, req)
}

// request returns a subscribe request with the client's limits.
func (c *client) request(cfg *routeConfig, id json.RawMessage) *subscribeRequest {
	return &subscribeRequest{
		n:     c.n,
		ack:   true,
		id:    id,
		route: cfg.history,
		node:  c.n.retention(),
		now:   time.Now(),
	}
}

// join subscribes to a channel, retrying if its state was just dropped.
func (c *client) join(name string, req *subscribeRequest) {
	for {
		ch := c.n.channel(name)
		if ch.subscribe(c, req) {
			c.subs = append(c.subs, ch)
			return
		}
	}
}

// resubscribe acknowledges an existing subscription.
func (c *client) resubscribe(name string, req *subscribeRequest) {
	ch := c.subscribed(name)
	ch.mu.Lock()
	last := ch.last
	ch.mu.Unlock()
	c.send(controlFrame(subscribedMsg{Type: "subscribed", Channel: name, Seq: last, Epoch: c.n.epoch, ID: req.id}), true)
}

func (c *client) unsubscribeMsg(m *inbound) {
	for i, ch := range c.subs {
		if ch.name == m.Channel {
			ch.unsubscribe(c)
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			break
		}
	}
	// Unsubscribing from a channel one is not subscribed to is not an
	// error: the end state is what was asked for.
	c.reply(replyMsg{Type: "unsubscribed", Channel: m.Channel, ID: m.ID})
}

func (c *client) publishMsg(m *inbound) {
	if !validChannel(m.Channel) {
		c.replyError(m.ID, m.Channel, errInvalidChannel, "invalid channel name")
		return
	}
	cfg := c.route.config()
	if !cfg.hub.AllowPublish || !c.grant.mayPublish(m.Channel) || !cfg.allowed(c.grant, m.Channel) {
		c.replyError(m.ID, m.Channel, errPublishForbidden, "publishing to this channel is not allowed")
		return
	}
	if len(m.Data) == 0 {
		c.replyError(m.ID, m.Channel, errBadRequest, "publish needs data")
		return
	}
	if c.limiter == nil {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.hub.PublishRate), max(1, int(cfg.hub.PublishRate)))
	}
	if !c.limiter.Allow() {
		c.replyError(m.ID, m.Channel, errRateLimited, "publish rate limit exceeded")
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	seq, err := c.n.Publish(ctx, m.Channel, m.Data)
	if err != nil {
		c.n.log.Warn("hub client publish failed", "channel", m.Channel, "err", err)
		c.replyError(m.ID, m.Channel, errPublishFailed, "publish failed")
		return
	}
	if len(m.ID) > 0 {
		c.reply(replyMsg{Type: "published", Channel: m.Channel, Seq: seq, ID: m.ID})
	}
}
