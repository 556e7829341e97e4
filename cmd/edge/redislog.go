package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// redisLogger sends go-redis's own messages (failed dials while Redis is
// down, for instance) to edge's log at Debug: the hub already reports the
// broker state at Warn and in /readyz, once per outage rather than per dial.
type redisLogger struct{ log *slog.Logger }

func (l redisLogger) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "redis")
}

// setRedisLogger routes go-redis's package-global logger to log.
func setRedisLogger(log *slog.Logger) { redis.SetLogger(redisLogger{log}) }
