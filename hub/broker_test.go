package hub

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/config"
	"edge/internal/testpeer"
)

// recorder is a Receiver that records what it gets and checks that it is
// never called concurrently.
type recorder struct {
	busy atomic.Bool
	t    testing.TB

	mu     sync.Mutex
	msgs   map[string][]string
	states []bool
}

func newRecorder(t testing.TB) *recorder { return &recorder{t: t, msgs: map[string][]string{}} }

func (r *recorder) Deliver(channel string, payload []byte) uint64 {
	if !r.busy.CompareAndSwap(false, true) {
		r.t.Errorf("Deliver called concurrently")
	}
	defer r.busy.Store(false)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs[channel] = append(r.msgs[channel], string(payload))
	return uint64(len(r.msgs[channel]))
}

func (r *recorder) BrokerState(up bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.states = append(r.states, up)
}

func (r *recorder) up() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.states) > 0 && r.states[len(r.states)-1]
}

func (r *recorder) got(channel string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs[channel]...)
}

// TestBrokerContract runs the same checks against both brokers: every
// subscriber gets every message exactly once, in order per channel;
// states alternate starting with up; Subscribe ends with ctx.
func TestBrokerContract(t *testing.T) {
	brokers := map[string]func(t *testing.T) (Broker, Broker){
		"memory": func(t *testing.T) (Broker, Broker) {
			b := newMemoryBroker()
			return b, b
		},
		"redis": func(t *testing.T) (Broker, Broker) {
			s := testpeer.StartRedis(t)
			mk := func(id string) Broker {
				rdb := redis.NewClient(s.Options())
				t.Cleanup(func() { rdb.Close() })
				return newRedisBroker(NodeOptions{NodeID: id, CanaryInterval: 200 * time.Millisecond}.withDefaults().redisBroker(rdb, "t:"))
			}
			return mk("a"), mk("b")
		},
	}
	for name, mk := range brokers {
		t.Run(name, func(t *testing.T) {
			b1, b2 := mk(t)
			r1, r2 := newRecorder(t), newRecorder(t)
			ctx, cancel := context.WithCancel(context.Background())
			errs := make(chan error, 2)
			go func() { errs <- b1.Subscribe(ctx, r1) }()
			go func() { errs <- b2.Subscribe(ctx, r2) }()
			waitFor(t, 10*time.Second, "both subscriptions up", func() bool { return r1.up() && r2.up() })

			const n = 100
			var wg sync.WaitGroup
			for _, ch := range []string{"alpha", "beta"} {
				wg.Go(func() {
					for i := range n {
						pub := b1
						if i%2 == 1 {
							pub = b2 // publishes from either side reach both
						}
						if _, err := pub.Publish(context.Background(), ch, []byte(strconv.Itoa(i))); err != nil {
							t.Errorf("Publish: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			for _, r := range []*recorder{r1, r2} {
				for _, ch := range []string{"alpha", "beta"} {
					waitFor(t, 10*time.Second, fmt.Sprintf("%d messages on %s", n, ch), func() bool { return len(r.got(ch)) >= n })
				}
			}
			// A last message proves nothing more is in flight.
			b1.Publish(context.Background(), "end", []byte("x"))
			waitFor(t, 10*time.Second, "end marker", func() bool { return len(r1.got("end")) == 1 && len(r2.got("end")) == 1 })
			for ri, r := range []*recorder{r1, r2} {
				for _, ch := range []string{"alpha", "beta"} {
					got := r.got(ch)
					if len(got) != n {
						t.Errorf("subscriber %d got %d messages on %s, want exactly %d", ri+1, len(got), ch, n)
						continue
					}
					for i, p := range got {
						if p != strconv.Itoa(i) {
							t.Errorf("subscriber %d, %s[%d] = %s: out of order", ri+1, ch, i, p)
							break
						}
					}
				}
			}

			cancel()
			for range 2 {
				select {
				case err := <-errs:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("Subscribe returned %v, want context.Canceled", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("Subscribe did not return after cancel")
				}
			}
			for ri, r := range []*recorder{r1, r2} {
				r.mu.Lock()
				for i, up := range r.states {
					if up != (i%2 == 0) {
						t.Errorf("subscriber %d states %v do not alternate starting with up", ri+1, r.states)
						break
					}
				}
				r.mu.Unlock()
			}
		})
	}
}

// TestRedisBrokerExternalPublish checks that a plain PUBLISH from any Redis
// client reaches subscribers, and that invalid channel names and other
// prefixes are ignored.
func TestRedisBrokerExternalPublish(t *testing.T) {
	s := testpeer.StartRedis(t)
	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	b := newRedisBroker(NodeOptions{CanaryInterval: 200 * time.Millisecond}.withDefaults().redisBroker(rdb, "edge:"))
	r := newRecorder(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Subscribe(ctx, r)
	waitFor(t, 10*time.Second, "subscription up", r.up)

	rdb.Publish(ctx, "edge:bad name", "x")
	rdb.Publish(ctx, "other:orders", "x")
	rdb.Publish(ctx, "edge:orders", `{"id":1}`)
	waitFor(t, 10*time.Second, "message", func() bool { return len(r.got("orders")) == 1 })
	if got := r.got("orders")[0]; got != `{"id":1}` {
		t.Errorf("payload = %s", got)
	}
	r.mu.Lock()
	if len(r.msgs) != 1 {
		t.Errorf("delivered channels %v, want only orders", r.msgs)
	}
	r.mu.Unlock()
	if b.invalid.Load() != 1 {
		t.Errorf("invalid = %d, want 1", b.invalid.Load())
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 2 * time.Second}
	prevMax := time.Duration(0)
	for i := range 12 {
		want := min(b.min<<i, b.max)
		d := b.next()
		if d < want/2 || d > want {
			t.Errorf("attempt %d: delay %s outside [%s, %s]", i, d, want/2, want)
		}
		prevMax = max(prevMax, d)
	}
	if prevMax > 2*time.Second {
		t.Errorf("delay %s above max", prevMax)
	}
	b.reset()
	if d := b.next(); d > 100*time.Millisecond {
		t.Errorf("after reset: %s, want at most min", d)
	}
}

// TestSleepHonoursContext runs in a synctest bubble: the fake clock makes
// the timing exact without waiting.
func TestSleepHonoursContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !sleep(context.Background(), 3*time.Second) {
			t.Error("sleep without cancel reported false")
		}
		if got := time.Since(start); got != 3*time.Second {
			t.Errorf("slept %s, want 3s", got)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start = time.Now()
		if sleep(ctx, time.Hour) {
			t.Error("sleep reported true after ctx ended")
		}
		if got := time.Since(start); got != time.Second {
			t.Errorf("cancelled sleep took %s, want 1s", got)
		}
	})
}

// TestNodeOptionsDefaultsOnce checks that a node's options are defaulted
// in one place and that its Redis broker takes them as they are (the
// broker used to apply the reconnect and canary defaults again, so the
// node's own options said 0).
func TestNodeOptionsDefaultsOnce(t *testing.T) {
	n, err := NewNode(NodeOptions{Redis: &config.Redis{URL: "redis://127.0.0.1:1/0", Prefix: "p:"}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.rdb.Close()
	o := n.opts
	if o.NodeID == "" || o.CanaryInterval != 2*time.Second || o.PresenceTTL != 30*time.Second ||
		o.ReconnectMin != 100*time.Millisecond || o.ReconnectMax != 5*time.Second || o.SweepInterval != 30*time.Second {
		t.Errorf("node options %+v: want every default set", o)
	}
	b := n.redis.opts
	if b.NodeID != o.NodeID || b.CanaryInterval != o.CanaryInterval || b.ReconnectMin != o.ReconnectMin ||
		b.ReconnectMax != o.ReconnectMax || b.Prefix != "p:" || b.Log == nil {
		t.Errorf("redis broker options %+v, want the node's %+v", b, o)
	}
}
