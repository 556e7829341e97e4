package hub

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// Broker carries published messages to every subscribed node. Delivery is at
// most once per subscriber and, per channel, in the order the broker
// received the messages. A message published while a subscriber's
// subscription is down is lost for that subscriber; the broker reports such
// windows through Receiver.BrokerState so that the hub can tell clients.
//
// Implementations are safe for concurrent use.
type Broker interface {
	// Publish hands payload to the broker for channel and returns once the
	// broker has accepted it. seq is the sequence number a subscriber
	// assigned when the broker delivers synchronously (memoryBroker), else 0.
	Publish(ctx context.Context, channel string, payload []byte) (seq uint64, err error)
	// Subscribe delivers every message of every channel to r until ctx is
	// done, re-establishing the subscription after failures, and returns
	// ctx.Err() then (or another error if it can never work).
	Subscribe(ctx context.Context, r Receiver) error
}

// Receiver is what a Broker delivers to. Its methods are called from the
// broker's goroutine, never concurrently for one subscription, and must not
// block.
type Receiver interface {
	// Deliver is called for each message, in broker order. It returns the
	// sequence number it assigned, or 0.
	Deliver(channel string, payload []byte) uint64
	// BrokerState reports the subscription: up=true once it is established
	// (again), up=false when it is lost. Calls alternate, starting with true.
	BrokerState(up bool)
}

// ErrClosed is returned by operations on a closed Node or broker.
var ErrClosed = errors.New("hub: closed")

// backoff is a jittered exponential delay: min, 2·min, … up to max, each
// drawn from [d/2, d].
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min << min(b.n, 30)
	if d <= 0 || d > b.max {
		d = b.max
	} else {
		b.n++
	}
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits for d or until ctx is done, reporting whether d elapsed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
