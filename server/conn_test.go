package server

import (
	cryptotls "crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"edge/config"
)

// TestHijackedConnKeepsSocket: the guard keeps the plain socket reachable
// for the hub's fan-out after a hijack, and hides it over TLS, where the
// bytes must go through the *tls.Conn.
func TestHijackedConnKeepsSocket(t *testing.T) {
	sconf, cconf := selfSigned(t)
	for _, useTLS := range []bool{false, true} {
		var sock atomic.Bool
		build := func(*config.Site, *config.Route) (http.Handler, error) {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				nc, brw, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer nc.Close()
				if sc, ok := nc.(syscall.Conn); ok {
					if _, err := sc.SyscallConn(); err == nil {
						sock.Store(true)
					}
				}
				brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\nhello")
				brw.Flush()
			}), nil
		}
		var conf *cryptotls.Config
		if useTLS {
			conf = sconf
		}
		addr := edgeListener(t, plainYAML, build, nil, Options{}, conf)
		var c net.Conn
		var err error
		if useTLS {
			cc := cconf.Clone()
			cc.NextProtos = []string{"http/1.1"}
			c, err = cryptotls.Dial("tcp", addr, cc)
		} else {
			c, err = net.Dial("tcp", addr)
		}
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		raw, _ := readUntilClose(c, 5*time.Second)
		c.Close()
		if !strings.HasSuffix(raw, "\r\n\r\nhello") {
			t.Errorf("tls=%v: client read %q", useTLS, raw)
		}
		if sock.Load() == useTLS {
			t.Errorf("tls=%v: hijacked conn exposes a socket: %v", useTLS, sock.Load())
		}
	}
}

// TestPlainHTTPToTLSListener: a plain HTTP request to the HTTPS listener
// gets net/http's readable 400, as before the listener did handshakes.
func TestPlainHTTPToTLSListener(t *testing.T) {
	var got seen
	sconf, _ := selfSigned(t)
	m := NewMetrics(nil)
	addr := edgeListener(t, plainYAML, got.backend, nil, Options{ReadHeaderTimeout: 5 * time.Second, Metrics: m}, sconf)
	raw, closed := rawExchange(t, addr, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 5*time.Second)
	if !strings.HasPrefix(raw, "HTTP/1.0 400 Bad Request") || !closed {
		t.Errorf("got %q (closed %v), want a 400 and the connection closed", raw, closed)
	}
	if n := value(m.refused.WithLabelValues(RefusedPlainHTTP)); n != 1 {
		t.Errorf("edge_http_refused_total{reason=plain_http} = %v, want 1", n)
	}
}
