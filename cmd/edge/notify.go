package main

import (
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// notify sends a state to systemd (Type=notify) when NOTIFY_SOCKET is set.
func notify(log *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// watchdogTicker ticks at half the WatchdogSec systemd set, or never.
func watchdogTicker() <-chan time.Time {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return nil
	}
	return time.NewTicker(d / 2).C
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, which systemd 253+
// wants with RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
