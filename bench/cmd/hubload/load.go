package main

// The load: -c subscribed WebSocket connections and one publisher. Each
// published payload carries its send time ({"bt":<unix ns>,...}); a reader
// per connection reads raw frames into a small buffer, finds every "bt":
// in them and records receive time − send time. With -step the tool stops
// after the warm-up and after connecting, printing "warm" and "ready",
// until the harness writes a line on stdin (so that it can read the
// server's memory at those points), and prints "measuring" and "done"
// around the measured window.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

type loadConfig struct {
	url        string
	proto      string // edge, bare or centrifugo: what the handshake looks like
	conns      int
	srcAddrs   int
	dialPar    int
	redisAddr  string
	pubChannel string // the Redis channel, prefix included
	apiURL     string // centrifugo: publish through its HTTP API instead
	channel    string // centrifugo: the channel to subscribe to
	rate       float64
	dur        time.Duration
	size       int
	drain      time.Duration
	bufSize    int
	warm       int
	step       bool
}

func runLoad(args []string) error {
	var lc loadConfig
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	fs.StringVar(&lc.url, "url", "ws://127.0.0.1:21800/socket/?channel=bench", "WebSocket URL")
	fs.StringVar(&lc.proto, "proto", "edge", "handshake: edge (welcome + subscribed), bare (subscribed) or centrifugo (connect + subscribe commands)")
	fs.IntVar(&lc.conns, "c", 10000, "subscribed connections")
	fs.IntVar(&lc.srcAddrs, "src", 16, "source addresses 127.0.0.1..127.0.0.N the connections are spread over (ephemeral ports)")
	fs.IntVar(&lc.dialPar, "dial-concurrency", 32, "connections opened in parallel")
	fs.StringVar(&lc.redisAddr, "redis", "127.0.0.1:6379", "Redis address the publisher PUBLISHes to")
	fs.StringVar(&lc.pubChannel, "publish", "edge:bench", "Redis channel to publish to (prefix included)")
	fs.StringVar(&lc.apiURL, "publish-api", "", "publish through this Centrifugo HTTP API URL (…/api/publish) instead of Redis")
	fs.StringVar(&lc.channel, "channel", "bench", "channel name (centrifugo subscribe and API publish)")
	fs.Float64Var(&lc.rate, "rate", 5, "messages published per second")
	fs.DurationVar(&lc.dur, "d", 20*time.Second, "publishing duration")
	fs.IntVar(&lc.size, "size", 64, "payload size in bytes (JSON, padded)")
	fs.DurationVar(&lc.drain, "drain", 10*time.Second, "longest wait for outstanding deliveries after the last publish")
	fs.IntVar(&lc.bufSize, "buf", 4096, "read buffer per connection in bytes")
	fs.IntVar(&lc.warm, "warm", 100, "connections opened, handshaken and closed before the measured ones")
	fs.BoolVar(&lc.step, "step", false, "wait for a line on stdin after printing warm and ready (harness mode)")
	fs.Parse(args)

	raiseNofile()
	stdin := bufio.NewReader(os.Stdin)
	wait := func() error {
		if !lc.step {
			return nil
		}
		if _, err := stdin.ReadString('\n'); err != nil {
			return fmt.Errorf("stdin: %w", err)
		}
		return nil
	}

	d := newDialer(lc.srcAddrs)
	if lc.warm > 0 {
		ws, errs := dialAll(d, &lc, lc.warm)
		for _, c := range ws {
			c.Close()
		}
		if errs.n > 0 {
			return fmt.Errorf("warm-up: %d of %d connections failed: %w", errs.n, lc.warm, errs.first)
		}
	}
	fmt.Println("warm")
	if err := wait(); err != nil {
		return err
	}

	ws, errs := dialAll(d, &lc, lc.conns)
	if len(ws) == 0 {
		return fmt.Errorf("no connection opened (%d errors): %w", errs.n, errs.first)
	}
	st := &loadStats{}
	readers := make([]*reader, len(ws))
	for i, c := range ws {
		readers[i] = &reader{nc: c.UnderlyingConn(), centrifugo: lc.proto == "centrifugo", size: lc.bufSize}
	}
	ws = nil // the readers read raw frames from here on; gorilla's buffers go
	for _, r := range readers {
		go r.run(st)
	}
	if errs.n > 0 {
		fmt.Fprintf(os.Stderr, "hubload load: %d connections failed, first: %v\n", errs.n, errs.first)
	}
	fmt.Printf("ready %d errors %d\n", len(readers), errs.n)
	if err := wait(); err != nil {
		return err
	}

	pub, err := newPublisher(&lc)
	if err != nil {
		return err
	}
	res := measure(&lc, st, readers, pub)
	res.dialErrors = errs.n
	fmt.Println(res.line())
	return nil
}

// raiseNofile lifts the open-file limit to its maximum: every connection is
// a file descriptor.
func raiseNofile() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}

// newDialer spreads connections over source addresses 127.0.0.1..n, so that
// tens of thousands of connections (and the TIME_WAIT of earlier runs) never
// run out of ephemeral ports.
func newDialer(n int) *websocket.Dialer {
	var next atomic.Uint32
	return &websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			k := next.Add(1) % uint32(max(n, 1))
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+k))}}
			return d.DialContext(ctx, network, addr)
		},
		HandshakeTimeout: 15 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  512,
	}
}

type errCount struct {
	mu    sync.Mutex
	n     int
	first error
}

func (e *errCount) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n == 0 {
		e.first = err
	}
	e.n++
}

// dialAll opens n subscribed connections, lc.dialPar at a time.
func dialAll(d *websocket.Dialer, lc *loadConfig, n int) ([]*websocket.Conn, *errCount) {
	var (
		mu   sync.Mutex
		cs   = make([]*websocket.Conn, 0, n)
		errs = &errCount{}
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range lc.dialPar {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				c, err := dialOne(d, lc)
				if err != nil {
					errs.add(err)
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

// dialOne connects and waits until the subscription is confirmed: after
// that the server sends nothing until the first publish, so gorilla has
// nothing buffered and the connection can be read raw.
func dialOne(d *websocket.Dialer, lc *loadConfig) (*websocket.Conn, error) {
	c, resp, err := d.Dial(lc.url, nil)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(15 * time.Second))
	expect := func(want string) error {
		_, m, err := c.ReadMessage()
		if err != nil {
			return err
		}
		if !bytes.Contains(m, []byte(want)) || bytes.Contains(m, []byte(`"error"`)) {
			return fmt.Errorf("handshake: got %.200s, want %s", m, want)
		}
		return nil
	}
	switch lc.proto {
	case "edge":
		if err = expect(`"welcome"`); err == nil {
			err = expect(`"subscribed"`)
		}
	case "bare":
		err = expect(`subscribed`)
	case "centrifugo":
		err = c.WriteMessage(websocket.TextMessage, []byte(`{"id":1,"connect":{}}`))
		if err == nil {
			err = expect(`"id":1`)
		}
		if err == nil {
			err = c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"id":2,"subscribe":{"channel":%q}}`, lc.channel))
		}
		if err == nil {
			err = expect(`"id":2`)
		}
	default:
		err = fmt.Errorf("unknown -proto %q", lc.proto)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	c.SetReadDeadline(time.Time{})
	return c, nil
}

// Latency histogram: microseconds, exact below 128 µs, then 64 buckets per
// power of two (1.6 % resolution), up to about 2^28 µs (4.5 minutes).
const (
	histSub  = 7
	histSize = 2048
)

func histBucket(us uint64) int {
	if us < 1<<histSub {
		return int(us)
	}
	e := bits.Len64(us) - histSub
	return min(e<<(histSub-1)+int(us>>e), histSize-1)
}

// histValue is the middle of bucket i, in microseconds.
func histValue(i int) float64 {
	if i < 1<<histSub {
		return float64(i)
	}
	e := i>>(histSub-1) - 1
	m := i - e<<(histSub-1)
	lo := float64(uint64(m) << e)
	return lo + float64(uint64(1)<<e)/2
}

// loadStats is shared by every reader; with GOMAXPROCS=1 the atomics are
// uncontended.
type loadStats struct {
	hist     [histSize]atomic.Uint64
	maxNs    atomic.Int64
	total    atomic.Uint64
	lastRecv atomic.Int64 // unix ns of the latest read that carried a delivery
	closed   atomic.Int64 // connections the server closed or that failed
	closeMu  sync.Mutex
	firstEnd string // why the first connection ended
}

func (st *loadStats) record(lat int64) {
	lat = max(lat, 0)
	st.hist[histBucket(uint64(lat+500)/1000)].Add(1)
	for {
		m := st.maxNs.Load()
		if lat <= m || st.maxNs.CompareAndSwap(m, lat) {
			break
		}
	}
}

func (st *loadStats) ended(why string) {
	if st.closed.Add(1) == 1 {
		st.closeMu.Lock()
		st.firstEnd = why
		st.closeMu.Unlock()
	}
}

// percentile returns the p-quantile of the recorded latencies in ms.
func (st *loadStats) percentile(p float64) float64 {
	var n uint64
	counts := make([]uint64, histSize)
	for i := range counts {
		counts[i] = st.hist[i].Load()
		n += counts[i]
	}
	if n == 0 {
		return 0
	}
	rank := uint64(p * float64(n))
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen > rank {
			return histValue(i) / 1000
		}
	}
	return float64(st.maxNs.Load()) / 1e6
}

// reader reads one connection's frames raw. Server frames are unmasked;
// the reader answers ping frames (and Centrifugo's {} pings) with masked
// frames of its own.
type reader struct {
	nc         net.Conn
	centrifugo bool
	size       int
	got        atomic.Int64 // deliveries received
}

var marker = []byte(`"bt":`)

func (r *reader) run(st *loadStats) {
	buf := make([]byte, r.size)
	start, end := 0, 0 // buf[start:end] is read and not parsed yet
	for {
		if end == len(buf) {
			if start > 0 {
				end = copy(buf, buf[start:end])
				start = 0
			} else { // one frame larger than the buffer
				buf = append(buf, make([]byte, len(buf))...)
			}
		}
		n, err := r.nc.Read(buf[end:])
		if n > 0 {
			end += n
			var why string
			start, why = r.parse(buf, start, end, time.Now().UnixNano(), st)
			if why != "" {
				st.ended(why)
				r.nc.Close()
				return
			}
			if start == end {
				start, end = 0, 0
			}
		}
		if err != nil {
			st.ended("read: " + err.Error())
			return
		}
	}
}

// parse handles the complete frames in buf[start:end] and returns where
// the first incomplete one starts, or why the connection ends.
func (r *reader) parse(buf []byte, start, end int, now int64, st *loadStats) (int, string) {
	got := 0
	defer func() {
		if got > 0 {
			r.got.Add(int64(got))
			st.total.Add(uint64(got))
			for {
				l := st.lastRecv.Load()
				if now <= l || st.lastRecv.CompareAndSwap(l, now) {
					break
				}
			}
		}
	}()
	for end-start >= 2 {
		b0, b1 := buf[start], buf[start+1]
		hdr, n := 2, int(b1&0x7f)
		switch n {
		case 126:
			if end-start < 4 {
				return start, ""
			}
			hdr, n = 4, int(binary.BigEndian.Uint16(buf[start+2:]))
		case 127:
			if end-start < 10 {
				return start, ""
			}
			hdr, n = 10, int(binary.BigEndian.Uint64(buf[start+2:]))
		}
		if b1&0x80 != 0 {
			return start, "masked frame from the server"
		}
		if end-start < hdr+n {
			return start, ""
		}
		p := buf[start+hdr : start+hdr+n]
		start += hdr + n
		switch b0 & 0x0f {
		case 0x0, 0x1, 0x2: // continuation, text, binary
			if r.centrifugo && len(p) == 2 && p[0] == '{' && p[1] == '}' {
				r.nc.Write(clientFrame(0x1, p)) // Centrifugo's ping: answer {}
				continue
			}
			for {
				i := bytes.Index(p, marker)
				if i < 0 {
					break
				}
				p = p[i+len(marker):]
				var ts int64
				j := 0
				for j < len(p) && '0' <= p[j] && p[j] <= '9' {
					ts = ts*10 + int64(p[j]-'0')
					j++
				}
				p = p[j:]
				st.record(now - ts)
				got++
			}
		case 0x8:
			code := 0
			if len(p) >= 2 {
				code = int(binary.BigEndian.Uint16(p))
				p = p[2:]
			}
			r.nc.Write(clientFrame(0x8, nil))
			return start, fmt.Sprintf("closed by the server: %d %s", code, p)
		case 0x9:
			r.nc.Write(clientFrame(0xA, p))
		}
	}
	return start, ""
}

// clientFrame is a masked client frame; the mask key is zero, which leaves
// the payload as it is.
func clientFrame(op byte, p []byte) []byte {
	f := []byte{0x80 | op, 0x80 | byte(len(p)), 0, 0, 0, 0}
	return append(f, p...)
}

// publisher sends one payload carrying its send time.
type publisher struct {
	lc   *loadConfig
	rdb  *redis.Client
	http *http.Client
	pad  string
}

func newPublisher(lc *loadConfig) (*publisher, error) {
	p := &publisher{lc: lc}
	// {"bt":1763791234567890123,"bi":1234,"pad":""} is 45 bytes (the
	// payload must stay valid JSON: edge sends it verbatim then).
	p.pad = strings.Repeat("x", max(0, lc.size-45))
	if lc.apiURL != "" {
		p.http = &http.Client{Timeout: 5 * time.Second}
		return p, nil
	}
	p.rdb = redis.NewClient(&redis.Options{Addr: lc.redisAddr, PoolSize: 4})
	if err := p.rdb.Ping(context.Background()).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", lc.redisAddr, err)
	}
	return p, nil
}

func (p *publisher) publish(ctx context.Context, i int) error {
	payload := fmt.Appendf(nil, `{"bt":%d,"bi":%d,"pad":"%s"}`, time.Now().UnixNano(), i, p.pad)
	if p.rdb != nil {
		return p.rdb.Publish(ctx, p.lc.pubChannel, payload).Err()
	}
	body := fmt.Appendf(nil, `{"channel":%q,"data":%s}`, p.lc.channel, payload)
	req, err := http.NewRequestWithContext(ctx, "POST", p.lc.apiURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || bytes.Contains(b, []byte(`"error"`)) {
		return fmt.Errorf("publish API: %s %.200s", resp.Status, b)
	}
	return nil
}

type loadResult struct {
	conns, dialErrors        int
	published, pubErrors     int
	pubSeconds, window       float64
	deliveries, expected     uint64
	lost, dup                uint64
	closed                   int64
	firstEnd                 string
	p50, p99, maxMs, loadCPU float64
}

func (r *loadResult) line() string {
	rate := 0.0
	if r.window > 0 {
		rate = float64(r.deliveries) / r.window
	}
	s := fmt.Sprintf("result conns=%d dial_errors=%d published=%d publish_errors=%d publish_s=%.2f window_s=%.2f "+
		"deliveries=%d expected=%d lost=%d dup=%d closed=%d rate=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f load_cpu=%.1f",
		r.conns, r.dialErrors, r.published, r.pubErrors, r.pubSeconds, r.window,
		r.deliveries, r.expected, r.lost, r.dup, r.closed, rate, r.p50, r.p99, r.maxMs, r.loadCPU)
	if r.firstEnd != "" {
		s += fmt.Sprintf(" first_end=%q", r.firstEnd)
	}
	return s
}

// measure publishes rate×dur messages on a fixed schedule, waits for the
// deliveries (at most lc.drain after the last publish) and sums up.
func measure(lc *loadConfig, st *loadStats, readers []*reader, pub *publisher) *loadResult {
	total := int(lc.rate * lc.dur.Seconds())
	interval := float64(time.Second) / lc.rate
	ctx := context.Background()
	res := &loadResult{conns: len(readers)}

	fmt.Println("measuring")
	cpu0 := cpuTime()
	t0 := time.Now()
	var firstErr error
	for i := range total {
		if d := time.Until(t0.Add(time.Duration(float64(i) * interval))); d > 0 {
			time.Sleep(d)
		}
		if err := pub.publish(ctx, i); err != nil {
			res.pubErrors++
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		res.published++
	}
	res.pubSeconds = time.Since(t0).Seconds()
	if firstErr != nil {
		fmt.Fprintf(os.Stderr, "hubload load: %d publishes failed, first: %v\n", res.pubErrors, firstErr)
	}
	res.expected = uint64(res.published) * uint64(len(readers))
	deadline := time.Now().Add(lc.drain)
	for st.total.Load() < res.expected && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	end := time.Unix(0, st.lastRecv.Load())
	if st.lastRecv.Load() == 0 || end.Before(t0) {
		end = time.Now()
	}
	// The nominal publishing time at least: the last message is sent one
	// interval before it ends.
	res.window = max(end.Sub(t0).Seconds(), float64(res.published)/lc.rate)
	res.loadCPU = 100 * (cpuTime() - cpu0).Seconds() / time.Since(t0).Seconds()
	fmt.Println("done")

	for _, r := range readers {
		got := uint64(r.got.Load())
		res.deliveries += got
		if got < uint64(res.published) {
			res.lost += uint64(res.published) - got
		} else {
			res.dup += got - uint64(res.published)
		}
	}
	res.closed = st.closed.Load()
	st.closeMu.Lock()
	res.firstEnd = st.firstEnd
	st.closeMu.Unlock()
	res.p50, res.p99 = st.percentile(0.50), st.percentile(0.99)
	res.maxMs = float64(st.maxNs.Load()) / 1e6
	return res
}

// cpuTime is the user+system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
