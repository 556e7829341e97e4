package tls

import (
	"errors"
	"testing"

	"go.uber.org/zap"
)

// TestZapBridge checks that certmagic's zap logs reach slog with level,
// logger name, fields (zap's "error" as "err") and With fields.
func TestZapBridge(t *testing.T) {
	log, sink := newLogger(t)
	z := newZapLogger(log.Handler()).Named("obtain").With(zap.String("identifier", "a.example.com"))
	z.Error("could not get certificate", zap.Error(errors.New("boom")), zap.Int("attempt", 2))
	z.Debug("debug line", zap.Strings("names", []string{"x", "y"}))
	z.Warn("warn line")
	for _, want := range [][]string{
		{"ERROR could not get certificate", "logger=certmagic.obtain", "err=boom", "attempt=2", "identifier=a.example.com"},
		{"DEBUG debug line", "names=[x y]"},
		{"WARN warn line"},
	} {
		if !sink.has(want...) {
			t.Errorf("no log record with %q; have %q", want, sink.records)
		}
	}
}
