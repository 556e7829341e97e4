// Command tlsload measures new TLS connections per second: each of -c
// workers loops over connect, a full TLS 1.3 handshake (no session cache,
// so never a resumption; X25519 only, so every server does the same key
// exchange), one GET with "Connection: close", reading the response to
// EOF. Waiting for the server's close keeps TIME_WAIT mostly on the server
// side, so the client does not run out of ports. (wrk cannot do this job:
// it reuses its OpenSSL session when it reconnects, so its connections are
// resumptions.)
//
// It prints "measuring" when the measured window starts and "done" when it
// ends (the harness samples the server's CPU time at those points), then
// one result line: conns/s, p50 and p99 of the whole connection in ms,
// errors.
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"

	"edge/bench/internal/loadgen"
)

func main() {
	rawURL := flag.String("url", "https://127.0.0.1:20443/static/1k.bin", "URL to GET")
	conns := flag.Int("c", 64, "concurrent workers")
	dur := flag.Duration("d", 5*time.Second, "measured duration")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warmup before the measured window")
	serverName := flag.String("servername", "localhost", "SNI and Host")
	flag.Parse()

	u, err := url.Parse(*rawURL)
	if err != nil {
		fail(err)
	}
	cfg := &tls.Config{
		ServerName:         *serverName,
		InsecureSkipVerify: true, // the CertificateVerify signature is still checked
		MinVersion:         tls.VersionTLS13,
		MaxVersion:         tls.VersionTLS13,
		CurvePreferences:   []tls.CurveID{tls.X25519},
		NextProtos:         []string{"http/1.1"},
		ClientSessionCache: nil, // no resumption: every handshake is a full one
	}
	req := []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + *serverName + "\r\nConnection: close\r\n\r\n")

	brs := make([]*bufio.Reader, *conns)
	for i := range brs {
		brs[i] = bufio.NewReaderSize(nil, 4096)
	}
	r := loadgen.ClosedLoop(*conns, *warmup, *dur, func(i int) error {
		return once(u.Host, cfg, req, brs[i])
	}, func(s string) { fmt.Println(s) })
	fmt.Printf("conns_per_s=%.1f p50_ms=%.3f p99_ms=%.3f errors=%d\n",
		r.Rate, loadgen.Millis(r.P50), loadgen.Millis(r.P99), r.Errors)
}

// once runs one connection: dial, handshake, request, response to EOF.
func once(addr string, cfg *tls.Config, req []byte, br *bufio.Reader) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	c := tls.Client(raw, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return err
	}
	if _, err := c.Write(req); err != nil {
		return err
	}
	br.Reset(c)
	resp, err := http.ReadResponse(br, nil)
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
	// Wait for the server's close so that it, rather than we, mostly holds
	// TIME_WAIT.
	io.Copy(io.Discard, br)
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlsload:", err)
	os.Exit(1)
}
