package tls

import (
	"context"
	"crypto/rand"
	cryptotls "crypto/tls"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Session ticket keys shared through Redis (tls.storage: redis). A client
// that resumes a TLS session presents a ticket encrypted with a key of
// the node that issued it; with keys shared, any node can resume it and
// the client skips the full handshake after the load balancer moved it.
const (
	// TicketRotation is how often a new ticket key is made. crypto/tls
	// rotates its own keys every 24 hours; sharing them makes each key
	// worth more to an attacker, so they live half as long.
	TicketRotation = 12 * time.Hour
	// ticketKeep is how many keys are kept, the newest first: tickets
	// issued up to two rotations ago still resume.
	ticketKeep = 3
	// ticketRefresh is how often a node reads the keys from Redis, so a
	// rotation made by another node reaches it within this.
	ticketRefresh = time.Minute
)

// ticketScript returns the shared ticket keys, newest first, after adding a
// new one (ARGV[2]) when the list is empty or the newest is older than the
// rotation (ARGV[1] ms). The clock is Redis's, so that nodes with skewed
// clocks agree; the script is atomic, so two nodes never both rotate.
var ticketScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('LLEN', KEYS[1]) == 0 or now - last >= tonumber(ARGV[1]) then
  redis.call('LPUSH', KEYS[1], ARGV[2])
  redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[3]) - 1)
  redis.call('SET', KEYS[2], now)
end
return redis.call('LRANGE', KEYS[1], 0, -1)
`)

// ticketKeys reads (and rotates) the shared keys in Redis.
type ticketKeys struct {
	rdb      redis.Cmdable
	key      string // <redis.prefix>tls:ticket_keys, a list, newest first
	stamp    string // <redis.prefix>tls:ticket_keys:rotated, ms of the last rotation
	rotation time.Duration
}

func newTicketKeys(rdb redis.Cmdable, prefix string, rotation time.Duration) *ticketKeys {
	if rotation <= 0 {
		rotation = TicketRotation
	}
	return &ticketKeys{rdb: rdb, key: prefix + "tls:ticket_keys", stamp: prefix + "tls:ticket_keys:rotated", rotation: rotation}
}

// fetch returns the current keys, newest first, rotating them when due.
func (tk *ticketKeys) fetch(ctx context.Context) ([][32]byte, error) {
	var fresh [32]byte
	rand.Read(fresh[:])
	vals, err := ticketScript.Run(ctx, tk.rdb, []string{tk.key, tk.stamp}, tk.rotation.Milliseconds(), fresh[:], ticketKeep).StringSlice()
	if err != nil {
		return nil, err
	}
	var keys [][32]byte
	for _, v := range vals {
		if len(v) == 32 { // anything else was not written by edge
			keys = append(keys, [32]byte([]byte(v)))
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no valid session ticket key in redis")
	}
	return keys, nil
}

// syncTickets keeps the session ticket keys of cfg equal to those in Redis
// until ctx is done: every refresh on success, retrying with backoff from
// one second to five on failure. Until the first success crypto/tls's own keys
// stay in use. health records the outcome for Ready.
func (m *Manager) syncTickets(ctx context.Context, tk *ticketKeys, cfg *cryptotls.Config, refresh time.Duration) {
	backoff := time.Second
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		keys, err := tk.fetch(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		m.setStorageHealth(err)
		if err != nil {
			t.Reset(backoff)
			backoff = min(2*backoff, 5*time.Second) // also how soon a returning Redis is noticed
			continue
		}
		backoff = time.Second
		cfg.SetSessionTicketKeys(keys)
		t.Reset(refresh)
	}
}
