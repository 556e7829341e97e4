package hub

import (
	"bufio"
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// countingConn counts the bytes read from a connection: the bytes on the
// wire, frame headers included.
type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	k, err := c.Conn.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// deflateFanout subscribes n raw readers to a hub route with compression
// on, offering permessage-deflate or not (deflate), and publishes a 2 KiB
// JSON payload. It reports the bytes on the wire per delivery and, with
// compression, how many messages the hub compressed.
func deflateFanout(b *testing.B, n int, deflate bool) *fanout {
	e := newEnv(b, NodeOptions{}, `{ ping_interval: 1h, idle_timeout: 2h, queue_size: 100000, compression: true }`)
	f := &fanout{}
	var wire atomic.Int64
	d := &websocket.Dialer{EnableCompression: deflate}
	for range n {
		c, _, err := d.Dial(e.ws+"?channel=bench", nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		expect(b, c, "welcome")
		expect(b, c, "subscribed")
		c.SetReadDeadline(time.Time{})
		f.readers = append(f.readers, &frameReader{r: bufio.NewReader(countingConn{c.UnderlyingConn(), &wire})})
	}
	payload := []byte(bigJSON(2048))
	f.publish = func(int) { e.n.Publish(context.Background(), "bench", payload) }
	z0 := e.n.stats.compressed.Load()
	f.close = func() {
		b.ReportMetric(float64(wire.Load())/float64(n*b.N), "wire-B/delivery")
		b.ReportMetric(float64(e.n.stats.compressed.Load()-z0)/float64(b.N), "compressions/msg")
	}
	return f
}

// BenchmarkFanoutDeflate publishes a 2 KiB JSON payload at 50 messages
// per second to 500 subscribers that negotiated permessage-deflate and to
// 500 that did not: bytes on the wire and CPU per delivery (hub and
// readers in one process: compare the two with each other). bench/hub.sh
// deflate runs it.
//
//	go test -run '^$' -bench FanoutDeflate -benchtime 100x ./hub/
func BenchmarkFanoutDeflate(b *testing.B) {
	const n = 500
	b.Run("deflate", func(b *testing.B) { runFanout(b, deflateFanout(b, n, true), 20*time.Millisecond) })
	b.Run("plain", func(b *testing.B) { runFanout(b, deflateFanout(b, n, false), 20*time.Millisecond) })
}
