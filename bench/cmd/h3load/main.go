// Command h3load measures requests per second over HTTP/3 (quic-go's
// client) or, with -proto h2, over HTTP/2 with the same loop, so that the
// two protocols are compared with one client's costs. Debian's h2load is
// built without HTTP/3, hence this tool. -c connections each carry -m
// concurrent streams; every stream loops over GET -url and reads the body.
//
// It prints "measuring" when the measured window starts and "done" when it
// ends (the harness samples the server's CPU time at those points), then
// one result line: reqs/s, p50 and p99 of a request in ms, errors.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"edge/bench/internal/loadgen"
)

func main() {
	url := flag.String("url", "https://127.0.0.1:20443/static/1k.bin", "URL to GET")
	proto := flag.String("proto", "h3", "h3 or h2")
	conns := flag.Int("c", 32, "connections")
	streams := flag.Int("m", 10, "concurrent streams per connection")
	dur := flag.Duration("d", 5*time.Second, "measured duration")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warmup before the measured window")
	serverName := flag.String("servername", "localhost", "SNI")
	flag.Parse()

	cfg := &tls.Config{ServerName: *serverName, InsecureSkipVerify: true} // a benchmark certificate
	clients := make([]*http.Client, *conns)
	for i := range clients {
		var rt http.RoundTripper
		switch *proto {
		case "h3":
			rt = &http3.Transport{TLSClientConfig: cfg, QUICConfig: &quic.Config{MaxIncomingStreams: int64(*streams) * 2}}
		case "h2":
			rt = &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxConnsPerHost: 1}
		default:
			fail(fmt.Errorf("-proto %q: want h3 or h2", *proto))
		}
		clients[i] = &http.Client{Transport: rt, Timeout: 10 * time.Second}
	}
	// One request per connection first, so that each opens exactly one.
	for _, c := range clients {
		if err := get(context.Background(), c, *url, *proto); err != nil {
			fail(err)
		}
	}

	phase := func(s string) { fmt.Println(s) }
	r := loadgen.ClosedLoop(*conns**streams, *warmup, *dur, func(i int) error {
		return get(context.Background(), clients[i%*conns], *url, *proto)
	}, phase)
	fmt.Printf("reqs_per_s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
		r.Rate, loadgen.Millis(r.P50), loadgen.Millis(r.P99), r.Errors)
}

// get sends one GET and reads the body; a response over another protocol
// than asked counts as an error.
func get(ctx context.Context, c *http.Client, url, proto string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if want := map[string]int{"h3": 3, "h2": 2}[proto]; resp.ProtoMajor != want {
		return fmt.Errorf("answered over %s, want %s", resp.Proto, proto)
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "h3load:", err)
	os.Exit(1)
}
