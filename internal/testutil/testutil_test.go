package testutil

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// fakeT records a failure instead of ending the test; Fatalf stops the
// helper's goroutine as the real one does.
type fakeT struct {
	testing.TB
	failed atomic.Value // string
}

func (f *fakeT) Helper() {}
func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed.Store(fmt.Sprintf(format, args...))
	panic(f)
}

// run calls fn with a fakeT and returns the failure message, or "".
func run(fn func(t testing.TB)) (msg string) {
	f := &fakeT{}
	defer func() {
		if r := recover(); r != nil && r != f {
			panic(r)
		}
		msg, _ = f.failed.Load().(string)
	}()
	fn(f)
	return ""
}

func TestWaitFor(t *testing.T) {
	var n atomic.Int32
	if msg := run(func(t testing.TB) {
		WaitFor(t, 5*time.Second, "the third call", func() bool { return n.Add(1) == 3 })
	}); msg != "" {
		t.Errorf("condition that comes true: %s", msg)
	}
	msg := run(func(t testing.TB) {
		WaitFor(t, 10*time.Millisecond, "never", func() bool { return false })
	})
	if want := "timed out after 10ms waiting for never"; msg != want {
		t.Errorf("condition that never holds: %q, want %q", msg, want)
	}
}

func TestRecv(t *testing.T) {
	ch := make(chan int, 1)
	ch <- 7
	var got int
	if msg := run(func(t testing.TB) { got = Recv(t, ch, 5*time.Second, "a value") }); msg != "" || got != 7 {
		t.Errorf("Recv = %d, %q; want 7", got, msg)
	}
	msg := run(func(t testing.TB) { Recv(t, ch, 10*time.Millisecond, "a second value") })
	if want := "timed out after 10ms waiting for a second value"; msg != want {
		t.Errorf("empty channel: %q, want %q", msg, want)
	}
	close(ch)
	if msg := run(func(t testing.TB) { got = Recv(t, ch, 5*time.Second, "close") }); msg != "" || got != 0 {
		t.Errorf("closed channel: %d, %q; want 0", got, msg)
	}
}
