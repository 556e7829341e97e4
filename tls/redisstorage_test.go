package tls

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// redisStore returns a storage on a fresh redis-server with lock TTL ttl,
// and the raw client.
func redisStore(t *testing.T, srv *testpeer.RedisServer, ttl time.Duration) (*RedisStorage, *redis.Client) {
	t.Helper()
	rdb := redis.NewClient(srv.Options())
	t.Cleanup(func() { rdb.Close() })
	s := NewRedisStorage(rdb, "edge:certmagic:", ttl, slog.New(slog.DiscardHandler))
	t.Cleanup(func() { s.Close() })
	return s, rdb
}

// TestRedisStorageFiles checks the file semantics certmagic relies on:
// missing keys are fs.ErrNotExist, List walks directories as FileStorage
// does, Delete removes a directory with what is under it, Stat knows files
// from directories.
func TestRedisStorageFiles(t *testing.T) {
	t.Parallel()
	s, _ := redisStore(t, testpeer.StartRedis(t), 0)
	ctx := context.Background()
	if _, err := s.Load(ctx, "certificates/x/a.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing key = %v, want fs.ErrNotExist", err)
	}
	for _, k := range []string{"certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key", "certificates/ca/b.test/b.test.crt", "acme/ca/users/ops/ops.json", "certificatesx/other"} {
		if err := s.Store(ctx, k, []byte("v:"+k)); err != nil {
			t.Fatal(err)
		}
	}
	v, err := s.Load(ctx, "certificates/ca/a.test/a.test.key")
	if err != nil || string(v) != "v:certificates/ca/a.test/a.test.key" {
		t.Fatalf("Load = %q, %v", v, err)
	}
	got, _ := s.List(ctx, "certificates", false)
	if want := []string{"certificates/ca"}; !slices.Equal(got, want) {
		t.Errorf("List(certificates, false) = %v, want %v", got, want)
	}
	got, _ = s.List(ctx, "certificates", true)
	want := []string{"certificates/ca", "certificates/ca/a.test", "certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key", "certificates/ca/b.test", "certificates/ca/b.test/b.test.crt"}
	if !slices.Equal(got, want) {
		t.Errorf("List(certificates, true) = %v, want %v", got, want)
	}
	if !s.Exists(ctx, "certificates/ca/a.test") || !s.Exists(ctx, "acme/ca/users/ops/ops.json") || s.Exists(ctx, "certificates/c") {
		t.Error("Exists is wrong for a directory, a file or a missing key")
	}
	fi, err := s.Stat(ctx, "certificates/ca/a.test/a.test.crt")
	if err != nil || !fi.IsTerminal || fi.Size != int64(len("v:certificates/ca/a.test/a.test.crt")) || time.Since(fi.Modified) > time.Minute {
		t.Errorf("Stat(file) = %+v, %v", fi, err)
	}
	if fi, err := s.Stat(ctx, "certificates/ca"); err != nil || fi.IsTerminal {
		t.Errorf("Stat(dir) = %+v, %v", fi, err)
	}
	if _, err := s.Stat(ctx, "nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(missing) = %v, want fs.ErrNotExist", err)
	}
	if err := s.Delete(ctx, "certificates/ca/a.test"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/ca/a.test/a.test.key") || !s.Exists(ctx, "certificates/ca/b.test/b.test.crt") || !s.Exists(ctx, "certificatesx/other") {
		t.Error("Delete of a directory removed too little or too much")
	}
	if err := s.Delete(ctx, "never/there"); err != nil {
		t.Errorf("Delete of a missing key = %v, want nil", err)
	}
}

// TestRedisStorageLockContract: a lock excludes another owner, is extended
// while held (it outlives several TTLs), can be released only by its
// owner, and once released the waiting node gets it at once.
func TestRedisStorageLockContract(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	const ttl = 600 * time.Millisecond
	a, rdb := redisStore(t, srv, ttl)
	b, _ := redisStore(t, srv, ttl)
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.TryLock(ctx, "issue_cert_x"); ok || err != nil {
		t.Fatalf("second owner TryLock = %v, %v; want false", ok, err)
	}
	if err := b.Unlock(ctx, "issue_cert_x"); err == nil {
		t.Error("a node that does not hold the lock could unlock it")
	}
	// The compare-and-delete refuses a wrong token even when called
	// straight against Redis.
	if n, _ := unlockScript.Run(ctx, rdb, []string{"edge:certmagic:lock:issue_cert_x"}, "not-the-owner").Int(); n != 0 {
		t.Error("unlock script deleted a lock with the wrong token")
	}
	// Held for 4 TTLs: the keeper extends it, so b never gets it.
	deadline := time.Now().Add(4 * ttl)
	for time.Now().Before(deadline) {
		if ok, _ := b.TryLock(ctx, "issue_cert_x"); ok {
			t.Fatal("the lock expired while its holder was alive")
		}
		time.Sleep(ttl / 6)
	}
	got := make(chan error, 1)
	go func() {
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		got <- b.Lock(lctx, "issue_cert_x")
	}()
	start := time.Now()
	if err := a.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiting node did not get the released lock: %v", err)
	}
	if d := time.Since(start); d > ttl {
		t.Errorf("the waiting node got the lock %v after Unlock, want within a poll (%v)", d, lockPoll)
	}
	if err := a.Unlock(ctx, "issue_cert_x"); err == nil {
		t.Error("Unlock twice succeeded")
	}
	if err := b.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Error(err)
	}
}

// TestRedisStorageDeadHolderExpires: a lock whose owner died (set in
// Redis and never extended) blocks others only until its expiry; a lock
// that expired under its holder cannot be released by it any more.
func TestRedisStorageDeadHolderExpires(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	const ttl = 700 * time.Millisecond
	b, rdb := redisStore(t, srv, ttl)
	ctx := context.Background()
	if err := rdb.Set(ctx, "edge:certmagic:lock:issue_cert_dead", "dead-node", ttl).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := b.Lock(lctx, "issue_cert_dead"); err != nil {
		t.Fatalf("lock of a dead node never expired: %v", err)
	}
	if d := time.Since(start); d < ttl/2 || d > ttl+2*time.Second {
		t.Errorf("got the dead node's lock after %v, want about its TTL %v", d, ttl)
	}
	// A holder cut off from Redis longer than the TTL: simulated by
	// deleting its key and letting another owner take it.
	rdb.Del(ctx, "edge:certmagic:lock:issue_cert_dead")
	rdb.Set(ctx, "edge:certmagic:lock:issue_cert_dead", "other-node", time.Minute)
	if err := b.Unlock(ctx, "issue_cert_dead"); err == nil {
		t.Error("Unlock of a lock now owned by another node succeeded")
	}
	if v, _ := rdb.Get(ctx, "edge:certmagic:lock:issue_cert_dead").Result(); v != "other-node" {
		t.Errorf("the other node's lock was removed (now %q)", v)
	}
}

// TestRedisStorageDown: with Redis unreachable, Lock fails at once (so
// certmagic retries later) rather than waiting forever.
func TestRedisStorageDown(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	s, _ := redisStore(t, srv, time.Second)
	srv.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Lock(ctx, "x"); err == nil || ctx.Err() != nil {
		t.Errorf("Lock with redis down = %v (ctx %v), want a prompt error", err, ctx.Err())
	}
	if _, err := s.Load(ctx, "x"); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load with redis down = %v, want an error that is not fs.ErrNotExist", err)
	}
}
