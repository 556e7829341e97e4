package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Presence counts connections and subscribers, on one node or summed over
// every node sharing Redis.
type Presence struct {
	// Nodes is how many nodes reported (1 for a local view).
	Nodes int `json:"nodes"`
	// Connections is the number of open hub connections.
	Connections int `json:"connections"`
	// Channels maps each channel with subscribers to its presence.
	Channels map[string]ChannelPresence `json:"channels"`
}

// ChannelPresence is the presence of one channel.
type ChannelPresence struct {
	// Subscribers is the number of subscribed connections.
	Subscribers int `json:"subscribers"`
	// Subs lists the distinct token subjects subscribed, for routes with
	// presence_subs; sorted.
	Subs []string `json:"subs,omitempty"`
}

// LocalPresence returns this node's presence.
func (n *Node) LocalPresence() Presence {
	p := Presence{Nodes: 1, Connections: int(n.stats.conns.Load()), Channels: map[string]ChannelPresence{}}
	for _, ch := range n.channelList() {
		ch.mu.Lock()
		if len(ch.subs) > 0 {
			cp := ChannelPresence{Subscribers: len(ch.subs)}
			for s := range ch.subjects {
				cp.Subs = append(cp.Subs, s)
			}
			sort.Strings(cp.Subs)
			p.Channels[ch.name] = cp
		}
		ch.mu.Unlock()
	}
	return p
}

// ChannelMessages returns, for every channel this node holds state for,
// how many messages it delivered since that state was created (idle
// channels are dropped, and their counts start again from 0). With Redis
// every node receives every message, so the rate is the cluster's too.
func (n *Node) ChannelMessages() map[string]uint64 {
	out := map[string]uint64{}
	for _, ch := range n.channelList() {
		ch.mu.Lock()
		if !ch.dead {
			out[ch.name] = ch.published
		}
		ch.mu.Unlock()
	}
	return out
}

// Presence returns the presence over every node that shares this node's
// Redis (each node's last report, at most PresenceTTL old), or this node's
// presence without Redis.
func (n *Node) Presence(ctx context.Context) (Presence, error) {
	if n.rdb == nil {
		return n.LocalPresence(), nil
	}
	sum := Presence{Channels: map[string]ChannelPresence{}}
	subs := map[string]map[string]bool{}
	iter := n.rdb.Scan(ctx, 0, n.presenceKey("*"), 100).Iterator()
	for iter.Next(ctx) {
		h, err := n.rdb.HGetAll(ctx, iter.Val()).Result()
		if err != nil {
			return Presence{}, fmt.Errorf("presence: %w", err)
		}
		if len(h) == 0 {
			continue // expired between SCAN and HGETALL
		}
		sum.Nodes++
		for k, v := range h {
			switch {
			case k == "conns":
				c, _ := strconv.Atoi(v)
				sum.Connections += c
			case strings.HasPrefix(k, "c:"):
				c, _ := strconv.Atoi(v)
				cp := sum.Channels[k[2:]]
				cp.Subscribers += c
				sum.Channels[k[2:]] = cp
			case strings.HasPrefix(k, "s:"):
				var list []string
				json.Unmarshal([]byte(v), &list)
				if subs[k[2:]] == nil {
					subs[k[2:]] = map[string]bool{}
				}
				for _, s := range list {
					subs[k[2:]][s] = true
				}
			}
		}
	}
	if err := iter.Err(); err != nil {
		return Presence{}, fmt.Errorf("presence: %w", err)
	}
	for name, set := range subs {
		cp := sum.Channels[name]
		for s := range set {
			cp.Subs = append(cp.Subs, s)
		}
		sort.Strings(cp.Subs)
		sum.Channels[name] = cp
	}
	return sum, nil
}

// presenceKey is the Redis hash of a node's presence.
func (n *Node) presenceKey(id string) string { return n.prefix + "presence:" + id }

// presenceLoop writes this node's presence to Redis every third of the
// TTL until ctx is done.
func (n *Node) presenceLoop(ctx context.Context) {
	every := n.opts.PresenceTTL / 3
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		wctx, cancel := context.WithTimeout(ctx, every)
		err := n.writePresence(wctx)
		cancel()
		if err != nil && ctx.Err() == nil {
			n.log.Debug("hub presence not written", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// writePresence replaces this node's presence hash, with a TTL, in one
// transaction.
func (n *Node) writePresence(ctx context.Context) error {
	if n.isClosed() {
		return nil // Close removed the hash; do not bring it back
	}
	p := n.LocalPresence()
	fields := []any{"conns", p.Connections}
	for name, cp := range p.Channels {
		fields = append(fields, "c:"+name, cp.Subscribers)
		if len(cp.Subs) > 0 {
			list, _ := json.Marshal(cp.Subs)
			fields = append(fields, "s:"+name, list)
		}
	}
	fields = append(fields, n.userFields()...)
	key := n.presenceKey(n.id)
	_, err := n.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		p.HSet(ctx, key, fields...)
		p.PExpire(ctx, key, n.opts.PresenceTTL)
		return nil
	})
	return err
}
