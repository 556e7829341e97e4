package hub

import (
	"context"
	"sync"
)

// memoryBroker is the broker of a single node: Publish delivers
// synchronously, on the caller's goroutine, to every current subscriber.
// Messages published while nothing is subscribed are dropped. Several
// subscribers (nodes in one process, tests) each get every message once.
// The zero value is ready to use; it is safe for concurrent use.
type memoryBroker struct {
	mu   sync.RWMutex
	subs map[*memorySub]struct{} // guarded by mu
}

var _ Broker = (*memoryBroker)(nil)

type memorySub struct {
	r Receiver
	// mu serialises deliveries to r: a Receiver is never called
	// concurrently, as the Broker contract says.
	mu sync.Mutex
}

// newMemoryBroker returns an empty memoryBroker.
func newMemoryBroker() *memoryBroker { return &memoryBroker{} }

// Publish delivers payload to every subscriber before it returns. seq is
// the first non-zero sequence number a subscriber assigned.
func (b *memoryBroker) Publish(ctx context.Context, channel string, payload []byte) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	var seq uint64
	for s := range b.subs {
		s.mu.Lock()
		n := s.r.Deliver(channel, payload)
		s.mu.Unlock()
		if seq == 0 {
			seq = n
		}
	}
	return seq, nil
}

// Subscribe registers r, reports the subscription up, and blocks until ctx
// is done.
func (b *memoryBroker) Subscribe(ctx context.Context, r Receiver) error {
	s := &memorySub{r: r}
	b.mu.Lock()
	if b.subs == nil {
		b.subs = map[*memorySub]struct{}{}
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	r.BrokerState(true)
	<-ctx.Done()
	b.mu.Lock()
	delete(b.subs, s)
	b.mu.Unlock()
	r.BrokerState(false)
	return ctx.Err()
}
