package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"edge/config"
	"edge/internal/redisconn"
)

// The control API: an application (through the admin API or the CLI)
// disconnects users or takes them out of a channel, on every node. An
// order travels through the broker like a message, on controlChannel, a
// name no client can publish to ("!" is not a channel character), so that
// a node that holds none of the user's connections forwards it to the ones
// that do without knowing which they are.

// controlChannel carries control orders between nodes, under the broker's
// prefix (Redis: "edge:!control").
const controlChannel = "!control"

// Defaults of a disconnect order.
const (
	// DisconnectCode is the close code of a disconnect without one: the
	// first of the application range (RFC 6455 §7.4.2), so that clients
	// can tell it from edge's own closes.
	DisconnectCode   = 4000
	disconnectReason = "disconnected"
)

// Control is an order for the connections it selects. A connection is
// selected when it matches every selector given (Sub, Conn, and for a
// disconnect Channel); All selects every connection.
type Control struct {
	// Op is "disconnect" or "unsubscribe".
	Op string `json:"op"`
	// Sub selects the connections of one user (the token's sub).
	Sub string `json:"sub,omitempty"`
	// Conn selects one connection by its id (GET /hub/connections).
	Conn string `json:"conn,omitempty"`
	// Channel selects the connections subscribed to it (disconnect), or
	// names the channel to leave (unsubscribe, required).
	Channel string `json:"channel,omitempty"`
	// All selects every connection; it cannot be combined with Sub or Conn.
	All bool `json:"all,omitempty"`
	// Code and Reason are the close frame's (disconnect); default 4000
	// "disconnected". Codes are 4000–4999, the application's range.
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Reconnect false tells client.js not to reconnect (disconnect).
	// Default true.
	Reconnect *bool `json:"reconnect,omitempty"`
}

// check validates an order and fills its defaults.
func (o *Control) check() error {
	switch o.Op {
	case "disconnect":
		if o.Code == 0 {
			o.Code = DisconnectCode
		}
		if o.Code < 4000 || o.Code > 4999 {
			return errors.New("code must be 4000–4999, the application's range of close codes")
		}
		if o.Reason == "" {
			o.Reason = disconnectReason
		}
		if len(o.Reason) > 120 {
			return errors.New("reason is longer than 120 bytes (it must fit a close frame)")
		}
		if !o.All && o.Sub == "" && o.Conn == "" && o.Channel == "" {
			return errors.New(`select connections with "sub", "conn", "channel" or "all": true`)
		}
	case "unsubscribe":
		if o.Channel == "" {
			return errors.New(`"channel" is required`)
		}
		if o.Code != 0 || o.Reason != "" || o.Reconnect != nil {
			return errors.New(`"code", "reason" and "reconnect" belong to disconnect`)
		}
		if !o.All && o.Sub == "" && o.Conn == "" {
			return errors.New(`select connections with "sub", "conn" or "all": true`)
		}
	default:
		return fmt.Errorf("unknown op %q", o.Op)
	}
	if o.All && (o.Sub != "" || o.Conn != "") {
		return errors.New(`"all" cannot be combined with "sub" or "conn"`)
	}
	if o.Channel != "" && !config.ValidChannel(o.Channel) {
		return fmt.Errorf("invalid channel name %q", o.Channel)
	}
	return nil
}

// Control sends an order to every node sharing the broker, this one
// included. With the in-memory broker the order has been carried out when
// Control returns.
func (n *Node) Control(ctx context.Context, o Control) error {
	if err := o.check(); err != nil {
		return err
	}
	if n.isClosed() {
		return ErrClosed
	}
	p, _ := json.Marshal(o) // cannot fail: strings, ints, bools
	_, err := n.broker.Publish(ctx, controlChannel, p)
	return err
}

// control carries out an order that came through the broker.
func (n *Node) control(payload []byte) {
	var o Control
	if err := json.Unmarshal(payload, &o); err != nil {
		n.log.Warn("hub control order ignored: not JSON", "err", err)
		return
	}
	if err := o.check(); err != nil {
		n.log.Warn("hub control order ignored", "err", err)
		return
	}
	done := 0
	for _, c := range n.clients() {
		if !o.selects(n, c) {
			continue
		}
		switch o.Op {
		case "disconnect":
			c.disconnect(o.Code, o.Reason, o.Reconnect == nil || *o.Reconnect)
			done++
		case "unsubscribe":
			if c.leave(o.Channel) {
				if !c.raw {
					c.send(controlFrame(unsubscribedMsg{Type: "unsubscribed", Channel: o.Channel, Reason: "server"}), true)
				}
				done++
			}
		}
	}
	if done > 0 {
		n.log.Info("hub control order carried out", "op", o.Op, "sub", o.Sub, "conn", o.Conn,
			"channel", o.Channel, "all", o.All, "connections", done)
	}
}

// selects reports whether the order applies to c.
func (o *Control) selects(n *Node, c *client) bool {
	if o.All {
		return o.Op != "disconnect" || o.Channel == "" || c.isSubscribed(o.Channel)
	}
	if o.Conn != "" && o.Conn != n.connID(c) {
		return false
	}
	if o.Sub != "" && o.Sub != c.sub() {
		return false
	}
	if o.Op == "disconnect" && o.Channel != "" && !c.isSubscribed(o.Channel) {
		return false
	}
	return true
}

// clients returns every connection of every route.
func (n *Node) clients() []*client {
	n.mu.RLock()
	routes := make([]*route, 0, len(n.routes))
	for _, rt := range n.routes {
		routes = append(routes, rt)
	}
	n.mu.RUnlock()
	var all []*client
	for _, rt := range routes {
		all = append(all, rt.snapshot()...)
	}
	return all
}

// connID is c's id across the cluster: the node's id and c's number.
func (n *Node) connID(c *client) string {
	return n.id + "." + strconv.FormatUint(c.id, 10)
}

// unsubscribedMsg tells a client that the server ended a subscription.
type unsubscribedMsg struct {
	Type    string `json:"type"`
	Channel string `json:"channel"`
	Reason  string `json:"reason"`
}

// disconnectMsg precedes the close frame of a disconnect order, so that
// clients learn whether to reconnect (a close frame has no room for it).
type disconnectMsg struct {
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Reconnect bool   `json:"reconnect"`
}

// disconnect closes c on an order.
func (c *client) disconnect(code int, reason string, reconnect bool) {
	if !c.raw {
		c.send(controlFrame(disconnectMsg{Type: "disconnect", Code: code, Reason: reason, Reconnect: reconnect}), false)
	}
	c.closeWith(code, reason)
}

func (c *client) sub() string {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	return c.grant.sub
}

func (c *client) isSubscribed(name string) bool {
	c.subsMu.Lock()
	defer c.subsMu.Unlock()
	return c.subscribedLocked(name) != nil
}

// ConnInfo describes one connection, for GET /hub/connections.
type ConnInfo struct {
	ID        string    `json:"id"`
	Node      string    `json:"node"`
	Sub       string    `json:"sub,omitempty"`
	IP        string    `json:"ip"`
	Route     string    `json:"route"`
	Channels  []string  `json:"channels"`
	Connected time.Time `json:"connected"`
}

// info returns what the admin API shows of c.
func (n *Node) info(c *client) ConnInfo {
	c.subsMu.Lock()
	ci := ConnInfo{ID: n.connID(c), Node: n.id, Sub: c.grant.sub, IP: c.ip, Route: c.route.path,
		Channels: make([]string, 0, len(c.subs)), Connected: time.Unix(c.connected, 0).UTC()}
	for _, ch := range c.subs {
		ci.Channels = append(ci.Channels, ch.name)
	}
	c.subsMu.Unlock()
	return ci
}

// LocalConnections lists this node's connections of user sub (every
// connection when sub is "").
func (n *Node) LocalConnections(sub string) []ConnInfo {
	out := []ConnInfo{}
	for _, c := range n.clients() {
		if sub == "" || c.sub() == sub {
			out = append(out, n.info(c))
		}
	}
	return out
}

// Connections lists user sub's connections on every node sharing Redis
// (each node's last presence report, at most PresenceTTL old; this node's
// live list), or this node's without Redis.
func (n *Node) Connections(ctx context.Context, sub string) ([]ConnInfo, error) {
	local := n.LocalConnections(sub)
	if n.rdb == nil {
		return local, nil
	}
	out := local
	iter := n.rdb.Scan(ctx, 0, n.presenceKey("*"), 100).Iterator()
	for iter.Next(ctx) {
		if strings.TrimPrefix(iter.Val(), n.presenceKey("")) == n.id {
			continue // this node's live list is above
		}
		v, err := n.rdb.HGet(ctx, iter.Val(), userField+sub).Result()
		if err != nil {
			continue // no such user there, or the hash expired
		}
		var list []ConnInfo
		if json.Unmarshal([]byte(v), &list) == nil {
			out = append(out, list...)
		}
	}
	if err := iter.Err(); err != nil {
		return local, fmt.Errorf("connections: %w", err)
	}
	return out, nil
}

// userField prefixes the presence hash field that lists a user's
// connections on a node.
const userField = "u:"

// userFields returns the presence hash fields listing the connections of
// every user with a sub on this node.
func (n *Node) userFields() []any {
	by := map[string][]ConnInfo{}
	for _, c := range n.clients() {
		ci := n.info(c)
		if ci.Sub != "" {
			by[ci.Sub] = append(by[ci.Sub], ci)
		}
	}
	fields := make([]any, 0, 2*len(by))
	for sub, list := range by {
		p, _ := json.Marshal(list)
		fields = append(fields, userField+sub, p)
	}
	return fields
}

// ControlRedis sends an order straight into Redis, for the CLI when the
// admin listener is off: every node sharing that Redis carries it out.
func ControlRedis(ctx context.Context, cfg *config.Redis, o Control) error {
	if err := o.check(); err != nil {
		return err
	}
	rdb, err := redisconn.New(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	p, _ := json.Marshal(o)
	if err := rdb.Publish(ctx, cfg.Prefix+controlChannel, p).Err(); err != nil {
		return fmt.Errorf("redis publish control order: %w", err)
	}
	return nil
}
