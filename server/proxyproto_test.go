package server

import (
	"bufio"
	"context"
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// ppServer runs one http listener (TLS when tlsConf is set) with PROXY
// protocol from pp; its handler answers the request's RemoteAddr and
// counts the requests it served.
func ppServer(t *testing.T, pp *ProxyProtocol, opts Options, tlsConf *cryptotls.Config) (*Server, string, *atomic.Int32) {
	t.Helper()
	var served atomic.Int32
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		io.WriteString(w, r.RemoteAddr)
	})
	s := New(quietLog())
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	opts.ProxyProtocol = pp
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: h, TLS: tlsConf}}, opts, time.Second); err != nil {
		t.Fatal(err)
	}
	return s, s.Addr("http").String(), &served
}

func loopbackTrusted(timeout time.Duration) *ProxyProtocol {
	return &ProxyProtocol{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Timeout: timeout, Required: true}
}

func v2Header(t *testing.T, src, dst string) []byte {
	t.Helper()
	s, _ := net.ResolveTCPAddr("tcp", src)
	d, _ := net.ResolveTCPAddr("tcp", dst)
	b, err := proxyproto.HeaderProxyFromAddrs(2, s, d).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v2Local(t *testing.T) []byte {
	t.Helper()
	b, err := (&proxyproto.Header{Version: 2, Command: proxyproto.LOCAL, TransportProtocol: proxyproto.UNSPEC}).Format()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// exchange writes pre and a GET on a new connection and returns the
// response body, or the error that ended the read (the connection closed
// without an answer).
func exchange(t *testing.T, addr string, pre []byte) (string, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(append(pre, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"...))
	return readBody(c)
}

func readBody(c net.Conn) (string, error) {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestProxyProtocolTrustedHeaderIsTheClient(t *testing.T) {
	_, addr, _ := ppServer(t, loopbackTrusted(2*time.Second), Options{}, nil)
	for _, tc := range []struct {
		name, want string
		header     []byte
	}{
		{"v1 tcp4", "203.0.113.7:4711", []byte("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443\r\n")},
		{"v1 tcp6", "[2001:db8::7]:4711", []byte("PROXY TCP6 2001:db8::7 2001:db8::1 4711 443\r\n")},
		{"v2 ipv4", "198.51.100.9:5000", v2Header(t, "198.51.100.9:5000", "192.0.2.1:80")},
		{"v2 ipv6", "[2001:db8::9]:5000", v2Header(t, "[2001:db8::9]:5000", "[2001:db8::1]:80")},
		// A balancer's own health check: the peer stays the client.
		{"v2 local", "127.0.0.1:", v2Local(t)},
		{"v1 unknown", "127.0.0.1:", []byte("PROXY UNKNOWN\r\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := exchange(t, addr, tc.header)
			if err != nil {
				t.Fatalf("no response: %v", err)
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("RemoteAddr = %q, want %s…", got, tc.want)
			}
		})
	}
}

// TestProxyProtocolUntrustedHeaderRefused: a client that is not a trusted
// balancer cannot claim an address; without a header it is served as
// itself, whatever its method's first letter.
func TestProxyProtocolUntrustedHeaderRefused(t *testing.T) {
	pp := &ProxyProtocol{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Required: true}
	_, addr, served := ppServer(t, pp, Options{}, nil)
	for name, header := range map[string][]byte{
		"v1": []byte("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443\r\n"),
		"v2": v2Header(t, "198.51.100.9:5000", "192.0.2.1:80"),
	} {
		if got, err := exchange(t, addr, header); err == nil {
			t.Errorf("%s header from an untrusted peer was served: %q", name, got)
		}
	}
	if n := served.Load(); n != 0 {
		t.Fatalf("handler ran %d times for refused connections", n)
	}
	got, err := exchange(t, addr, nil)
	if err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("plain GET from an untrusted peer = %q, %v; want served as 127.0.0.1", got, err)
	}
	// A POST starts with the same letter as PROXY, and arrives in pieces.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, piece := range []string{"P", "OS", "T / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"} {
		c.Write([]byte(piece))
		time.Sleep(5 * time.Millisecond) // separate segments, not a wait for a result
	}
	if got, err := readBody(c); err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("POST in pieces = %q, %v", got, err)
	}
}

// TestProxyProtocolSilentPeerDoesNotBlockAccept: a trusted peer that
// connects and sends nothing is closed after the timeout, and other
// connections are served meanwhile.
func TestProxyProtocolSilentPeerDoesNotBlockAccept(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	_, addr, _ := ppServer(t, loopbackTrusted(timeout), Options{}, nil)
	var silent []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	start := time.Now()
	got, err := exchange(t, addr, []byte("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443\r\n"))
	if err != nil || !strings.HasPrefix(got, "203.0.113.7:") {
		t.Fatalf("request behind silent peers = %q, %v", got, err)
	}
	if d := time.Since(start); d >= timeout {
		t.Fatalf("request behind silent peers took %v, not less than their %v timeout: accept waited for them", d, timeout)
	}
	for i, c := range silent {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := c.Read(make([]byte, 64))
		if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("silent connection %d: read %d bytes, %v; want closed", i, n, err)
		}
	}
	if d := time.Since(start); d < timeout/2 || d > timeout+5*time.Second {
		t.Errorf("silent peers closed after %v, want about %v", d, timeout)
	}
}

// TestProxyProtocolMalformed: bad headers from a trusted peer close the
// connection without serving it and without waiting long.
func TestProxyProtocolMalformed(t *testing.T) {
	const timeout = time.Second
	_, addr, served := ppServer(t, loopbackTrusted(timeout), Options{}, nil)
	sig := "\r\n\r\n\x00\r\nQUIT\n"
	for _, tc := range []struct {
		name   string
		header string
	}{
		{"garbage", "\x16\x03\x01 not a header at all\r\n"},
		{"no header", ""}, // required: a plain request is refused
		{"v1 bad family", "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"},
		{"v1 bad address", "PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\n"},
		{"v1 too long", "PROXY TCP4 " + strings.Repeat("1", 200) + "\r\n"},
		{"v1 no crlf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"},
		{"v2 truncated", sig + "\x21\x11\x00"},
		{"v2 length 64KiB", sig + "\x21\x11\xff\xff" + strings.Repeat("\x00", 100)},
		{"v2 short addresses", sig + "\x21\x11\x00\x04\x01\x02\x03\x04"},
		{"v2 bad version", sig + "\x31\x11\x00\x0c" + strings.Repeat("\x01", 12)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			start := time.Now()
			c.Write([]byte(tc.header))
			if !strings.HasPrefix(tc.name, "v2 truncated") {
				c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			b, err := io.ReadAll(c)
			if len(b) > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("got %q, %v; want the connection closed unanswered", b, err)
			}
			if d := time.Since(start); d > timeout+3*time.Second {
				t.Errorf("closed after %v; the header timeout is %v", d, timeout)
			}
		})
	}
	if n := served.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

// TestProxyProtocolOptional: with required false a trusted peer may
// connect without a header and is then the client itself.
func TestProxyProtocolOptional(t *testing.T) {
	pp := loopbackTrusted(time.Second)
	pp.Required = false
	_, addr, _ := ppServer(t, pp, Options{}, nil)
	if got, err := exchange(t, addr, nil); err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("no header = %q, %v", got, err)
	}
	if got, err := exchange(t, addr, []byte("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443\r\n")); err != nil || !strings.HasPrefix(got, "203.0.113.7:") {
		t.Errorf("with header = %q, %v", got, err)
	}
}

// TestProxyProtocolPerIPLimitCountsTheClient: max_connections_per_ip
// counts the address in the header, not the balancer's.
func TestProxyProtocolPerIPLimitCountsTheClient(t *testing.T) {
	_, addr, _ := ppServer(t, loopbackTrusted(2*time.Second), Options{MaxConnsPerIP: 1}, nil)
	open := func(client string) (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "PROXY TCP4 %s 192.0.2.1 4711 443\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", client)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			resp.Body.Close()
		}
		return c, err
	}
	// Two clients behind one balancer (one peer address) are both served
	// and held open: the cap is per client.
	if _, err := open("203.0.113.1"); err != nil {
		t.Fatalf("first client: %v", err)
	}
	if _, err := open("203.0.113.2"); err != nil {
		t.Fatalf("second client behind the same balancer: %v", err)
	}
	if _, err := open("203.0.113.1"); err == nil {
		t.Fatal("a second connection of 203.0.113.1 was served over max_connections_per_ip 1")
	}
}

// TestProxyProtocolBeforeTLS: on an HTTPS listener the header comes
// first, then the TLS handshake, HTTP/1.1 and HTTP/2 alike.
func TestProxyProtocolBeforeTLS(t *testing.T) {
	sconf, cconf := selfSigned(t)
	_, addr, _ := ppServer(t, loopbackTrusted(2*time.Second), Options{}, sconf)
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto, func(t *testing.T) {
			tr := &http.Transport{
				TLSClientConfig:   cconf.Clone(),
				ForceAttemptHTTP2: proto == "h2",
				DialContext: func(ctx context.Context, n, a string) (net.Conn, error) {
					c, err := (&net.Dialer{}).DialContext(ctx, n, a)
					if err == nil {
						_, err = c.Write(v2Header(t, "198.51.100.9:5000", "192.0.2.1:443"))
					}
					return c, err
				},
			}
			tr.TLSClientConfig.NextProtos = []string{proto}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if !strings.HasPrefix(string(b), "198.51.100.9:5000") || resp.ProtoMajor != map[string]int{"h2": 2, "http/1.1": 1}[proto] {
				t.Errorf("%s: RemoteAddr %q over HTTP/%d", proto, b, resp.ProtoMajor)
			}
		})
	}
}

// TestProxyProtocolReloadChangesTrusted: Apply changes who may send the
// header for new connections on the kept socket, and can turn it off.
func TestProxyProtocolReloadChangesTrusted(t *testing.T) {
	s, addr, _ := ppServer(t, &ProxyProtocol{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Required: true}, Options{}, nil)
	header := []byte("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443\r\n")
	if got, err := exchange(t, addr, header); err == nil {
		t.Fatalf("before the reload a loopback header was served: %q", got)
	}
	apply := func(pp *ProxyProtocol) {
		t.Helper()
		if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, r.RemoteAddr)
		})}}, Options{ProxyProtocol: pp}, time.Second); err != nil {
			t.Fatal(err)
		}
		if got := s.Addr("http").String(); got != addr {
			t.Fatalf("socket rebound: %s", got)
		}
	}
	apply(loopbackTrusted(time.Second))
	if got, err := exchange(t, addr, header); err != nil || !strings.HasPrefix(got, "203.0.113.7:") {
		t.Fatalf("after trusting loopback: %q, %v", got, err)
	}
	apply(nil)
	if got, err := exchange(t, addr, nil); err != nil || !strings.HasPrefix(got, "127.0.0.1:") {
		t.Fatalf("with proxy_protocol off: %q, %v", got, err)
	}
}

// FuzzProxyConnSniff: whatever the first bytes of an untrusted peer, the
// connection either refuses a PROXY signature or passes every byte on
// unchanged, however the reads are sized.
func FuzzProxyConnSniff(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\n", "PROXY TCP4", "POST /", "PRI * HTTP/2.0", "\r\n\r\n\x00\r\nQUIT\n\x21", "\r\n\r\nGET", "P", ""} {
		f.Add([]byte(s), uint8(4096%256))
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, size uint8) {
		a, b := net.Pipe()
		go func() {
			b.Write(data)
			b.Close()
		}()
		refused := false
		c := &proxyConn{wrapped: wrapped{a}, refuse: func() { refused = true }}
		defer c.Close()
		bufSize := int(size)%64 + 1
		var got []byte
		buf := make([]byte, bufSize)
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		isProxy := strings.HasPrefix(string(data), "PROXY") || strings.HasPrefix(string(data), "\r\n\r\n\x00\r\nQUIT\n")
		if refused != isProxy {
			t.Fatalf("refused = %v for %q", refused, data)
		}
		if !isProxy && string(got) != string(data) {
			t.Fatalf("passed on %q, want %q", got, data)
		}
	})
}
