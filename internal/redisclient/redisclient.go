// Package redisclient builds the one go-redis client of a redis section,
// so that every part of edge that talks to Redis (the tls storage, the
// session ticket keys, the CLI checks) connects the same way: one place to
// add Sentinel or TLS options.
package redisclient

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/config"
)

// New returns a client for cfg, a validated redis section. It does not
// connect: go-redis dials on first use and redials after failures, so a
// Redis that is down at start is not an error here.
func New(cfg *config.Redis) (*redis.Client, error) {
	o, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	// Callers bound every call with a context; honour its deadline rather
	// than go-redis's fixed 3 s read timeout.
	o.ContextTimeoutEnabled = true
	return redis.NewClient(o), nil
}

// Check connects to cfg's Redis and PINGs it within timeout, for
// `edge validate`.
func Check(cfg *config.Redis, timeout time.Duration) error {
	rdb, err := New(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis at %s unreachable: %w", redactURL(cfg.URL), err)
	}
	return nil
}

// redactURL hides a password in a Redis URL.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "redis.url"
	}
	return u.Redacted()
}
