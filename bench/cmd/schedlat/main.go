// Command schedlat reads a Go execution trace and prints the distribution
// of how long goroutines waited runnable before they ran (scheduling
// latency) and the number of GC cycles: where a Go server's tail latency
// under a full core comes from (bench/README.md, "Tail latency").
//
//	curl -o trace.out 'http://127.0.0.1:9180/debug/pprof/trace?seconds=3'   # under load, server.pprof on
//	go run ./bench/cmd/schedlat trace.out
package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"golang.org/x/exp/trace"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: schedlat TRACE")
		os.Exit(2)
	}
	f, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	r, err := trace.NewReader(f)
	if err != nil {
		panic(err)
	}
	runnableSince := map[trace.GoID]trace.Time{}
	var waits []time.Duration
	var gcs int
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			panic(err)
		}
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			if to == trace.GoRunnable {
				runnableSince[id] = ev.Time()
			}
			if from == trace.GoRunnable && to == trace.GoRunning {
				if t, ok := runnableSince[id]; ok {
					waits = append(waits, ev.Time().Sub(t))
					delete(runnableSince, id)
				}
			}
		case trace.EventRangeBegin:
			if ev.Range().Name == "GC concurrent mark phase" {
				gcs++
			}
		}
	}
	if len(waits) == 0 {
		fmt.Println("no goroutine ran in this trace")
		return
	}
	slices.Sort(waits)
	p := func(q float64) time.Duration { return waits[int(q*float64(len(waits)-1))] }
	fmt.Printf("runnable->running waits: n=%d p50=%v p90=%v p99=%v p99.9=%v max=%v; GC cycles: %d\n",
		len(waits), p(0.5), p(0.9), p(0.99), p(0.999), waits[len(waits)-1], gcs)
}
