// Package testutil holds the small helpers that tests of several packages
// share, so that each is written once: polling for a condition and
// receiving from a channel with a bound. Only _test.go files import it
// (cmd/edge's TestDeps keeps the testing package out of the binary).
package testutil

import (
	"testing"
	"time"
)

// Poll intervals of WaitFor: the first check is immediate, then the wait
// doubles from minPoll up to maxPoll, so that a condition that holds soon
// is seen soon and a slow one is not checked in a busy loop.
const (
	minPoll = time.Millisecond
	maxPoll = 20 * time.Millisecond
)

// WaitFor polls cond until it returns true, failing t with "timed out after
// d waiting for what" once d has passed. cond runs on the calling
// goroutine; it must not block for long. WaitFor is for state that another
// goroutine changes with no event to wait on: prefer a channel (see Recv)
// or testing/synctest where the code offers one.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	wait := minPoll
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(wait)
		wait = min(2*wait, maxPoll)
	}
}

// Recv returns the next value from ch, failing t with "timed out after d
// waiting for what" when none arrives within d. A closed channel yields
// its zero value, as a receive does.
func Recv[T any](t testing.TB, ch <-chan T, d time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("timed out after %s waiting for %s", d, what)
		var zero T
		return zero
	}
}
