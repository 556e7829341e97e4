package tls

import (
	"context"
	"log/slog"
	"sort"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// newZapLogger returns a zap.Logger, the logger certmagic and acmez take,
// that writes every entry to h, so that certmagic's logs come out of
// edge's one slog pipeline with its level, format and "component" key.
// The zap logger name ("obtain", "maintenance", "handshake") becomes the
// "logger" attribute.
func newZapLogger(h slog.Handler) *zap.Logger {
	return zap.New(&slogCore{h: h}).Named("certmagic")
}

// slogCore is a zapcore.Core writing to a slog.Handler. It is immutable and
// safe for concurrent use, as slog handlers are. Fields given to With are
// kept as they are and converted only when an entry is written: certmagic
// calls With on every handshake, mostly to log nothing.
type slogCore struct {
	h      slog.Handler
	fields []zapcore.Field
}

var _ zapcore.Core = (*slogCore)(nil)

func (c *slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	if len(fs) == 0 {
		return c
	}
	return &slogCore{h: c.h, fields: append(c.fields[:len(c.fields):len(c.fields)], fs...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	r := slog.NewRecord(e.Time, slogLevel(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(zapAttrs(append(c.fields[:len(c.fields):len(c.fields)], fs...))...)
	return c.h.Handle(context.Background(), r)
}

func (c *slogCore) Sync() error { return nil }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// zapAttrs converts zap fields to slog attributes, sorted by key for a
// stable output. zap's "error" key becomes edge's "err".
func zapAttrs(fs []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fs {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		name := k
		if k == "error" {
			name = "err"
		}
		attrs = append(attrs, slog.Any(name, enc.Fields[k]))
	}
	return attrs
}
