// Package redisconn builds edge's Redis client from config.Redis: the ONE
// place that turns redis.url or redis.sentinel into a go-redis client, for
// the hub (fan-out, history, presence), the CLI (edge publish, hub orders)
// and anything else that shares edge's Redis.
package redisconn

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/config"
)

// New returns a client for cfg: a plain client for redis.url, or, with
// redis.sentinel, go-redis's failover client, which asks the sentinels for
// the current master and reconnects to the new one after a failover. It
// connects nothing yet. Context deadlines are honoured on every command.
func New(cfg *config.Redis) (*redis.Client, error) {
	if cfg == nil {
		return nil, fmt.Errorf("redis: not configured")
	}
	if s := cfg.Sentinel; s != nil {
		pw, err := readPassword(s.PasswordFile)
		if err != nil {
			return nil, err
		}
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:            s.Master,
			SentinelAddrs:         s.Addrs,
			Password:              pw,
			SentinelPassword:      pw,
			ContextTimeoutEnabled: true,
		}), nil
	}
	o, err := Options(cfg.URL)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(o), nil
}

// Options parses a redis://, rediss:// or unix:// URL into client options
// with context deadlines honoured.
func Options(rawURL string) (*redis.Options, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	o.ContextTimeoutEnabled = true
	return o, nil
}

// readPassword returns the first line of file, or "" without a file.
func readPassword(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("redis.sentinel.password_file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimRight(line, "\r"), nil
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
		return fmt.Errorf("redis at %s unreachable: %w", where(cfg), err)
	}
	return nil
}

// where names cfg's Redis for a message, without its password.
func where(cfg *config.Redis) string {
	if s := cfg.Sentinel; s != nil {
		return fmt.Sprintf("sentinel master %s (%s)", s.Master, strings.Join(s.Addrs, ", "))
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return "redis.url"
	}
	return u.Redacted()
}
