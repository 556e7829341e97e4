// Command wsload is the WebSocket load of the benchmarks, in two modes.
//
// echo: open -c connections, then each sends a -size byte text message and
// waits for its echo, in a loop. Prints "measuring" and "done" around the
// measured window (the harness samples the server's CPU time there), then
// one result line: msgs_per_s (round trips per second), p50_ms, p99_ms,
// errors.
//
// idle: open -c connections, do one echo round trip on each so that the
// whole path has carried data, print "ready N errors E" and hold them idle
// until stdin closes (or -hold passes), so that the harness can read the
// server's memory.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"edge/bench/internal/loadgen"
)

func main() {
	rawURL := flag.String("url", "wss://localhost:20443/ws", "WebSocket URL; the host name is sent as SNI and Host, the connection goes to -connect")
	connect := flag.String("connect", "127.0.0.1", "IP address to connect to (the URL's port is kept)")
	mode := flag.String("mode", "echo", "echo or idle")
	conns := flag.Int("c", 1000, "connections")
	dur := flag.Duration("d", 5*time.Second, "measured duration (echo)")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warmup (echo)")
	size := flag.Int("size", 64, "message size in bytes (echo)")
	dialers := flag.Int("dial-concurrency", 64, "connections opened in parallel")
	hold := flag.Duration("hold", 2*time.Minute, "longest time idle connections are held (idle)")
	flag.Parse()

	u, err := url.Parse(*rawURL)
	if err != nil {
		fail(err)
	}
	addr := net.JoinHostPort(*connect, u.Port())
	d := &websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: true, ServerName: u.Hostname()},
		HandshakeTimeout: 10 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}
	cs, dialErrs := loadgen.DialAll(*conns, *dialers, func() (*websocket.Conn, error) {
		c, resp, err := d.Dial(u.String(), nil)
		if err != nil && resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		return c, err
	})
	if len(cs) == 0 {
		fail(fmt.Errorf("no connection opened (%d errors): %w", dialErrs.N(), dialErrs.First()))
	}
	msg := bytes.Repeat([]byte("m"), *size)
	switch *mode {
	case "echo":
		echo(cs, msg, *warmup, *dur, dialErrs.N())
	case "idle":
		idle(cs, msg, *hold, dialErrs.N())
	default:
		fail(fmt.Errorf("unknown mode %q", *mode))
	}
}

func echo(cs []*websocket.Conn, msg []byte, warmup, dur time.Duration, dialErrs int) {
	var (
		measuring atomic.Bool
		stop      atomic.Bool
		errs      atomic.Int64
		wg        sync.WaitGroup
	)
	end := time.Now().Add(warmup + dur + 10*time.Second)
	lat := make([][]time.Duration, len(cs))
	for i, c := range cs {
		wg.Go(func() {
			defer c.Close()
			c.SetReadDeadline(end)
			c.SetWriteDeadline(end)
			for !stop.Load() {
				start := time.Now()
				if err := roundTrip(c, msg); err != nil {
					errs.Add(1)
					return
				}
				if measuring.Load() && !stop.Load() {
					lat[i] = append(lat[i], time.Since(start))
				}
			}
		})
	}
	time.Sleep(warmup)
	fmt.Println("measuring")
	begin := time.Now()
	measuring.Store(true)
	time.Sleep(dur)
	stop.Store(true)
	elapsed := time.Since(begin)
	fmt.Println("done")
	wg.Wait()

	all := slices.Concat(lat...)
	slices.Sort(all)
	fmt.Printf("msgs_per_s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d conns=%d\n",
		float64(len(all))/elapsed.Seconds(), loadgen.Millis(loadgen.Percentile(all, 0.50)), loadgen.Millis(loadgen.Percentile(all, 0.99)), errs.Load()+int64(dialErrs), len(cs))
}

func roundTrip(c *websocket.Conn, msg []byte) error {
	if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
		return err
	}
	_, got, err := c.ReadMessage()
	if err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

func idle(cs []*websocket.Conn, msg []byte, hold time.Duration, dialErrs int) {
	errs := dialErrs
	var wg sync.WaitGroup
	var mu sync.Mutex
	sem := make(chan struct{}, 64)
	for _, c := range cs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := roundTrip(c, msg); err != nil {
				mu.Lock()
				errs++
				mu.Unlock()
			}
			c.SetReadDeadline(time.Time{})
		})
	}
	wg.Wait()
	fmt.Printf("ready %d errors %d\n", len(cs), errs)
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(hold):
	}
	for _, c := range cs {
		c.Close()
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "wsload:", err)
	os.Exit(1)
}
