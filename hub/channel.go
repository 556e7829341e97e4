package hub

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"
)

// Sequence numbers come from one counter per node (Node.seq), taken under
// the channel's lock, so they increase within every channel but are not
// contiguous. That lets a channel's state be dropped when it is idle and
// recreated later without ever reusing a number a client may hold: a new
// state starts at the node's current count, so an older since yields a gap.

// message is one published payload with its frames, shared by every
// subscriber's queue and by the history. Immutable once built, except raw,
// which is built lazily, and the fields the history accounting sets; all
// under the channel's lock.
type message struct {
	seq     uint64
	at      int64 // unix nanoseconds when this node received it
	payload []byte
	frame   []byte // {"channel","seq","data"} text frame
	raw     []byte // bare payload frame for raw routes; nil until needed
	// zframe and zraw are frame and raw compressed (deflate.go), or the
	// frame itself when deflate does not make it smaller; nil until a
	// client that negotiated compression needs them, and kept only while
	// the message is in the history.
	zframe, zraw []byte
	// size is what the message counts against history.max_bytes while
	// held.
	size int64
	// held is set while the message is in its channel's history; it is
	// read without the lock by the node's history queue (history.go).
	held atomic.Bool
}

// rawFrame returns the bare payload frame, building it on first use; a
// message in the history then counts the frame's bytes too.
func (m *message) rawFrame(n *Node) []byte {
	if m.raw == nil {
		m.raw = rawFrame(m.payload)
		if m.held.Load() {
			m.size += int64(len(m.raw))
			n.hist.bytes.Add(int64(len(m.raw)))
		}
	}
	return m.raw
}

// histLimits bound a history: count and age. size 0 keeps nothing.
// maxBytes is the node-wide bound (only the node's retention uses it).
type histLimits struct {
	size     int
	ttl      time.Duration
	maxBytes int64
}

// channel is the state of one channel on this node: subscribers, history
// and the sequence position.
type channel struct {
	name string

	mu sync.Mutex
	// subs are the subscribed clients. Guarded by mu.
	subs map[*client]struct{}
	// raws counts subscribers on raw routes, so that raw frames are only
	// built when someone needs them. Guarded by mu.
	raws int
	// subjects counts subscribers per token subject, for presence lists
	// (routes with presence_subs). Guarded by mu; nil until needed.
	subjects map[string]int
	// last is the newest sequence number (or the starting point); safe is
	// the lowest since from which the history replays completely.
	// Invariant: safe <= last. Guarded by mu.
	last, safe uint64
	// hist holds the retained messages, oldest first. Guarded by mu.
	hist []*message
	// published counts the messages delivered on this node since the
	// state was created, for the dashboard's messages/s. Guarded by mu.
	published uint64
	// dead is set when the node dropped this state; holders of the pointer
	// must look the channel up again. Guarded by mu.
	dead bool
}

func newChannel(name string, start uint64) *channel {
	return &channel{name: name, subs: map[*client]struct{}{}, last: start, safe: start}
}

// trimLocked drops messages beyond lim.
func (ch *channel) trimLocked(n *Node, lim histLimits, now time.Time) {
	k := 0
	if over := len(ch.hist) - lim.size; over > 0 {
		k = over
	}
	cutoff := now.Add(-lim.ttl).UnixNano()
	for k < len(ch.hist) && ch.hist[k].at < cutoff {
		k++
	}
	if k == 0 {
		return
	}
	ch.dropLocked(n, k)
}

// dropLocked removes the k oldest messages of the history; since from
// before the last of them then yields a gap.
func (ch *channel) dropLocked(n *Node, k int) {
	ch.safe = max(ch.safe, ch.hist[k-1].seq)
	for _, m := range ch.hist[:k] {
		n.hist.release(m)
	}
	clear(ch.hist[:k])
	ch.hist = ch.hist[k:]
	if len(ch.hist) == 0 {
		ch.hist = nil
	}
}

// publish records the message in the history and queues its frame on
// every subscriber. seq is the number Redis gave it (cluster-wide
// history); 0 means the node numbers it (no Redis) or, with Redis, that it
// came by a plain PUBLISH: live only, with the channel's current seq. It
// reports false when the channel state is dead (the caller looks it up
// again).
func (ch *channel) publish(n *Node, seq uint64, payload []byte, lim histLimits, now time.Time) (uint64, bool) {
	ch.mu.Lock()
	if ch.dead {
		ch.mu.Unlock()
		return 0, false
	}
	seq, claimed := ch.publishLocked(n, seq, payload, lim, now)
	ch.mu.Unlock()
	if claimed != nil {
		go flushClients(claimed)
	}
	return seq, true
}

// publishLocked is publish with ch.mu held; the caller flushes claimed.
func (ch *channel) publishLocked(n *Node, seq uint64, payload []byte, lim histLimits, now time.Time) (uint64, []*client) {
	keep := true
	switch {
	case seq != 0:
		if seq <= ch.last {
			// Already delivered: a replay after an outage overlapping the
			// live subscription.
			n.stats.duplicates.Add(1)
			return seq, nil
		}
		if ch.last == 0 {
			// The position before this message is unknown here: the
			// local history replays only from this message on.
			ch.safe = seq
		}
	case n.redis != nil:
		seq, keep = ch.last, false
	default:
		seq = n.seq.Add(1)
	}
	m := &message{seq: seq, at: now.UnixNano(), payload: payload}
	m.frame = messageFrame(ch.name, m.seq, dataJSON(payload))
	ch.published++
	if ch.raws > 0 {
		m.rawFrame(n)
	}
	// The frames are taken before the history may release m (which
	// forgets them).
	frame, raw := m.frame, m.raw
	if keep {
		ch.last = m.seq
		if lim.size > 0 {
			ch.hist = append(ch.hist, m)
			n.hist.retain(ch, m)
		}
		ch.trimLocked(n, lim, now)
		if lim.size == 0 {
			ch.safe = m.seq
		}
	}
	// Clients without a running writer are written to by flushing
	// goroutines, flushChunk clients each (see flush.go).
	var claimed []*client
	var zframe, zraw []byte // compressed once per message (deflate.go)
	for c := range ch.subs {
		f := frame
		if c.raw {
			f = raw
		}
		if c.wantsDeflate(f) {
			f = deflatedOnce(n, m, c.raw, f, &zframe, &zraw)
		}
		if !c.enqueue(f) {
			continue
		}
		if claimed == nil {
			claimed = make([]*client, 0, min(len(ch.subs), flushChunk))
		}
		if claimed = append(claimed, c); len(claimed) == flushChunk {
			go flushClients(claimed)
			claimed = nil
		}
	}
	return m.seq, claimed
}

// subscribeRequest is a subscription with optional recovery.
type subscribeRequest struct {
	n        *Node
	since    uint64
	hasSince bool
	epoch    string          // the client's epoch; "" skips the check
	ack      bool            // send a "subscribed" reply
	id       json.RawMessage // request id to echo
	route    histLimits      // the client's route's history limits
	node     histLimits      // the node's retention, for trimming
	now      time.Time
	// remote is what Redis' history said, fetched before the channel's
	// lock was taken (Node.prefetch); nil when not needed or without
	// Redis.
	remote *remoteHistory
	// again is set by subscribe when the channel moved past remote while
	// it was fetched: fetch again.
	again bool
	// tries counts fetches; after maxFetches the client gets a gap.
	tries int
}

// maxFetches bounds the history fetches of one subscription.
const maxFetches = 3

// subscribe adds c and, under the same lock so nothing is missed or
// duplicated, queues the reply and the replay (or a gap notice). It
// reports false when the channel state is dead, or with req.again set
// when the history must be fetched again.
func (ch *channel) subscribe(c *client, req *subscribeRequest) bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.dead {
		return false
	}
	ch.trimLocked(req.n, req.node, req.now)
	if r := req.remote; r != nil && ch.last == 0 && len(ch.subs) == 0 {
		// A fresh state learns the channel's position; with subscribers
		// (or messages) it has its own, and everything after it arrives
		// live. When Redis cannot say, the position is now on this node's
		// clock: the catch-up after the outage replays from there.
		switch {
		case r.err == nil && r.epoch == req.n.Epoch():
			ch.last, ch.safe = r.last, r.last
		case r.err != nil:
			now := uint64(req.now.UnixMicro())
			ch.last, ch.safe = now, now
		}
	}

	var replay []*message
	gapReason := ""
	if req.hasSince {
		if req.n.rdb != nil {
			replay, gapReason = ch.missedClusterLocked(req)
			if req.again {
				return false
			}
		} else {
			replay, gapReason = ch.missedLocked(req)
		}
	}
	ch.subs[c] = struct{}{}
	if c.raw {
		ch.raws++
	}
	if c.subject != "" {
		if ch.subjects == nil {
			ch.subjects = map[string]int{}
		}
		ch.subjects[c.subject]++
	}
	epoch := req.n.Epoch()
	if req.ack {
		ack := subscribedMsg{Type: "subscribed", Channel: ch.name, Seq: ch.last, Epoch: epoch, ID: req.id}
		if req.hasSince {
			rec := gapReason == ""
			ack.Recovered = &rec
		}
		c.send(controlFrame(ack), false)
	}
	if gapReason != "" {
		if !c.raw {
			c.send(gapFrame(ch.name, ch.last, epoch, gapReason), false)
		}
		req.n.stats.gaps.Add(1)
		return true
	}
	for _, m := range replay {
		f := m.frame
		if c.raw {
			f = m.rawFrame(req.n)
		}
		if c.wantsDeflate(f) {
			f = m.deflated(req.n, c.raw, f)
		}
		c.send(f, false)
	}
	return true
}

// missedLocked returns the messages after req.since, or the reason they
// cannot all be replayed.
func (ch *channel) missedLocked(req *subscribeRequest) ([]*message, string) {
	switch {
	case req.epoch != "" && req.epoch != req.n.Epoch():
		return nil, "epoch"
	case req.since < ch.safe || req.since > ch.last:
		return nil, "history"
	case req.since == ch.last:
		return nil, ""
	}
	return ch.localAfterLocked(req, req.since)
}

// localAfterLocked returns the local history after since, which must be
// at least ch.safe, within the route's limits.
func (ch *channel) localAfterLocked(req *subscribeRequest, since uint64) ([]*message, string) {
	// since >= safe: everything after it is in hist.
	i := len(ch.hist)
	for i > 0 && ch.hist[i-1].seq > since {
		i--
	}
	return routeLimited(req, ch.hist[i:])
}

// routeLimited checks missed against the route's own history limits.
func routeLimited(req *subscribeRequest, missed []*message) ([]*message, string) {
	if len(missed) > req.route.size {
		return nil, "history" // more than this route keeps
	}
	if len(missed) > 0 && missed[0].at < req.now.Add(-req.route.ttl).UnixNano() {
		return nil, "history" // older than this route keeps
	}
	return missed, ""
}

// localCoversLocked reports whether the node's own history replays
// everything after since (cluster-wide history: position known).
func (ch *channel) localCoversLocked(since uint64) bool {
	return ch.last != 0 && since >= ch.safe && since <= ch.last
}

// missedClusterLocked is missedLocked with the history in Redis: the
// node's own history when it covers since, else Redis' (req.remote),
// joined to the node's for what was delivered here while it was fetched.
// Messages after ch.last are not replayed: they reach every subscriber
// live.
func (ch *channel) missedClusterLocked(req *subscribeRequest) ([]*message, string) {
	n, since := req.n, req.since
	if req.epoch != "" && req.epoch != n.Epoch() {
		return nil, "epoch"
	}
	if ch.localCoversLocked(since) {
		if since == ch.last {
			return nil, ""
		}
		return ch.localAfterLocked(req, since)
	}
	r := req.remote
	switch {
	case r == nil:
		// The state moved since the fetch was judged unnecessary.
		return ch.retryLocked(req)
	case r.err != nil:
		return nil, "outage"
	case r.epoch != n.Epoch():
		return nil, "epoch"
	case r.trimmed > since, r.last == 0 && since > 0:
		return nil, "history" // trimmed, or expired
	case len(r.entries) > req.route.size:
		return nil, "history"
	case r.last > since && (len(r.entries) == 0 || r.entries[len(r.entries)-1].seq != r.last):
		return nil, "history" // not kept (history.size 0)
	}
	var out []*message
	for _, e := range r.entries {
		if e.seq > ch.last {
			break // on its way live
		}
		out = append(out, remoteMessage(ch.name, e))
	}
	if top := max(since, r.last); ch.last > top {
		// Delivered here after the fetch: from the local history.
		if !ch.localCoversLocked(top) {
			return ch.retryLocked(req)
		}
		for _, m := range ch.hist {
			if m.seq > top {
				out = append(out, m)
			}
		}
	}
	return routeLimited(req, out)
}

// retryLocked asks for another fetch, or gives up with a gap.
func (ch *channel) retryLocked(req *subscribeRequest) ([]*message, string) {
	if req.tries >= maxFetches {
		return nil, "history"
	}
	req.again = true
	return nil, ""
}

// unsubscribe removes c.
func (ch *channel) unsubscribe(c *client) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if _, ok := ch.subs[c]; !ok {
		return
	}
	delete(ch.subs, c)
	if c.raw {
		ch.raws--
	}
	if c.subject != "" {
		if ch.subjects[c.subject]--; ch.subjects[c.subject] <= 0 {
			delete(ch.subjects, c.subject)
		}
	}
}

// markLost records that messages may have been lost (the broker
// subscription was down): the position moves past a burnt number, the
// history is dropped, and live subscribers get a gap notice.
func (ch *channel) markLost(n *Node) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.dead {
		return
	}
	ch.lostLocked(n, n.seq.Add(1), "outage")
}

// lostLocked moves the position to pos (everything up to it is covered by
// the gap), drops the history and sends live subscribers a gap notice.
func (ch *channel) lostLocked(n *Node, pos uint64, reason string) {
	ch.last, ch.safe = pos, pos
	for _, m := range ch.hist {
		n.hist.release(m)
	}
	clear(ch.hist)
	ch.hist = nil
	var f []byte
	for c := range ch.subs {
		if c.raw {
			continue
		}
		if f == nil {
			f = gapFrame(ch.name, pos, n.Epoch(), reason)
		}
		c.send(f, true)
		n.stats.gaps.Add(1)
	}
}

// catchUp delivers what Redis' history holds after since (the position
// before the outage), or reports a gap when it cannot: after an outage of
// the broker subscription (cluster-wide history). Called on the broker's
// goroutine before live delivery resumes, so nothing is delivered twice
// (seqs at or below the position are skipped) or out of order.
func (ch *channel) catchUp(n *Node, since uint64, r *remoteHistory, lim histLimits, now time.Time) {
	ch.mu.Lock()
	if ch.dead {
		ch.mu.Unlock()
		return
	}
	ok := r.err == nil && r.epoch == n.Epoch() && r.trimmed <= since &&
		!(r.last == 0 && since > 0) && len(r.entries) <= lim.size &&
		(r.last <= since || (len(r.entries) > 0 && r.entries[len(r.entries)-1].seq == r.last))
	if !ok {
		// Everything up to Redis' position (or, when Redis could not say,
		// up to now on Redis' clock, roughly) is covered by the gap.
		pos := max(since, ch.last, r.last)
		if r.err != nil {
			pos = max(pos, uint64(now.UnixMicro()))
		}
		ch.lostLocked(n, pos, "outage")
		ch.mu.Unlock()
		return
	}
	var all []*client
	for _, e := range r.entries {
		_, claimed := ch.publishLocked(n, e.seq, e.payload, lim, now)
		all = append(all, claimed...)
	}
	ch.mu.Unlock()
	if all != nil {
		go flushClients(all)
	}
}

// idleLocked reports whether the state holds nothing worth keeping.
func (ch *channel) idleLocked() bool { return len(ch.subs) == 0 && len(ch.hist) == 0 }
