package hub

import (
	"context"
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"

	"edge/config"
	"edge/internal/wsframe"
)

// The messages of PROTOCOL.md, in its order: §2 the messages from the
// server (data, then control), §3 the messages from the client, §4 the
// close frames the hub sends. The rest of the protocol lives where it
// acts: §1 connecting in route.go (auth.go, origin.go, names.go), §5
// liveness in conn.go, §6 recovery in channel.go, §7 publishing from
// servers in admin.go.
//
// Server frames are built once per message and written as they are to
// every subscriber's socket (RFC 6455 §5.2: frames from a server are not
// masked, so the same bytes are valid for every connection). This is what
// lets the writer put several queued frames into one write(2). The framing
// itself is internal/wsframe's.

// §2 Messages from the server: data messages.

// dataJSON returns the payload as the value of a "data" member: verbatim
// when it is JSON, else as a JSON string.
func dataJSON(payload []byte) []byte {
	if json.Valid(payload) {
		return payload
	}
	s, _ := json.Marshal(string(payload)) // cannot fail for a string
	return s
}

// messageFrame builds the text frame {"channel":…,"seq":…,"data":…}.
// Channel names are validated and need no escaping.
func messageFrame(channel string, seq uint64, data []byte) []byte {
	var num [20]byte
	seqText := strconv.AppendUint(num[:0], seq, 10)
	const (
		p1 = `{"channel":"`
		p2 = `","seq":`
		p3 = `,"data":`
	)
	n := len(p1) + len(channel) + len(p2) + len(seqText) + len(p3) + len(data) + 1
	b := make([]byte, 0, wsframe.HeaderLen(n)+n)
	b = wsframe.AppendHeader(b, wsframe.OpText, n)
	b = append(b, p1...)
	b = append(b, channel...)
	b = append(b, p2...)
	b = append(b, seqText...)
	b = append(b, p3...)
	b = append(b, data...)
	return append(b, '}')
}

// rawFrame is the frame of a payload for a raw route: a text frame, or a
// binary frame when the payload is not UTF-8 (a text frame must be, or
// browsers fail the connection).
func rawFrame(payload []byte) []byte {
	if utf8.Valid(payload) {
		return wsframe.Frame(wsframe.OpText, payload)
	}
	return wsframe.Frame(wsframe.OpBinary, payload)
}

// §2 Messages from the server: control messages.

// textFrame returns a text frame holding payload.
func textFrame(payload []byte) []byte { return wsframe.Frame(wsframe.OpText, payload) }

// controlFrame marshals a control message into a text frame.
func controlFrame(v any) []byte {
	p, err := json.Marshal(v)
	if err != nil {
		panic("hub: marshal control message: " + err.Error()) // only our own types
	}
	return textFrame(p)
}

// welcomeMsg is the first message of every connection.
type welcomeMsg struct {
	Type     string `json:"type"`
	Epoch    string `json:"epoch"`
	Protocol int    `json:"protocol"`
}

// subscribedMsg confirms a subscription.
type subscribedMsg struct {
	Type      string          `json:"type"`
	Channel   string          `json:"channel"`
	Seq       uint64          `json:"seq"`
	Epoch     string          `json:"epoch"`
	Recovered *bool           `json:"recovered,omitempty"`
	ID        json.RawMessage `json:"id,omitempty"`
}

// gapMsg says that messages of a channel were missed.
type gapMsg struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Seq     uint64 `json:"seq"`
	Epoch   string `json:"epoch"`
	Reason  string `json:"reason"`
}

func gapFrame(channel string, seq uint64, epoch, reason string) []byte {
	return controlFrame(gapMsg{Type: "gap", Channel: channel, Seq: seq, Epoch: epoch, Reason: reason})
}

// replyMsg is the reply to a client request: pong, unsubscribed,
// published or error.
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

// §3 Messages from the client.

// inbound is a message from the client.

type inbound struct {
	Type    string          `json:"type"`
	Channel string          `json:"channel"`
	Since   *uint64         `json:"since"`
	Epoch   string          `json:"epoch"`
	Data    json.RawMessage `json:"data"`
	ID      json.RawMessage `json:"id"`
	Token   string          `json:"token"`
}

func (c *client) reply(m replyMsg) { c.send(controlFrame(m), true) }

func (c *client) replyError(id json.RawMessage, channel, code, msg string) {
	c.reply(replyMsg{Type: "error", Channel: channel, Code: code, Message: msg, ID: id})
}

// heartbeat is a raw route's text heartbeat: the client's ping and the
// frame that answers it, built once.
type heartbeat struct {
	ping string
	pong []byte
}

func newHeartbeat(h *config.RawHeartbeat) *heartbeat {
	if h == nil {
		return nil
	}
	return &heartbeat{ping: h.Ping, pong: rawFrame([]byte(h.Pong))}
}

// handle acts on one text message from the client.
func (c *client) handle(data []byte) {
	if c.heartbeat != nil && string(data) == c.heartbeat.ping {
		c.send(c.heartbeat.pong, true)
		return
	}
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
	case "refresh":
		c.refreshMsg(&m)
	case "":
		c.replyError(m.ID, "", errBadRequest, "missing type")
	default:
		c.replyError(m.ID, "", errUnknownType, "unknown message type")
	}
}

// subscribedLocked returns c's subscription to name, or nil. c.subsMu is
// held.
func (c *client) subscribedLocked(name string) *channel {
	for _, ch := range c.subs {
		if ch.name == name {
			return ch
		}
	}
	return nil
}

func (c *client) subscribeMsg(m *inbound) {
	if !config.ValidChannel(m.Channel) {
		c.replyError(m.ID, m.Channel, errInvalidChannel, "invalid channel name")
		return
	}
	cfg := c.route.config()
	if !cfg.allowed(c.grant, m.Channel) {
		c.replyError(m.ID, m.Channel, errForbidden, "channel not allowed")
		return
	}
	// Already subscribed: confirmed below without asking the application
	// again.
	if !c.isSubscribed(m.Channel) {
		if code, msg := cfg.subProxy.check(c.grant, c.ip, c.n.connID(c), m.Channel); code != "" {
			c.replyError(m.ID, m.Channel, code, msg)
			return
		}
	}
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	if c.subscribedLocked(m.Channel) != nil {
		// Already subscribed: confirm without replaying, so nothing is
		// delivered twice.
		req := c.request(cfg, m.ID)
		req.hasSince = false
		c.resubscribeLocked(m.Channel, req)
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
	c.joinLocked(m.Channel, req)
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

// joinLocked subscribes to a channel, retrying if its state was just
// dropped or moved while its history was fetched from Redis. c.subsMu is
// held (a fetch blocks only this client).
func (c *client) joinLocked(name string, req *subscribeRequest) {
	for {
		ch := c.n.channel(name)
		req.again = false
		req.remote = c.n.prefetch(ch, req)
		if ch.subscribe(c, req) {
			c.subs = append(c.subs, ch)
			return
		}
	}
}

// resubscribeLocked acknowledges an existing subscription. c.subsMu is
// held.
func (c *client) resubscribeLocked(name string, req *subscribeRequest) {
	ch := c.subscribedLocked(name)
	ch.mu.Lock()
	last := ch.last
	ch.mu.Unlock()
	c.send(controlFrame(subscribedMsg{Type: "subscribed", Channel: name, Seq: last, Epoch: c.n.Epoch(), ID: req.id}), true)
}

func (c *client) unsubscribeMsg(m *inbound) {
	c.leave(m.Channel)
	// Unsubscribing from a channel one is not subscribed to is not an
	// error: the end state is what was asked for.
	c.reply(replyMsg{Type: "unsubscribed", Channel: m.Channel, ID: m.ID})
}

// leave ends c's subscription to name, reporting whether there was one.
func (c *client) leave(name string) bool {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	for i, ch := range c.subs {
		if ch.name == name {
			ch.unsubscribe(c)
			c.subs = append(c.subs[:i], c.subs[i+1:]...)
			return true
		}
	}
	return false
}

func (c *client) publishMsg(m *inbound) {
	cfg := c.route.config()
	if c.limiter == nil {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.hub.PublishRate), max(1, int(cfg.hub.PublishRate)))
	}
	seq, code, msg := c.n.publishAs(cfg, c.grant, c.ip, c.n.connID(c), m.Channel, m.Data, c.limiter)
	if code != "" {
		c.replyError(m.ID, m.Channel, code, msg)
		return
	}
	if len(m.ID) > 0 {
		c.reply(replyMsg{Type: "published", Channel: m.Channel, Seq: seq, ID: m.ID})
	}
}

// publishAs publishes data for a client (a connection's publish message,
// or an SSE client's POST): the route's and grant's permissions, the
// client's rate, the application's publish proxy, then the broker. It
// returns the sequence number when known, or an error code and message.
func (n *Node) publishAs(cfg *routeConfig, g *grant, ip, conn, channel string, data []byte, lim *rate.Limiter) (seq uint64, code, msg string) {
	if !config.ValidChannel(channel) {
		return 0, errInvalidChannel, "invalid channel name"
	}
	if !cfg.hub.AllowPublish || !g.mayPublish(channel) || !cfg.allowed(g, channel) {
		return 0, errPublishForbidden, "publishing to this channel is not allowed"
	}
	if len(data) == 0 {
		return 0, errBadRequest, "publish needs data"
	}
	if !lim.Allow() {
		return 0, errRateLimited, "publish rate limit exceeded"
	}
	if cfg.pubProxy != nil {
		out := cfg.pubProxy.publish(g, ip, conn, channel, data, int(cfg.hub.MaxMessageSize))
		if out.code != "" {
			return 0, out.code, out.msg
		}
		if !out.broadcast {
			return 0, "", ""
		}
		data = out.data
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	seq, err := n.Publish(ctx, channel, data)
	if err != nil {
		n.log.Warn("hub client publish failed", "channel", channel, "err", err)
		return 0, errPublishFailed, "publish failed"
	}
	return seq, "", ""
}

// §4 Close codes: the close frames sent often enough to build once. The
// codes themselves are internal/wsframe's.
var (
	slowCloseFrame = wsframe.CloseFrame(wsframe.CloseTryLater, "slow consumer: queue full")
	goingAwayFrame = wsframe.CloseFrame(wsframe.CloseGoingAway, "going away")
)
