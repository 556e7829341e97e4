// Package loadgen holds what the benchmark commands share to generate load
// and pick what to run: an error counter for concurrent workers, opening
// many connections in parallel, latency percentiles, and the selection of
// scenarios by name. Shared by bench/cmd/benchrun,
// bench/cmd/hubload and bench/cmd/wsload.
package loadgen

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ErrCount counts the errors of concurrent workers and keeps the first,
// which a report shows as the example. The zero value is ready; it is safe
// for concurrent use.
type ErrCount struct {
	mu    sync.Mutex
	n     int   // guarded by mu
	first error // guarded by mu
}

// Add counts err.
func (e *ErrCount) Add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		e.first = err
	}
	e.n++
}

// N returns how many errors were added.
func (e *ErrCount) N() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// First returns the first error added, or nil.
func (e *ErrCount) First() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.first
}

// DialAll opens n connections with dial, par at a time, and returns those
// that opened (in no particular order) with the count of those that did
// not.
func DialAll[C any](n, par int, dial func() (C, error)) ([]C, *ErrCount) {
	var (
		mu   sync.Mutex
		cs   = make([]C, 0, n)
		errs = &ErrCount{}
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range par {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				c, err := dial()
				if err != nil {
					errs.Add(err)
					continue
				}
				mu.Lock()
				cs = append(cs, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return cs, errs
}

// Percentile returns the p quantile (0.99 for p99) of sorted latencies,
// 0 for none.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// Millis returns d in milliseconds, for reports.
func Millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Select returns the scenarios that args name, in the order of args; all
// of them when args is empty or contains "all". name gives a scenario's
// name. An unknown name is an error that lists the known ones.
func Select[S any](all []S, args []string, name func(S) string) ([]S, error) {
	if len(args) == 0 || slices.Contains(args, "all") {
		return all, nil
	}
	var sel []S
	for _, a := range args {
		i := slices.IndexFunc(all, func(s S) bool { return name(s) == a })
		if i < 0 {
			return nil, fmt.Errorf("unknown scenario %q (have: %s)", a, strings.Join(Names(all, name), " "))
		}
		sel = append(sel, all[i])
	}
	return sel, nil
}

// Names returns the names of ss, in order.
func Names[S any](ss []S, name func(S) string) []string {
	n := make([]string, 0, len(ss))
	for _, s := range ss {
		n = append(n, name(s))
	}
	return n
}

// Result is what a closed-loop run measured: the rate of completed
// operations in the measured window, their latency percentiles, and the
// errors in that window.
type Result struct {
	Rate     float64
	P50, P99 time.Duration
	Errors   int64
}

// ClosedLoop runs workers goroutines, each calling op(i) back to back:
// warmup unmeasured, then dur measured (latency of every operation that
// started and ended in the window; errors counted). It returns once every
// worker has finished its last operation.
func ClosedLoop(workers int, warmup, dur time.Duration, op func(worker int) error, onPhase func(string)) Result {
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		errs      atomic.Int64
		wg        sync.WaitGroup
	)
	lat := make([][]time.Duration, workers)
	for i := range workers {
		wg.Go(func() {
			for !stop.Load() {
				start := time.Now()
				if err := op(i); err != nil {
					if !stop.Load() {
						errs.Add(1)
					}
					continue
				}
				if measuring.Load() && !stop.Load() {
					lat[i] = append(lat[i], time.Since(start))
				}
			}
		})
	}
	time.Sleep(warmup)
	onPhase("measuring")
	begin := time.Now()
	errs.Store(0)
	measuring.Store(true)
	time.Sleep(dur)
	stop.Store(true)
	elapsed := time.Since(begin)
	onPhase("done")
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	return Result{Rate: float64(len(all)) / elapsed.Seconds(), P50: Percentile(all, 0.50), P99: Percentile(all, 0.99), Errors: errs.Load()}
}
