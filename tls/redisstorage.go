package tls

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
)

// DefaultLockTTL is how long a certmagic lock in Redis outlives its holder:
// the holder extends it every third of this while it works, so a node that
// crashed (or lost Redis) blocks the others for at most this long.
const DefaultLockTTL = 10 * time.Second

// lockPoll is how often a waiting Lock retries a lock held by another node.
const lockPoll = 250 * time.Millisecond

// RedisStorage is a certmagic.Storage in Redis, shared by every edge node
// on the same Redis and prefix: certificates, keys, ACME accounts, the
// local CA and challenge tokens (so any node answers a challenge another
// node started). Files are the fields of one hash, <prefix>data, with
// their modification times in <prefix>mtime, so that List is one HKEYS and
// a Store is one transaction; a node keeps tens of certificates, not
// millions. Locks are <prefix>lock:<name> strings holding a random owner
// token with an expiry.
type RedisStorage struct {
	// Static after NewRedisStorage.
	rdb    redis.Cmdable
	prefix string
	ttl    time.Duration
	log    *slog.Logger

	mu    sync.Mutex
	locks map[string]*heldLock // guarded by mu: locks this process holds
}

// heldLock is a lock this process holds and keeps extending.
type heldLock struct {
	token string
	stop  chan struct{} // closed by Unlock or Close
	done  chan struct{} // closed when the keeper goroutine returns
}

var (
	_ certmagic.Storage          = (*RedisStorage)(nil)
	_ certmagic.TryLocker        = (*RedisStorage)(nil)
	_ certmagic.LockLeaseRenewer = (*RedisStorage)(nil)
)

// NewRedisStorage returns a storage in rdb under prefix (such as
// "edge:certmagic:"). ttl 0 means DefaultLockTTL. It starts no goroutine
// until a lock is taken; Close stops them.
func NewRedisStorage(rdb redis.Cmdable, prefix string, ttl time.Duration, log *slog.Logger) *RedisStorage {
	if ttl <= 0 {
		ttl = DefaultLockTTL
	}
	return &RedisStorage{rdb: rdb, prefix: prefix, ttl: ttl, log: log, locks: map[string]*heldLock{}}
}

func (s *RedisStorage) dataKey() string            { return s.prefix + "data" }
func (s *RedisStorage) mtimeKey() string           { return s.prefix + "mtime" }
func (s *RedisStorage) lockKey(name string) string { return s.prefix + "lock:" + name }

// String names the storage in logs.
func (s *RedisStorage) String() string { return "redis:" + s.prefix }

// Store writes value and its modification time in one transaction.
func (s *RedisStorage) Store(ctx context.Context, key string, value []byte) error {
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.dataKey(), key, value)
		p.HSet(ctx, s.mtimeKey(), key, now)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis storage: store %s: %w", key, err)
	}
	return nil
}

// Load returns the value of key, or an error matching fs.ErrNotExist.
func (s *RedisStorage) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.rdb.HGet(ctx, s.dataKey(), key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("redis storage: %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("redis storage: load %s: %w", key, err)
	}
	return v, nil
}

// deleteScript deletes a file and every file under it as a directory.
var deleteScript = redis.NewScript(`
local n = 0
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  if f == ARGV[1] or string.sub(f, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '/' then
    redis.call('HDEL', KEYS[1], f)
    redis.call('HDEL', KEYS[2], f)
    n = n + 1
  end
end
return n
`)

// Delete removes key and, as certmagic asks, everything under it.
func (s *RedisStorage) Delete(ctx context.Context, key string) error {
	if err := deleteScript.Run(ctx, s.rdb, []string{s.dataKey(), s.mtimeKey()}, key).Err(); err != nil {
		return fmt.Errorf("redis storage: delete %s: %w", key, err)
	}
	return nil
}

// Exists reports whether key is a file or a directory holding files.
func (s *RedisStorage) Exists(ctx context.Context, key string) bool {
	if ok, err := s.rdb.HExists(ctx, s.dataKey(), key).Result(); err == nil && ok {
		return true
	}
	names, err := s.List(ctx, key, false)
	return err == nil && len(names) > 0
}

// List returns the files and directories right under dir, or everything
// under it when recursive, as certmagic's FileStorage does. An empty or
// missing directory gives an error matching fs.ErrNotExist.
func (s *RedisStorage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	all, err := s.rdb.HKeys(ctx, s.dataKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis storage: list %s: %w", dir, err)
	}
	base := strings.Trim(dir, "/")
	if base != "" {
		base += "/"
	}
	seen := map[string]bool{}
	for _, f := range all {
		rest, ok := strings.CutPrefix(f, base)
		if !ok || rest == "" {
			continue
		}
		parts := strings.Split(rest, "/")
		n := len(parts)
		if !recursive {
			n = 1
		}
		for i := 1; i <= n; i++ {
			seen[base+strings.Join(parts[:i], "/")] = true
		}
	}
	if len(seen) == 0 {
		return nil, fmt.Errorf("redis storage: %s: %w", dir, fs.ErrNotExist)
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// Stat describes a file (size, modification time) or a directory.
func (s *RedisStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	var size *redis.IntCmd
	var mtime *redis.StringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		size = p.HStrLen(ctx, s.dataKey(), key)
		mtime = p.HGet(ctx, s.mtimeKey(), key)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return certmagic.KeyInfo{}, fmt.Errorf("redis storage: stat %s: %w", key, err)
	}
	if ms, err := mtime.Int64(); err == nil {
		return certmagic.KeyInfo{Key: key, Modified: time.UnixMilli(ms), Size: size.Val(), IsTerminal: true}, nil
	}
	if _, err := s.List(ctx, key, false); err != nil {
		return certmagic.KeyInfo{}, err
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// Lock takes the lock name, waiting while another owner holds it; a lock
// whose owner stopped extending it (crashed, partitioned) expires after
// the TTL and is then taken. Redis errors are returned at once, so that
// certmagic retries the job later instead of waiting here.
func (s *RedisStorage) Lock(ctx context.Context, name string) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis storage: lock %s: %w", name, ctx.Err())
		case <-t.C:
		}
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		t.Reset(lockPoll)
	}
}

// TryLock takes the lock name if nobody holds it.
func (s *RedisStorage) TryLock(ctx context.Context, name string) (bool, error) {
	token := randomToken()
	ok, err := s.rdb.SetNX(ctx, s.lockKey(name), token, s.ttl).Result()
	if err != nil {
		return false, fmt.Errorf("redis storage: lock %s: %w", name, err)
	}
	if !ok {
		return false, nil
	}
	h := &heldLock{token: token, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	s.locks[name] = h
	s.mu.Unlock()
	go s.keep(name, h)
	return true, nil
}

// keep extends a held lock every third of the TTL until it is released,
// so that a long ACME order never loses it while the holder lives.
func (s *RedisStorage) keep(name string, h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.ttl/3)
		ok, err := extendScript.Run(ctx, s.rdb, []string{s.lockKey(name)}, h.token, s.ttl.Milliseconds()).Int()
		cancel()
		switch {
		case err != nil:
			s.log.Warn("extending a certificate storage lock failed", "lock", name, "err", err)
		case ok == 0:
			// It expired (Redis unreachable for longer than the TTL) and
			// maybe another node holds it now: certmagic re-checks
			// storage after its work, and ACME orders are idempotent.
			s.log.Warn("certificate storage lock expired while held", "lock", name)
			return
		}
	}
}

// extendScript extends a lock only for its owner.
var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// unlockScript deletes a lock only for its owner (compare-and-delete), so
// that a node whose lock expired cannot release the next holder's.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// Unlock releases a lock this process holds.
func (s *RedisStorage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.locks[name]
	delete(s.locks, name)
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("redis storage: unlock %s: not held by this process", name)
	}
	close(h.stop)
	<-h.done
	n, err := unlockScript.Run(ctx, s.rdb, []string{s.lockKey(name)}, h.token).Int()
	if err != nil {
		return fmt.Errorf("redis storage: unlock %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("redis storage: unlock %s: the lock had expired", name)
	}
	return nil
}

// RenewLockLease extends a lock this process holds to d from now.
func (s *RedisStorage) RenewLockLease(ctx context.Context, name string, d time.Duration) error {
	s.mu.Lock()
	h := s.locks[name]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("redis storage: renew lock %s: not held by this process", name)
	}
	n, err := extendScript.Run(ctx, s.rdb, []string{s.lockKey(name)}, h.token, d.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("redis storage: renew lock %s: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("redis storage: renew lock %s: the lock had expired", name)
	}
	return nil
}

// Close stops extending the locks still held and releases them. It is
// idempotent.
func (s *RedisStorage) Close() error {
	s.mu.Lock()
	held := s.locks
	s.locks = map[string]*heldLock{}
	s.mu.Unlock()
	for name, h := range held {
		close(h.stop)
		<-h.done
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		unlockScript.Run(ctx, s.rdb, []string{s.lockKey(name)}, h.token) // best effort: it expires anyway
		cancel()
	}
	return nil
}

func randomToken() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
