package hub

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"edge/config"
	"edge/internal/redisconn"
	"edge/internal/wsframe"
)

// NodeOptions configure a Node. Only Redis, Log, Registerer and NodeID are
// meant for production wiring; the rest exist for tests and tuning.
type NodeOptions struct {
	// Redis, when set, makes Redis the broker (fan-out across nodes,
	// presence across nodes). nil: an in-memory broker, one node.
	Redis *config.Redis
	// Log receives the hub's messages. nil: discard.
	Log *slog.Logger
	// Registerer receives the hub's metrics (edge_hub_*). nil: no metrics.
	Registerer prometheus.Registerer
	// NodeID names this node in Redis (canary, presence). Default
	// hostname-pid-random.
	NodeID string

	// Broker replaces the broker chosen from Redis (tests, embedding).
	// Presence across nodes needs Redis.
	Broker Broker
	// CanaryInterval is how often the Redis canary is published. Default 2s.
	CanaryInterval time.Duration
	// PresenceTTL is the lifetime of this node's presence hash in Redis;
	// it is refreshed every third of it, so a crashed node's counts vanish
	// within PresenceTTL. Default 30s.
	PresenceTTL time.Duration
	// ReconnectMin and ReconnectMax bound the backoff between Redis
	// subscription attempts. Defaults 100ms and 5s.
	ReconnectMin, ReconnectMax time.Duration
	// SweepInterval is how often idle channel state is dropped. Default 30s.
	SweepInterval time.Duration
}

// Node is the hub of one edge process: it owns the broker (memory or
// Redis), per-channel history, presence, the Redis canary, and every hub
// route's clients. Hub routes share one channel namespace.
//
// NewNode starts nothing; Run runs the broker subscription and the
// periodic work until its context is done; Close disconnects every client.
// A Node is safe for concurrent use.
type Node struct {
	log *slog.Logger
	id  string
	// epoch names the sequence numbers' lifetime: random per NewNode
	// without Redis (clients learn that sequences restarted), Redis'
	// epoch with Redis (history_redis.go). Never nil.
	epoch  atomic.Pointer[string]
	broker Broker
	redis  *redisBroker  // nil without Redis
	rdb    *redis.Client // nil without Redis; owned, closed by Close
	// authTransport carries the requests of every request-mode auth route,
	// whatever the reloads: one pool of connections to the auth backends,
	// closed by Close. Static after construction.
	authTransport *http.Transport
	prefix        string
	opts          NodeOptions

	// seq numbers messages of every channel (see channel.go).
	seq atomic.Uint64
	// connSeq numbers connections (client.id).
	connSeq atomic.Uint64
	// hist bounds the bytes of every channel's history together.
	hist nodeHistory

	mu       sync.RWMutex
	channels map[string]*channel // guarded by mu
	routes   map[string]*route   // by path; guarded by mu
	gen      uint64              // reload generation, bumped by Retire; guarded by mu
	closed   bool                // guarded by mu
	keep     histLimits          // history retention: the max over routes; guarded by mu

	// wg counts client reader and writer goroutines.
	wg sync.WaitGroup

	// redisEpoch is set once the epoch came from Redis.
	redisEpoch atomic.Bool

	// Broker subscription state.
	up        atomic.Bool
	everUp    atomic.Bool
	downSince atomic.Int64 // unix nanoseconds; 0 before the first subscription

	// skipPresenceCleanup leaves the presence hash behind on Close, as a
	// crashed node would (tests).
	skipPresenceCleanup bool

	closeOnce sync.Once
	stats     stats
}

// stats are the counters behind /hub/stats and the metrics.
type stats struct {
	conns      atomic.Int64  // open connections
	accepted   atomic.Uint64 // connections upgraded
	refused    atomic.Uint64 // upgrades refused (any status)
	refusedBy  [numRefuseReasons]atomic.Uint64
	published  atomic.Uint64 // messages delivered by the broker to this node
	written    atomic.Uint64 // frames written to clients
	writes     atomic.Uint64 // write calls that carried them (coalescing: written/writes)
	direct     atomic.Uint64 // frames a flushing goroutine wrote without starting a writeLoop (flush.go)
	dropped    atomic.Uint64 // frames discarded (slow or dead clients)
	droppedBy  [numDropReasons]atomic.Uint64
	slow       atomic.Uint64 // clients closed because their queue was full
	gaps       atomic.Uint64 // gap notices sent
	brokerLost atomic.Uint64 // broker subscription losses
	duplicates atomic.Uint64 // messages already delivered (replay after an outage overlapping live ones)
	expired    atomic.Uint64 // connections closed because their token's exp passed
	// compressed counts messages compressed (once per message and kind of
	// frame, not per client: deflate.go); compressedSaved the bytes that
	// saved on each of them.
	compressed      atomic.Uint64
	compressedSaved atomic.Uint64
	inflated        atomic.Uint64 // compressed client messages inflated
}

// NewNode returns a Node. It checks opts and, with Redis, builds the
// client, but connects nothing and starts no goroutines.
func NewNode(opts NodeOptions) (*Node, error) {
	opts = opts.withDefaults()
	opts.Log = opts.Log.With("component", "hub")
	n := &Node{
		log:      opts.Log,
		id:       opts.NodeID,
		opts:     opts,
		channels: map[string]*channel{},
		routes:   map[string]*route{},

		authTransport: newAuthTransport(),
	}
	e := randomHex(8)
	n.epoch.Store(&e)
	switch {
	case opts.Broker != nil:
		n.broker = opts.Broker
	case opts.Redis != nil:
		rdb, err := redisconn.New(opts.Redis)
		if err != nil {
			return nil, err
		}
		n.rdb = rdb
		n.prefix = opts.Redis.Prefix
		bo := opts.redisBroker(n.rdb, opts.Redis.Prefix)
		bo.Limits = n.retention
		n.redis = newRedisBroker(bo)
		n.broker = n.redis
	default:
		n.broker = newMemoryBroker()
	}
	if opts.Registerer != nil {
		if err := n.registerMetrics(opts.Registerer); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// withDefaults returns o with every zero field that has a default set:
// the one place NodeOptions' defaults are written.
func (o NodeOptions) withDefaults() NodeOptions {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.NodeID == "" {
		host, _ := os.Hostname()
		o.NodeID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(3))
	}
	if o.CanaryInterval <= 0 {
		o.CanaryInterval = 2 * time.Second
	}
	if o.PresenceTTL <= 0 {
		o.PresenceTTL = 30 * time.Second
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = 100 * time.Millisecond
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = 5 * time.Second
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = 30 * time.Second
	}
	return o
}

// redisBroker returns the options of the Redis broker of a node with the
// defaulted options o.
func (o NodeOptions) redisBroker(rdb *redis.Client, prefix string) redisBrokerOptions {
	return redisBrokerOptions{
		Client: rdb, Prefix: prefix, NodeID: o.NodeID, Log: o.Log,
		CanaryInterval: o.CanaryInterval, ReconnectMin: o.ReconnectMin, ReconnectMax: o.ReconnectMax,
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ID returns the node's ID.
func (n *Node) ID() string { return n.id }

// Epoch returns the node's epoch: without Redis a random string fixed at
// NewNode; with Redis the cluster's, shared by every node and changed only
// when Redis lost the history. A client's since is only meaningful within
// one epoch.
func (n *Node) Epoch() string { return *n.epoch.Load() }

// Run subscribes to the broker (re-subscribing with backoff after
// failures), refreshes presence in Redis and drops idle channel state,
// until ctx is done. It returns nil then.
func (n *Node) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() {
		err := n.broker.Subscribe(ctx, receiver{n})
		if err != nil && ctx.Err() == nil {
			n.log.Error("hub broker stopped", "err", err)
		}
	})
	wg.Go(func() { n.sweepLoop(ctx) })
	if n.rdb != nil {
		wg.Go(func() { n.presenceLoop(ctx) })
	}
	wg.Wait()
	return nil
}

// receiver adapts the Node to the Broker's Receiver.
type receiver struct{ n *Node }

func (r receiver) Deliver(channel string, payload []byte) uint64 {
	return r.n.deliver(channel, payload)
}

func (r receiver) BrokerState(up bool) { r.n.brokerState(up) }

func (r receiver) DeliverSeq(channel string, seq uint64, epoch string, payload []byte) {
	r.n.deliverSeq(channel, seq, epoch, payload)
}

func (r receiver) SetEpoch(epoch string) { r.n.setEpoch(epoch) }

// deliverSeq fans out a message of the cluster-wide history.
func (n *Node) deliverSeq(name string, seq uint64, epoch string, payload []byte) {
	if epoch != n.Epoch() {
		n.setEpoch(epoch)
	}
	n.deliverAt(name, seq, payload)
}

// setEpoch adopts Redis' epoch. A change after the first means Redis lost
// the history (flushed, restarted empty, failed over to a replica without
// it): every channel's position and history go, and live subscribers get
// a gap (epoch).
func (n *Node) setEpoch(epoch string) {
	old := n.epoch.Swap(&epoch)
	if *old == epoch || !n.redisEpoch.Swap(true) {
		return
	}
	n.log.Warn("hub history epoch changed: Redis lost the history; gap reported to clients", "old", *old, "new", epoch)
	for _, ch := range n.channelList() {
		ch.mu.Lock()
		if !ch.dead {
			ch.lostLocked(n, 0, "epoch")
		}
		ch.mu.Unlock()
	}
}

// deliver fans a message out to this node's subscribers. It never waits on
// a client.
func (n *Node) deliver(name string, payload []byte) uint64 {
	if name == controlChannel {
		n.control(payload)
		return 0
	}
	return n.deliverAt(name, 0, payload)
}

// deliverAt delivers a message numbered seq by Redis, or 0 (see
// channel.publish).
func (n *Node) deliverAt(name string, seq uint64, payload []byte) uint64 {
	if !config.ValidChannel(name) {
		return 0
	}
	lim := n.retention()
	for {
		if seq, ok := n.channel(name).publish(n, seq, payload, lim, time.Now()); ok {
			n.stats.published.Add(1)
			n.hist.enforce(n, lim.maxBytes)
			return seq
		}
	}
}

func (n *Node) brokerState(up bool) {
	if !up {
		if n.up.Swap(false) {
			n.downSince.Store(time.Now().UnixNano())
			if n.isClosed() {
				return // shutting down: the subscription ends on purpose
			}
			n.stats.brokerLost.Add(1)
			n.log.Warn("hub broker subscription lost: messages may be missed until it is back")
		}
		return
	}
	if n.up.Swap(true) {
		return
	}
	if n.everUp.Swap(true) {
		if n.rdb != nil {
			// Back after an outage: what was published meanwhile is in
			// Redis' history, unless it was lost there too.
			n.catchUp()
			n.log.Info("hub broker subscription restored; missed messages replayed from Redis' history",
				"down_for", time.Since(time.Unix(0, n.downSince.Load())).Round(time.Millisecond))
			return
		}
		// Back after an outage: whatever was published meanwhile is lost.
		// Tell live clients, and make since from before now yield a gap.
		n.markLost()
		n.log.Info("hub broker subscription restored; gap reported to clients",
			"down_for", time.Since(time.Unix(0, n.downSince.Load())).Round(time.Millisecond))
	}
}

// markLost moves every channel past the outage.
func (n *Node) markLost() {
	// Burn a number first, so that channel state created from now on
	// starts after every since handed out before the outage.
	n.seq.Add(1)
	for _, ch := range n.channelList() {
		ch.markLost(n)
	}
}

// catchUp replays, on every channel this node holds, what Redis' history
// holds after the channel's position, in one pipelined round trip; a
// channel that cannot be replayed gets a gap.
func (n *Node) catchUp() {
	chs := n.channelList()
	lim := n.retention()
	ctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
	defer cancel()
	type query struct {
		ch    *channel
		since uint64
		cmd   *redis.Cmd
	}
	qs := make([]query, 0, len(chs))
	pipe := n.rdb.Pipeline()
	for _, ch := range chs {
		ch.mu.Lock()
		since, dead := ch.last, ch.dead
		ch.mu.Unlock()
		if !dead {
			qs = append(qs, query{ch, since, sinceCmd(ctx, pipe, ch.name, since, lim.size+1)})
		}
	}
	pipe.Exec(ctx) // errors are per command
	now := time.Now()
	for _, q := range qs {
		q.ch.catchUp(n, q.since, parseSince(q.cmd), lim, now)
	}
	n.hist.enforce(n, lim.maxBytes)
}

// errBrokerDown is a history fetch not made: the subscription is down.
var errBrokerDown = errors.New("hub: broker subscription down")

// prefetch asks Redis' history, before ch's lock is taken, for what req
// may need: the channel's position when this node knows none, and the
// messages after since when the node's own history does not cover it.
// nil without Redis or when nothing is needed.
func (n *Node) prefetch(ch *channel, req *subscribeRequest) *remoteHistory {
	if n.rdb == nil {
		return nil
	}
	req.tries++ // every attempt counts: subscribe gives up after maxFetches
	ch.mu.Lock()
	fresh := ch.last == 0 && len(ch.subs) == 0
	covered := ch.localCoversLocked(req.since)
	ch.mu.Unlock()
	wantHist := req.hasSince && !covered && (req.epoch == "" || req.epoch == n.Epoch())
	if !fresh && !wantHist {
		return nil
	}
	if !n.up.Load() {
		// Redis is out of reach or the subscription is being restored:
		// do not make the client wait for it.
		return &remoteHistory{err: errBrokerDown}
	}
	count := 0
	if wantHist {
		count = req.route.size + 1
	}
	return n.fetchHistory(ch.name, req.since, count)
}

// channel returns the state of name, creating it.
func (n *Node) channel(name string) *channel {
	n.mu.RLock()
	ch := n.channels[name]
	n.mu.RUnlock()
	if ch != nil {
		return ch
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch = n.channels[name]; ch == nil {
		ch = newChannel(name, n.seq.Load())
		n.channels[name] = ch
	}
	return ch
}

func (n *Node) channelList() []*channel {
	n.mu.RLock()
	defer n.mu.RUnlock()
	list := make([]*channel, 0, len(n.channels))
	for _, ch := range n.channels {
		list = append(list, ch)
	}
	return list
}

// retention returns how much history channels keep: the most any route
// asks for.
func (n *Node) retention() histLimits {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.keep
}

func (n *Node) updateRetentionLocked() {
	var k histLimits
	for _, rt := range n.routes {
		if cfg := rt.config(); cfg != nil {
			k.size = max(k.size, cfg.history.size)
			k.ttl = max(k.ttl, cfg.history.ttl)
			k.maxBytes = max(k.maxBytes, cfg.history.maxBytes)
		}
	}
	n.keep = k
}

// sweepLoop drops channel state that has no subscribers and no history.
func (n *Node) sweepLoop(ctx context.Context) {
	t := time.NewTicker(n.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			n.sweep(time.Now())
		}
	}
}

func (n *Node) sweep(now time.Time) {
	lim := n.retention()
	n.mu.Lock()
	defer n.mu.Unlock()
	for name, ch := range n.channels {
		ch.mu.Lock()
		ch.trimLocked(n, lim, now)
		if ch.idleLocked() {
			ch.dead = true
			delete(n.channels, name)
		}
		ch.mu.Unlock()
	}
}

// Route returns the handler of the hub route at path, creating it on the
// first call. Calling it again on reload with a new cfg updates the live
// route in place (origins, auth, limits) without dropping connected
// clients: the new configuration of an existing route takes effect at the
// next Retire, the reload's commit point, so that a reload failing after
// Route changes nothing; a new route's takes effect at once. Settings fixed
// at connect time (raw, presence subject, granted channels) keep applying
// to clients already connected. Several sites with the same hub path share
// one route: the last cfg wins and the default origins cover every site's
// hosts given since the last Retire.
//
// If cfg cannot be used (a key file became unreadable after validation),
// the error is logged and the previous configuration stays; a new route
// answers 503 until a good configuration arrives.
func (n *Node) Route(path string, cfg *config.Hub, siteHosts []string) http.Handler {
	n.mu.Lock()
	defer n.mu.Unlock()
	rt := n.routes[path]
	if rt == nil {
		rt = newRoute(n, path)
		n.routes[path] = rt
	}
	if rt.gen != n.gen || rt.hosts == nil {
		rt.hosts, rt.gen = map[string]bool{}, n.gen
	}
	for _, h := range siteHosts {
		rt.hosts[h] = true
	}
	if cfg == nil {
		n.log.Error("hub route without hub configuration", "route", path)
		return rt
	}
	hosts := make([]string, 0, len(rt.hosts))
	for h := range rt.hosts {
		hosts = append(hosts, h)
	}
	rc, err := n.compileRoute(cfg, hosts)
	if err != nil {
		n.log.Error("hub route configuration not applied", "route", path, "err", err)
		return rt
	}
	if rt.cfg.Load() == nil {
		rt.cfg.Store(rc)
		n.updateRetentionLocked()
	} else {
		rt.pending = rc
	}
	return rt
}

// Retire commits the configurations given to Route since the last Retire,
// and closes, with 1001 "route removed", the clients of hub routes whose
// path is not in keep, forgetting those routes. Call it once a reload has
// installed the new routes (and after the first configuration too).
func (n *Node) Retire(keep []string) {
	for _, rt := range n.endReload(keep, true) {
		cs := rt.snapshot()
		n.log.Info("hub route retired", "route", rt.path, "clients", len(cs))
		for _, c := range cs {
			c.closeWith(wsframe.CloseGoingAway, "route removed")
		}
	}
}

// Publish sends payload to channel through the broker: with Redis it is
// published into Redis and every node (this one included) delivers it once
// when it comes back; seq is then 0 (not known yet). In memory, delivery
// happens before Publish returns and seq is the message's sequence number.
// With the in-memory broker, nothing is delivered before Run has started.
func (n *Node) Publish(ctx context.Context, channel string, payload []byte) (uint64, error) {
	if !config.ValidChannel(channel) {
		return 0, fmt.Errorf("invalid channel name %q", channel)
	}
	if n.isClosed() {
		return 0, ErrClosed
	}
	return n.broker.Publish(ctx, channel, payload)
}

func (n *Node) isClosed() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.closed
}

// Healthy returns nil when the broker subscription is live: for Redis,
// subscribed and the canary coming back.
func (n *Node) Healthy() error {
	if n.up.Load() {
		return nil
	}
	why := ""
	if n.redis != nil {
		if e := n.redis.lastErr.Load(); e != nil {
			why = ": " + *e
		}
	}
	if since := n.downSince.Load(); since != 0 {
		return fmt.Errorf("hub: broker subscription down for %s%s", time.Since(time.Unix(0, since)).Round(time.Second), why)
	}
	return errors.New("hub: broker subscription not established yet" + why)
}

// Close shuts the hub down: every client gets close 1001 "going away" and
// its state is released. It waits for the clients' goroutines until ctx is
// done, then cuts the remaining connections and waits for them (which is
// quick: their sockets are closed). New connections are refused with 503.
// With Redis, this node's presence is removed and the Redis client closed.
// Close is idempotent; concurrent and later calls return once the first is
// done. It returns nil: when ctx ends first, the stragglers are cut (and
// logged), not left behind.
func (n *Node) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		routes := make([]*route, 0, len(n.routes))
		for _, rt := range n.routes {
			routes = append(routes, rt)
		}
		n.mu.Unlock()
		var all []*client
		for _, rt := range routes {
			all = append(all, rt.snapshot()...)
		}
		for _, c := range all {
			c.closeWith(wsframe.CloseGoingAway, "going away")
		}
		done := make(chan struct{})
		go func() { n.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			// Out of time: cut the connections; their goroutines end at once.
			n.log.Warn("hub shutdown: cutting clients that did not finish closing", "clients", n.stats.conns.Load())
			for _, c := range all {
				c.nc.Close()
			}
			<-done
		}
		if n.rdb != nil {
			// Without a live subscription Redis is most likely out of
			// reach: do not wait for it (the hash expires with its TTL).
			if !n.skipPresenceCleanup && n.up.Load() {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				n.rdb.Del(dctx, n.presenceKey(n.id))
				cancel()
			}
			n.rdb.Close()
		}
		n.authTransport.CloseIdleConnections()
		n.log.Info("hub closed", "clients", len(all))
	})
	// sync.Once makes concurrent callers wait until the first is done.
	return nil
}

// PublishRedis publishes straight into Redis (PUBLISH <prefix><channel>),
// for `edge publish` when Redis is configured.
func PublishRedis(ctx context.Context, cfg *config.Redis, channel string, payload []byte) error {
	if !config.ValidChannel(channel) {
		return fmt.Errorf("invalid channel name %q", channel)
	}
	rdb, err := redisconn.New(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	// Into the cluster-wide history, with the history limits the nodes
	// loaded as the library's defaults.
	err = rdb.FCall(ctx, "edge_publish", []string{channel}, payload).Err()
	if isNoFunction(err) {
		// No node has loaded the library into this Redis (none running,
		// or Redis restarted since): live delivery only.
		err = rdb.Publish(ctx, cfg.Prefix+channel, payload).Err()
	}
	if err != nil {
		return fmt.Errorf("redis publish %q: %w", channel, err)
	}
	return nil
}
