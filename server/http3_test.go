package server

import (
	"context"
	"crypto/rand"
	cryptotls "crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Get sends GET / on cc and returns the body.
func h3Get(t *testing.T, cc *http3.ClientConn) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://x/", nil)
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func dialH3(addr string, cconf *cryptotls.Config) (*quic.Conn, *http3.ClientConn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c := cconf.Clone()
	c.NextProtos = []string{http3.NextProtoH3}
	conn, err := quic.DialAddr(ctx, addr, c, &quic.Config{HandshakeIdleTimeout: time.Second})
	if err != nil {
		return nil, nil, err
	}
	return conn, (&http3.Transport{}).NewClientConn(conn), nil
}

// altSvc returns the Alt-Svc header of GET / over TCP.
func altSvc(t *testing.T, addr string, cconf *cryptotls.Config) string {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: cconf}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get("Alt-Svc")
}

// TestHTTP3Reload turns HTTP/3 on and off on a kept HTTPS listener: a
// taken UDP port fails the Apply and changes nothing; a reload with
// HTTP/3 on keeps the UDP socket and its QUIC connections and swaps the
// handler under them; turning it off closes the socket and drops Alt-Svc.
// Garbage datagrams on the port do not disturb it.
func TestHTTP3Reload(t *testing.T) {
	sconf, cconf := selfSigned(t)
	s := New(quietLog())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	spec := func(h http.Handler, h3 bool) []Listener {
		return []Listener{{Name: "https", Addr: addr, TLS: sconf, Handler: h, HTTP3: h3}}
	}
	opts := Options{ReadHeaderTimeout: time.Second, IdleTimeout: 10 * time.Second}
	if err := s.Apply(spec(text("v0"), false), opts, time.Second); err != nil {
		t.Fatal(err)
	}
	if got := altSvc(t, addr, cconf); got != "" || s.UDPAddr("https") != nil {
		t.Errorf("without http3: Alt-Svc %q, UDP %v; want neither", got, s.UDPAddr("https"))
	}

	taken, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(spec(text("v1"), true), opts, time.Second); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Apply with the UDP port taken = %v, want the bind error", err)
	}
	taken.Close()
	if got := altSvc(t, addr, cconf); got != "" {
		t.Errorf("after the failed Apply: Alt-Svc %q, want none", got)
	}

	if err := s.Apply(spec(text("v1"), true), opts, time.Second); err != nil {
		t.Fatal(err)
	}
	port := addr[strings.LastIndex(addr, ":")+1:]
	if got, want := altSvc(t, addr, cconf), `h3=":`+port+`"; ma=86400`; got != want {
		t.Errorf("Alt-Svc %q, want %q", got, want)
	}
	conn, cc, err := dialH3(addr, cconf)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	if body, err := h3Get(t, cc); body != "v1" || err != nil {
		t.Errorf("HTTP/3 GET = %q %v, want v1", body, err)
	}

	// Garbage on the UDP port: random datagrams and a truncated Initial.
	junk, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1200)
	for i := range 500 {
		rand.Read(buf)
		if i%2 == 0 {
			buf[0] = 0xc0 // long header, as an Initial packet
		}
		junk.Write(buf[:1+i%len(buf)])
	}
	junk.Close()

	if err := s.Apply(spec(text("v2"), true), opts, time.Second); err != nil {
		t.Fatal(err)
	}
	if body, err := h3Get(t, cc); body != "v2" || err != nil {
		t.Errorf("after a reload, on the same QUIC connection: %q %v, want v2", body, err)
	}

	if err := s.Apply(spec(text("v3"), false), opts, time.Second); err != nil {
		t.Fatal(err)
	}
	if got := altSvc(t, addr, cconf); got != "" || s.UDPAddr("https") != nil {
		t.Errorf("http3 turned off: Alt-Svc %q, UDP %v; want neither", got, s.UDPAddr("https"))
	}
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Error("the QUIC connection is still open after http3 was turned off")
	}
	if c, _, err := dialH3(addr, cconf); err == nil {
		c.CloseWithError(0, "")
		t.Error("a QUIC handshake succeeded after http3 was turned off")
	}
}
