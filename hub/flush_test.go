package hub

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestFanoutWritesInOrder: deliveries written by the flushing goroutines,
// by writeLoop after a full socket, and partly by each (a frame cut by a
// short write), arrive whole and in order, to fast readers and to one
// whose small receive buffer keeps filling up.
func TestFanoutWritesInOrder(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ queue_size: 4096 }`)
	const subs, msgs = 20, 400
	var conns []*websocket.Conn
	for range subs - 1 {
		conns = append(conns, e.connect(t, "order"))
	}
	small, _, err := smallBufferDialer.Dial(e.ws+"?channel=order", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	expect(t, small, "welcome")
	expect(t, small, "subscribed")
	conns = append(conns, small)

	pad := strings.Repeat("x", 3000) // several frames do not fit a 4 KiB buffer
	var wg sync.WaitGroup
	errs := make(chan error, subs)
	for i, c := range conns {
		wg.Go(func() {
			var last uint64
			for n := range msgs {
				if i == subs-1 && n%50 == 0 {
					time.Sleep(20 * time.Millisecond) // let the socket fill up
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				var m struct {
					Seq  uint64
					Data struct{ N int }
				}
				if err := c.ReadJSON(&m); err != nil {
					errs <- fmt.Errorf("subscriber %d, message %d: %v", i, n, err)
					return
				}
				if m.Seq <= last || m.Data.N != n {
					errs <- fmt.Errorf("subscriber %d: got seq %d (after %d) n %d, want n %d", i, m.Seq, last, m.Data.N, n)
					return
				}
				last = m.Seq
			}
		})
	}
	for n := range msgs {
		e.publish(t, "order", fmt.Sprintf(`{"n":%d,"pad":"%s"}`, n, pad))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := e.n.Stats(t.Context()); st.Dropped != 0 || st.SlowClients != 0 {
		t.Errorf("dropped %d, slow clients %d", st.Dropped, st.SlowClients)
	}
}
