package main

// The load: -c subscribed WebSocket connections and one publisher. Each
// published payload carries its send time ({"bt":<unix ns>,...}); one
// receiver goroutine waits on every socket with epoll, reads raw frames,
// finds every "bt": in them and records receive time − send time.
//
// Output, one line each: "warm" (after the warm-up connections), "ready N
// errors E" (all connections subscribed), "measuring" (first publish),
// "done" (deliveries complete or drain over), then "result k=v ...". With
// -step the tool waits after "warm" and after "ready" until the harness
// writes a line on stdin, so that it can read the server's memory there.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"

	"edge/bench/internal/loadgen"
)

type loadConfig struct {
	url        string // WebSocket URL; several, comma-separated, take connections in turn (cluster)
	proto      string // edge, bare or centrifugo: what the handshake looks like
	conns      int
	srcAddrs   int
	dialPar    int
	redisAddr  string
	pubChannel string // the Redis channel, prefix included
	apiURL     string // centrifugo: publish through its HTTP API instead
	fcall      bool   // publish with FCALL edge_publish (edge's history in Redis) instead of PUBLISH
	channel    string // centrifugo: the channel to subscribe to
	rate       float64
	dur        time.Duration
	size       int
	drain      time.Duration
	warm       int
	step       bool
	spin       bool
}

func runLoad(args []string) error {
	var lc loadConfig
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	fs.StringVar(&lc.url, "url", "ws://127.0.0.1:21800/socket/?channel=bench", "WebSocket URL; several, comma-separated, take the connections in turn (one per node of a cluster)")
	fs.StringVar(&lc.proto, "proto", "edge", "handshake: edge (welcome + subscribed), bare (subscribed) or centrifugo (connect + subscribe commands)")
	fs.IntVar(&lc.conns, "c", 10000, "subscribed connections")
	fs.IntVar(&lc.srcAddrs, "src", 16, "source addresses 127.0.0.1..127.0.0.N the connections are spread over (ephemeral ports)")
	fs.IntVar(&lc.dialPar, "dial-concurrency", 32, "connections opened in parallel")
	fs.StringVar(&lc.redisAddr, "redis", "127.0.0.1:6379", "Redis address the publisher PUBLISHes to")
	fs.StringVar(&lc.pubChannel, "publish", "edge:bench", "Redis channel to publish to (prefix included)")
	fs.StringVar(&lc.apiURL, "publish-api", "", "publish through this Centrifugo HTTP API URL (…/api/publish) instead of Redis")
	fs.StringVar(&lc.channel, "channel", "bench", "channel name (centrifugo subscribe and API publish, FCALL edge_publish)")
	fs.BoolVar(&lc.fcall, "fcall", false, "publish with FCALL edge_publish 1 CHANNEL PAYLOAD (edge's cluster-wide history in Redis) instead of PUBLISH")
	fs.Float64Var(&lc.rate, "rate", 5, "messages published per second")
	fs.DurationVar(&lc.dur, "d", 20*time.Second, "publishing duration")
	fs.IntVar(&lc.size, "size", 64, "payload size in bytes (JSON, padded)")
	fs.DurationVar(&lc.drain, "drain", 10*time.Second, "longest wait for outstanding deliveries after the last publish")
	fs.IntVar(&lc.warm, "warm", 100, "connections opened, handshaken and closed before the measured ones")
	fs.BoolVar(&lc.spin, "spin", true, "poll the sockets without sleeping (the load core stays busy; servers are spared the receiver's wake-ups)")
	fs.BoolVar(&lc.step, "step", false, "wait for a line on stdin after printing warm and ready (harness mode)")
	fs.Parse(args)
	if lc.conns < 1 || lc.rate <= 0 || lc.dur <= 0 {
		return errors.New("-c, -rate and -d must be positive")
	}

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
	urls := strings.Split(lc.url, ",")
	var nextURL atomic.Uint64
	dial := func() (*websocket.Conn, error) {
		return dialOne(d, &lc, urls[(nextURL.Add(1)-1)%uint64(len(urls))])
	}
	if lc.warm > 0 {
		ws, errs := loadgen.DialAll(lc.warm, lc.dialPar, dial)
		for _, c := range ws {
			c.Close()
		}
		if errs.N() > 0 {
			return fmt.Errorf("warm-up: %d of %d connections failed: %w", errs.N(), lc.warm, errs.First())
		}
	}
	fmt.Println("warm")
	if err := wait(); err != nil {
		return err
	}

	ws, errs := loadgen.DialAll(lc.conns, lc.dialPar, dial)
	if len(ws) == 0 {
		return fmt.Errorf("no connection opened (%d errors): %w", errs.N(), errs.First())
	}
	rc, err := newReceiver(ws, lc.proto == "centrifugo")
	if err != nil {
		return err
	}
	if !lc.spin {
		rc.waitMs = 50
	}
	ws = nil // read raw from here on; gorilla's buffers go
	go rc.run()
	if errs.N() > 0 {
		fmt.Fprintf(os.Stderr, "hubload load: %d connections failed, first: %v\n", errs.N(), errs.First())
	}
	fmt.Printf("ready %d errors %d\n", len(rc.all), errs.N())
	if err := wait(); err != nil {
		return err
	}

	pub, err := newPublisher(&lc)
	if err != nil {
		return err
	}
	res := measure(&lc, rc, pub)
	res.dialErrors = errs.N()
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
		// wss to the benchmark's own certificate on loopback.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
		ReadBufferSize:  1024,
		WriteBufferSize: 512,
	}
}

// dialOne connects and waits until the subscription is confirmed: after
// that the server sends nothing until the first publish, so gorilla has
// nothing buffered and the connection can be read raw.
func dialOne(d *websocket.Dialer, lc *loadConfig, url string) (*websocket.Conn, error) {
	c, resp, err := d.Dial(url, nil)
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

// loadStats are the receiver's figures. Only the receiver goroutine
// writes them; total is read by the publisher side while it runs, the rest
// once the receiver has stopped.
type loadStats struct {
	hist     [histSize]uint64
	maxNs    int64
	total    atomic.Uint64
	lastRecv int64 // unix ns of the latest read that carried a delivery
	closed   int64 // connections the server closed or that failed
	firstEnd string
}

func (st *loadStats) record(lat int64) {
	lat = max(lat, 0)
	st.hist[histBucket(uint64(lat+500)/1000)]++
	st.maxNs = max(st.maxNs, lat)
}

func (st *loadStats) ended(why string) {
	if st.closed++; st.closed == 1 {
		st.firstEnd = why
	}
}

// percentile returns the p-quantile of the recorded latencies in ms.
func (st *loadStats) percentile(p float64) float64 {
	var n uint64
	for _, c := range st.hist {
		n += c
	}
	if n == 0 {
		return 0
	}
	rank := uint64(p * float64(n))
	var seen uint64
	for i, c := range st.hist {
		seen += c
		if seen > rank {
			return histValue(i) / 1000
		}
	}
	return float64(st.maxNs) / 1e6
}

// conn is one subscribed connection, detached from Go's network poller:
// the receiver reads its file descriptor directly.
type conn struct {
	fd   int      // -1 over TLS
	tc   net.Conn // the TLS connection (wss), read by a goroutine of its own; nil on ws
	left []byte   // an incomplete frame from the previous read
	got  int64    // deliveries received
	dead bool
}

// write sends a client frame (pong, close) on c.
func (c *conn) write(b []byte) {
	if c.tc != nil {
		c.tc.Write(b)
		return
	}
	syscall.Write(c.fd, b)
}

// detach takes the socket of c out of Go's poller (a dup of it stays
// open), so that the receiver can wait for all sockets in one epoll_wait
// and read each once per readiness, instead of a goroutine wake-up and two
// read calls (data, then EAGAIN) per delivery.
func detach(c *websocket.Conn) (int, error) {
	tc, ok := c.UnderlyingConn().(*net.TCPConn)
	if !ok {
		return -1, errors.New("not a TCP connection")
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var derr error
	if err := raw.Control(func(s uintptr) { fd, derr = syscall.Dup(int(s)) }); err != nil {
		return -1, err
	}
	if derr != nil {
		return -1, derr
	}
	tc.Close() // Go's descriptor only: the dup keeps the socket
	syscall.CloseOnExec(fd)
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, nil
}

// receiver reads every connection from one goroutine: level-triggered
// epoll, one read per ready socket. Server frames are unmasked; it answers
// ping frames (and Centrifugo's {} pings) with masked frames of its own.
type receiver struct {
	epfd       int
	conns      []*conn // indexed by file descriptor
	all        []*conn
	centrifugo bool
	waitMs     int          // epoll_wait timeout: 0 spins
	busy       atomic.Int64 // ns spent reading and parsing
	tlsMu      sync.Mutex   // serialises readTLS goroutines' parsing (stats are not safe for concurrent use)
	st         *loadStats
	stop       atomic.Bool
	done       chan struct{}
}

func newReceiver(ws []*websocket.Conn, centrifugo bool) (*receiver, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	rc := &receiver{epfd: epfd, centrifugo: centrifugo, st: &loadStats{}, done: make(chan struct{})}
	for _, c := range ws {
		if tc, ok := c.UnderlyingConn().(*tls.Conn); ok {
			// wss: the bytes are TLS records, so each connection is read
			// through crypto/tls by its own goroutine (readTLS).
			rc.all = append(rc.all, &conn{fd: -1, tc: tc})
			continue
		}
		fd, err := detach(c)
		if err != nil {
			return nil, fmt.Errorf("detach: %w", err)
		}
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
		if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
		for len(rc.conns) <= fd {
			rc.conns = append(rc.conns, nil)
		}
		cn := &conn{fd: fd}
		rc.conns[fd] = cn
		rc.all = append(rc.all, cn)
	}
	return rc, nil
}

// run reads until stop is set (checked every 50 ms at least).
func (rc *receiver) run() {
	defer close(rc.done)
	for _, c := range rc.all {
		if c.tc != nil {
			go rc.readTLS(c)
		}
	}
	events := make([]syscall.EpollEvent, 512)
	buf := make([]byte, 256<<10)
	for !rc.stop.Load() {
		if rc.waitMs == 0 {
			runtime.Gosched() // GOMAXPROCS=1: let the publisher run on time
		}
		n, err := syscall.EpollWait(rc.epfd, events, rc.waitMs)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			rc.st.ended("epoll_wait: " + err.Error())
			return
		}
		if n == 0 {
			continue
		}
		t := time.Now()
		for _, ev := range events[:n] {
			if c := rc.conns[ev.Fd]; c != nil && !c.dead {
				rc.read(c, buf)
			}
		}
		rc.busy.Add(int64(time.Since(t)))
	}
}

func (rc *receiver) read(c *conn, buf []byte) {
	k := copy(buf, c.left)
	n, err := syscall.Read(c.fd, buf[k:])
	if n <= 0 {
		if err == syscall.EAGAIN || err == syscall.EINTR {
			return
		}
		why := "connection closed by the server without a close frame"
		if err != nil {
			why = "read: " + err.Error()
		}
		rc.end(c, why)
		return
	}
	now := time.Now().UnixNano()
	data := buf[:k+n]
	used, why := rc.parse(c, data, now)
	if why != "" {
		rc.end(c, why)
		return
	}
	if len(data)-used > len(buf)/2 {
		rc.end(c, "frame larger than the read buffer")
		return
	}
	c.left = append(c.left[:0], data[used:]...)
}

func (rc *receiver) end(c *conn, why string) {
	c.dead = true
	if c.tc != nil {
		c.tc.Close()
	} else {
		syscall.EpollCtl(rc.epfd, syscall.EPOLL_CTL_DEL, c.fd, nil)
		syscall.Close(c.fd)
	}
	rc.st.ended(why)
}

// readTLS reads a wss connection until it ends or the process does. Frames
// are parsed under rc.tlsMu, one connection at a time, as the epoll loop
// parses the plain ones.
func (rc *receiver) readTLS(c *conn) {
	buf := make([]byte, 64<<10)
	for {
		k := copy(buf, c.left)
		n, err := c.tc.Read(buf[k:])
		rc.tlsMu.Lock()
		if n <= 0 {
			if !c.dead {
				why := "connection closed by the server without a close frame"
				if err != nil {
					why = "read: " + err.Error()
				}
				rc.end(c, why)
			}
			rc.tlsMu.Unlock()
			return
		}
		t := time.Now()
		data := buf[:k+n]
		used, why := rc.parse(c, data, t.UnixNano())
		switch {
		case why != "":
			rc.end(c, why)
		case len(data)-used > len(buf)/2:
			rc.end(c, "frame larger than the read buffer")
		default:
			c.left = append(c.left[:0], data[used:]...)
		}
		rc.busy.Add(int64(time.Since(t)))
		dead := c.dead
		rc.tlsMu.Unlock()
		if dead {
			return
		}
	}
}

var marker = []byte(`"bt":`)

// parse handles the complete frames in data and returns how many bytes
// they took, or why the connection ends.
func (rc *receiver) parse(c *conn, data []byte, now int64) (int, string) {
	st := rc.st
	start, got := 0, 0
	defer func() {
		if got > 0 {
			c.got += int64(got)
			st.total.Add(uint64(got))
			st.lastRecv = now
		}
	}()
	for len(data)-start >= 2 {
		b0, b1 := data[start], data[start+1]
		hdr, n := 2, int(b1&0x7f)
		switch n {
		case 126:
			if len(data)-start < 4 {
				return start, ""
			}
			hdr, n = 4, int(binary.BigEndian.Uint16(data[start+2:]))
		case 127:
			if len(data)-start < 10 {
				return start, ""
			}
			hdr, n = 10, int(binary.BigEndian.Uint64(data[start+2:]))
		}
		if b1&0x80 != 0 {
			return start, "masked frame from the server"
		}
		if len(data)-start < hdr+n {
			return start, ""
		}
		p := data[start+hdr : start+hdr+n]
		start += hdr + n
		switch b0 & 0x0f {
		case 0x0, 0x1, 0x2: // continuation, text, binary
			if rc.centrifugo && len(p) == 2 && p[0] == '{' && p[1] == '}' {
				c.write(clientFrame(0x1, p)) // Centrifugo's ping: answer {}
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
			c.write(clientFrame(0x8, nil))
			return start, fmt.Sprintf("closed by the server: %d %s", code, p)
		case 0x9:
			c.write(clientFrame(0xA, p))
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
	if p.rdb != nil && p.lc.fcall {
		// As a backend publishes into edge's history: the payload only, so
		// the library's history size and ttl apply.
		return p.rdb.FCall(ctx, "edge_publish", []string{p.lc.channel}, payload).Err()
	}
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
	loadBusy                 float64
}

func (r *loadResult) line() string {
	rate := 0.0
	if r.window > 0 {
		rate = float64(r.deliveries) / r.window
	}
	s := fmt.Sprintf("result conns=%d dial_errors=%d published=%d publish_errors=%d publish_s=%.2f window_s=%.2f "+
		"deliveries=%d expected=%d lost=%d dup=%d closed=%d rate=%.0f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f load_cpu=%.1f load_busy=%.1f",
		r.conns, r.dialErrors, r.published, r.pubErrors, r.pubSeconds, r.window,
		r.deliveries, r.expected, r.lost, r.dup, r.closed, rate, r.p50, r.p99, r.maxMs, r.loadCPU, r.loadBusy)
	if r.firstEnd != "" {
		s += fmt.Sprintf(" first_end=%q", r.firstEnd)
	}
	return s
}

// measure publishes rate×dur messages on a fixed schedule, waits for the
// deliveries (at most lc.drain after the last publish) and sums up.
func measure(lc *loadConfig, rc *receiver, pub *publisher) *loadResult {
	total := int(lc.rate * lc.dur.Seconds())
	interval := float64(time.Second) / lc.rate
	ctx := context.Background()
	st := rc.st
	res := &loadResult{conns: len(rc.all)}

	fmt.Println("measuring")
	cpu0, busy0 := cpuTime(), rc.busy.Load()
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
	res.expected = uint64(res.published) * uint64(len(rc.all))
	deadline := time.Now().Add(lc.drain)
	for st.total.Load() < res.expected && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	rc.stop.Store(true)
	<-rc.done
	el := time.Since(t0).Seconds()
	res.loadCPU = 100 * (cpuTime() - cpu0).Seconds() / el
	res.loadBusy = 100 * time.Duration(rc.busy.Load()-busy0).Seconds() / el
	fmt.Println("done")

	end := time.Unix(0, st.lastRecv)
	if st.lastRecv == 0 || end.Before(t0) {
		end = time.Now()
	}
	// The nominal publishing time at least: the last message is sent one
	// interval before it ends.
	res.window = max(end.Sub(t0).Seconds(), float64(res.published)/lc.rate)
	for _, c := range rc.all {
		got := uint64(c.got)
		res.deliveries += got
		if got < uint64(res.published) {
			res.lost += uint64(res.published) - got
		} else {
			res.dup += got - uint64(res.published)
		}
	}
	res.closed = st.closed
	res.firstEnd = st.firstEnd
	res.p50, res.p99 = st.percentile(0.50), st.percentile(0.99)
	res.maxMs = float64(st.maxNs) / 1e6
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
