package testpeer

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestRedisKillRestartPause(t *testing.T) {
	s := StartRedis(t)
	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	ctx := context.Background()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET on a fresh server: %v", err)
	}

	s.Kill()
	if err := rdb.Ping(ctx).Err(); err == nil {
		t.Fatal("PING succeeded on a killed server")
	}

	s.Restart()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}
	if n, _ := rdb.Exists(ctx, "k").Result(); n != 0 {
		t.Error("a restarted server kept data; it should start empty")
	}

	s.Pause()
	pctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err == nil {
		t.Fatal("PING answered by a paused server")
	}
	s.Resume()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Resume: %v", err)
	}
}

func TestRedisURL(t *testing.T) {
	s := StartRedis(t)
	o, err := redis.ParseURL(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(o)
	defer rdb.Close()
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("PING via URL %s: %v", s.URL(), err)
	}
}
