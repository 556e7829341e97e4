package hub

import (
	"sync"
	"sync/atomic"
)

// nodeHistory bounds the bytes held by the history of every channel of the
// node together (hub.history.max_bytes). Per-channel limits (size, ttl)
// alone let 600 channels × 100 messages of 60 KB hold gigabytes; with this
// bound the oldest messages of the node, whatever their channel, are
// evicted first, and a client asking since one of them gets a gap.
//
// Messages enter a node-wide queue in the order their channels retained
// them. Eviction pops the queue and removes each message from its channel
// under that channel's lock, never holding the queue's lock meanwhile (the
// lock order is channel, then queue). Entries whose message already left
// the history (size, ttl, outage) are skipped, and compacted away when they
// outnumber the live ones; a released message forgets its payload and
// frames, so such an entry holds a few dozen bytes.
type nodeHistory struct {
	bytes   atomic.Int64  // bytes of held messages
	live    atomic.Int64  // held messages
	evicted atomic.Uint64 // messages evicted for max_bytes

	mu   sync.Mutex
	q    []histEntry // guarded by mu; q[head:] is live, oldest first
	head int         // guarded by mu
}

type histEntry struct {
	ch *channel
	m  *message
}

// compactSlack is how many stale entries the queue tolerates beyond twice
// the live ones before it is compacted.
const compactSlack = 1024

// retain accounts m, just appended to ch's history. Called with ch.mu held.
func (h *nodeHistory) retain(ch *channel, m *message) {
	m.size = int64(len(m.payload) + len(m.frame) + len(m.raw))
	m.held.Store(true)
	h.bytes.Add(m.size)
	h.live.Add(1)
	h.mu.Lock()
	h.q = append(h.q, histEntry{ch, m})
	if int64(len(h.q)-h.head) > 2*h.live.Load()+compactSlack {
		h.compactLocked()
	}
	h.mu.Unlock()
}

// release un-accounts m, leaving its channel's history, and drops its
// payload and frames (subscriber queues hold their own references).
// Called with the channel's lock held; a no-op for a message not held.
func (h *nodeHistory) release(m *message) {
	if !m.held.Swap(false) {
		return
	}
	h.bytes.Add(-m.size)
	h.live.Add(-1)
	m.payload, m.frame, m.raw, m.zframe, m.zraw = nil, nil, nil, nil, nil
}

// compactLocked drops the entries of messages no longer held.
func (h *nodeHistory) compactLocked() {
	live := h.q[:0]
	for _, e := range h.q[h.head:] {
		if e.m.held.Load() {
			live = append(live, e)
		}
	}
	clear(h.q[len(live):])
	h.q, h.head = live, 0
}

// pop removes and returns the oldest entry.
func (h *nodeHistory) pop() (histEntry, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.head == len(h.q) {
		h.q, h.head = h.q[:0], 0
		return histEntry{}, false
	}
	e := h.q[h.head]
	h.q[h.head] = histEntry{}
	h.head++
	if h.head > compactSlack && h.head > len(h.q)/2 {
		n := copy(h.q, h.q[h.head:])
		clear(h.q[n:])
		h.q, h.head = h.q[:n], 0
	}
	return e, true
}

// enforce evicts the oldest messages until the history is within limit.
// Called without any channel lock.
func (h *nodeHistory) enforce(n *Node, limit int64) {
	for h.bytes.Load() > limit {
		e, ok := h.pop()
		if !ok {
			return
		}
		if e.m.held.Load() {
			e.ch.evict(n, e.m)
		}
	}
}

// evict removes m and anything older from the channel's history.
func (ch *channel) evict(n *Node, m *message) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !m.held.Load() {
		return
	}
	k := 0
	for k < len(ch.hist) && ch.hist[k].seq <= m.seq {
		k++
	}
	if k == 0 {
		return
	}
	n.hist.evicted.Add(uint64(k))
	ch.dropLocked(n, k)
}
