package loadgen

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestErrCount(t *testing.T) {
	var e ErrCount
	if e.N() != 0 || e.First() != nil {
		t.Fatalf("zero value: %d, %v", e.N(), e.First())
	}
	first := errors.New("first")
	e.Add(first)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { e.Add(errors.New("later")) })
	}
	wg.Wait()
	if e.N() != 9 || e.First() != first {
		t.Errorf("N, First = %d, %v; want 9, first", e.N(), e.First())
	}
}

func TestSelect(t *testing.T) {
	all := []string{"a", "b", "c"}
	id := func(s string) string { return s }
	for _, tt := range []struct {
		args []string
		want []string
		err  string
	}{
		{nil, all, ""},
		{[]string{"c", "a"}, []string{"c", "a"}, ""},
		{[]string{"b", "all"}, all, ""},
		{[]string{"a", "x"}, nil, `unknown scenario "x" (have: a b c)`},
	} {
		got, err := Select(all, tt.args, id)
		var msg string
		if err != nil {
			msg = err.Error()
		}
		if msg != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("Select(%q) = %q, %q; want %q, %q", tt.args, got, msg, tt.want, tt.err)
		}
	}
}

func TestDialAll(t *testing.T) {
	var calls atomic.Int32
	cs, errs := DialAll(10, 3, func() (int, error) {
		n := calls.Add(1)
		if n%4 == 0 {
			return 0, errors.New("refused")
		}
		return int(n), nil
	})
	if calls.Load() != 10 || len(cs) != 8 || errs.N() != 2 {
		t.Errorf("10 dials, par 3: %d calls, %d conns, %d errors; want 10, 8, 2", calls.Load(), len(cs), errs.N())
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, tt := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 51 * time.Millisecond}, {0.99, 100 * time.Millisecond}, {1, 100 * time.Millisecond}} {
		if got := Percentile(d, tt.p); got != tt.want {
			t.Errorf("Percentile(1..100ms, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := Percentile(nil, 0.5); got != 0 {
		t.Errorf("Percentile(nil) = %v", got)
	}
	if got := Millis(1500 * time.Microsecond); got != 1.5 {
		t.Errorf("Millis(1.5ms) = %v", got)
	}
}

// TestClosedLoop: every worker runs, errors in the measured window are
// counted, and the phases are announced in order.
func TestClosedLoop(t *testing.T) {
	var calls [3]atomic.Int64
	var phases []string
	r := ClosedLoop(3, 20*time.Millisecond, 50*time.Millisecond, func(i int) error {
		calls[i].Add(1)
		time.Sleep(time.Millisecond)
		if i == 2 {
			return errors.New("worker 2 fails")
		}
		return nil
	}, func(p string) { phases = append(phases, p) })
	for i := range calls {
		if calls[i].Load() == 0 {
			t.Errorf("worker %d never ran", i)
		}
	}
	if r.Rate <= 0 || r.P50 < time.Millisecond || r.P99 < r.P50 || r.Errors == 0 {
		t.Errorf("result %+v, want a rate, latencies of at least the 1ms op, and worker 2's errors", r)
	}
	if fmt.Sprint(phases) != "[measuring done]" {
		t.Errorf("phases %v", phases)
	}
}
