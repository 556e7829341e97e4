package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/config"
)

// redisBrokerOptions configure a redisBroker. Every field is required:
// NodeOptions.redisBroker fills them from the node's defaulted options.
type redisBrokerOptions struct {
	// Client is the Redis client. The broker does not close it.
	Client *redis.Client
	// Prefix is put before channel names in Redis: a hub channel "orders"
	// is the Redis channel "<Prefix>orders" (config's redis.prefix).
	Prefix string
	// NodeID names this subscriber's canary channel.
	NodeID string
	// CanaryInterval is how often a canary is published through Redis; a
	// canary that has not come back by the next tick marks the
	// subscription broken.
	CanaryInterval time.Duration
	// ReconnectMin and ReconnectMax bound the jittered exponential delay
	// between subscription attempts.
	ReconnectMin, ReconnectMax time.Duration
	// Log receives lifecycle messages.
	Log *slog.Logger
	// Limits returns the history the channels keep (size and ttl are
	// passed to edge_publish and are the library's defaults). nil: none.
	Limits func() histLimits
}

// redisBroker is a Broker over Redis pub/sub. Each subscriber holds one
// PSUBSCRIBE <prefix>* connection, so a PUBLISH <prefix><channel> from any
// program reaches every node once. When the connection fails, or when the
// subscriber's own canary stops coming back (a subscription that died
// silently, say after a failover that left the TCP connection up), the
// subscription is reported down, torn down and re-established with backoff.
// Safe for concurrent use.
type redisBroker struct {
	rdb    *redis.Client
	prefix string
	canary string // this node's canary channel, with prefix
	opts   redisBrokerOptions
	log    *slog.Logger

	// Counters, read by the Node's stats.
	reconnects     atomic.Uint64 // subscriptions re-established after a loss
	canaryFailures atomic.Uint64 // canaries that did not come back
	invalid        atomic.Uint64 // messages on channels that are not valid names
	// lastErr is why the last subscription attempt ended, for /readyz.
	lastErr atomic.Pointer[string]
}

var _ Broker = (*redisBroker)(nil)

// canaryInfix marks canary channels. "!" is not allowed in channel names,
// so no client can subscribe to a canary.
const canaryInfix = "!canary:"

// newRedisBroker returns a broker over opts.Client. It starts nothing.
func newRedisBroker(opts redisBrokerOptions) *redisBroker {
	return &redisBroker{
		rdb:    opts.Client,
		prefix: opts.Prefix,
		canary: opts.Prefix + canaryInfix + opts.NodeID,
		opts:   opts,
		log:    opts.Log,
	}
}

// seqReceiver is a Receiver that takes messages numbered by Redis (the
// Node; tests' recorders do not need to).
type seqReceiver interface {
	// DeliverSeq is Deliver for a message of the cluster-wide history:
	// Redis assigned seq in epoch.
	DeliverSeq(channel string, seq uint64, epoch string, payload []byte)
	// SetEpoch reports the epoch when a subscription starts, before
	// BrokerState(true).
	SetEpoch(epoch string)
}

func (b *redisBroker) limits() histLimits {
	if b.opts.Limits == nil {
		return histLimits{}
	}
	return b.opts.Limits()
}

// Publish appends payload to the channel's history in Redis and publishes
// it, numbered, in one step (edge_publish, history_redis.go), and returns
// the seq Redis assigned. Control orders are published plainly.
func (b *redisBroker) Publish(ctx context.Context, channel string, payload []byte) (uint64, error) {
	if channel == controlChannel {
		if err := b.rdb.Publish(ctx, b.prefix+channel, payload).Err(); err != nil {
			return 0, fmt.Errorf("redis publish %q: %w", channel, err)
		}
		return 0, nil
	}
	lim := b.limits()
	call := func() (uint64, error) {
		return b.rdb.FCall(ctx, "edge_publish", []string{channel}, payload, lim.size, lim.ttl.Milliseconds()).Uint64()
	}
	seq, err := call()
	if isNoFunction(err) {
		// Redis restarted empty (or failed over to a replica that never
		// had the library) since this node loaded it.
		if err = loadLibrary(ctx, b.rdb, b.prefix, lim); err == nil {
			seq, err = call()
		}
	}
	if err != nil {
		return 0, fmt.Errorf("redis publish %q: %w", channel, err)
	}
	return seq, nil
}

// Subscribe keeps one pattern subscription alive until ctx is done.
func (b *redisBroker) Subscribe(ctx context.Context, r Receiver) error {
	bo := backoff{min: b.opts.ReconnectMin, max: b.opts.ReconnectMax}
	everUp := false
	for {
		up, err := b.session(ctx, r, everUp)
		everUp = everUp || up
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, redis.ErrClosed) {
			return ErrClosed
		}
		if up {
			// The last attempt worked for a while: start over with short
			// delays.
			bo.reset()
		}
		d := bo.next()
		if err != nil {
			msg := err.Error()
			b.lastErr.Store(&msg)
		}
		b.log.Warn("redis subscription down, retrying", "err", err, "retry_in", d.Round(time.Millisecond))
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// session runs one subscription: PSUBSCRIBE, report up, deliver until the
// connection fails or a canary is missed, report down. up tells whether
// the subscription was established.
func (b *redisBroker) session(ctx context.Context, r Receiver, again bool) (up bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Connect and wait for the confirmation, bounded: a Redis that
	// accepts the connection but never answers, or sentinels that cannot
	// be reached (go-redis asks them with the dial's context), must not
	// hang us.
	sctx, scancel := context.WithTimeout(ctx, b.opts.CanaryInterval+time.Second)
	ps := b.rdb.PSubscribe(sctx, b.prefix+"*")
	defer ps.Close()
	confirm, err := ps.ReceiveTimeout(sctx, b.opts.CanaryInterval+time.Second)
	scancel()
	if err != nil {
		return false, fmt.Errorf("psubscribe: %w", err)
	}
	if _, ok := confirm.(*redis.Subscription); !ok {
		return false, fmt.Errorf("psubscribe: unexpected reply %T", confirm)
	}
	sr, numbered := r.(seqReceiver)
	if numbered {
		// The library and the epoch, now that nothing published from here
		// on can be missed: a Redis that restarted empty forgot both.
		lctx, lcancel := context.WithTimeout(ctx, b.opts.CanaryInterval+time.Second)
		err := loadLibrary(lctx, b.rdb, b.prefix, b.limits())
		var epoch string
		if err == nil {
			epoch, err = b.rdb.FCall(lctx, "edge_epoch", nil).Text()
		}
		lcancel()
		if err != nil {
			return false, fmt.Errorf("history setup: %w", err)
		}
		sr.SetEpoch(epoch)
	}
	if again {
		b.reconnects.Add(1)
	}
	b.log.Info("redis subscription up", "pattern", b.prefix+"*")
	r.BrokerState(true)
	defer r.BrokerState(false)

	var back atomic.Uint64 // highest canary number that came back
	failed := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := b.watchCanary(ctx, &back); err != nil {
			failed <- err
		}
		// Closing the PubSub ends the blocked Receive below, whether the
		// canary failed or ctx is done (Receive does not watch ctx).
		ps.Close()
	}()
	defer func() { cancel(); <-done }()

	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			select {
			case cerr := <-failed:
				return true, cerr
			default:
			}
			return true, fmt.Errorf("receive: %w", err)
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue // subscription confirmations, pongs
		}
		name, ok := strings.CutPrefix(m.Channel, b.prefix)
		if !ok {
			continue
		}
		if ch, ok := strings.CutPrefix(name, seqInfix); ok {
			seq, epoch, payload, ok := parseSeqMessage(m.Payload)
			if !ok || !config.ValidChannel(ch) {
				b.invalid.Add(1)
				continue
			}
			if numbered {
				sr.DeliverSeq(ch, seq, epoch, payload)
			} else {
				r.Deliver(ch, payload)
			}
			continue
		}
		if strings.HasPrefix(name, canaryInfix) {
			if m.Channel == b.canary {
				if n, err := strconv.ParseUint(m.Payload, 10, 64); err == nil && n > back.Load() {
					back.Store(n)
				}
			}
			continue
		}
		if !config.ValidChannel(name) && name != controlChannel {
			b.invalid.Add(1)
			continue
		}
		r.Deliver(name, []byte(m.Payload))
	}
}

// watchCanary publishes a numbered canary every interval and returns an
// error when the previous one has not come back by then, or when
// publishing fails. It returns nil when ctx is done.
func (b *redisBroker) watchCanary(ctx context.Context, back *atomic.Uint64) error {
	t := time.NewTicker(b.opts.CanaryInterval)
	defer t.Stop()
	var sent uint64
	for {
		pctx, cancel := context.WithTimeout(ctx, b.opts.CanaryInterval)
		err := b.rdb.Publish(pctx, b.canary, strconv.FormatUint(sent+1, 10)).Err()
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			b.canaryFailures.Add(1)
			return fmt.Errorf("canary publish: %w", err)
		}
		sent++
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if back.Load() < sent {
			b.canaryFailures.Add(1)
			return fmt.Errorf("canary %d did not come back within %s: subscription broken", sent, b.opts.CanaryInterval)
		}
	}
}
