package main

import (
	"fmt"
	"math"
	"testing"
)

// TestHistogram checks that every bucket's middle is within the stated
// 1.6 % of the values it holds and that buckets are contiguous.
func TestHistogram(t *testing.T) {
	prev := 0
	for us := uint64(0); us < 1<<28; us += 1 + us/97 {
		i := histBucket(us)
		if i < prev {
			t.Fatalf("bucket of %d µs is %d, before %d", us, i, prev)
		}
		prev = i
		if v := histValue(i); us > 0 && math.Abs(v-float64(us))/float64(us) > 0.016 {
			t.Fatalf("%d µs lands in bucket %d shown as %.1f µs", us, i, v)
		}
	}
	for us := uint64(1); us < 1<<16; us++ {
		if d := histBucket(us) - histBucket(us-1); d != 0 && d != 1 {
			t.Fatalf("buckets jump by %d between %d and %d µs", d, us-1, us)
		}
	}
}

func frame(op byte, p string) []byte {
	f := []byte{0x80 | op}
	switch n := len(p); {
	case n <= 125:
		f = append(f, byte(n))
	case n <= 0xffff:
		f = append(f, 126, byte(n>>8), byte(n))
	}
	return append(f, p...)
}

// TestParse feeds edge-style and Centrifugo-style frames in pieces and
// checks the deliveries and latencies found.
func TestParse(t *testing.T) {
	long := fmt.Sprintf(`{"push":{"pub":{"data":{"bt":1000000,"pad":"%0200d"}}}}`, 0)
	var stream []byte
	stream = append(stream, frame(0x1, `{"channel":"bench","seq":7,"data":{"bt":1000000,"bi":0,"pad":"x"}}`)...)
	stream = append(stream, frame(0x1, long+"\n"+long)...) // two messages in one frame
	stream = append(stream, frame(0x1, `{"type":"subscribed"}`)...)

	for _, cut := range []int{1, 2, 3, 50, len(stream) - 1} {
		rc := &receiver{st: &loadStats{}}
		c := &conn{fd: -1}
		var left []byte
		for _, part := range [][]byte{stream[:cut], stream[cut:]} {
			data := append(left, part...)
			used, why := rc.parse(c, data, 3000000)
			if why != "" {
				t.Fatalf("cut %d: connection ended: %s", cut, why)
			}
			left = append([]byte(nil), data[used:]...)
		}
		if len(left) != 0 || c.got != 3 || rc.st.total.Load() != 3 {
			t.Fatalf("cut %d: got %d deliveries, %d bytes left; want 3 and 0", cut, c.got, len(left))
		}
		if p := rc.st.percentile(0.5); math.Abs(p-2) > 0.04 {
			t.Fatalf("cut %d: p50 %.3f ms, want 2 ms", cut, p)
		}
	}
}
