package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/testutil"
)

// TestProxyProtocolClientIdentity runs the binary behind a "balancer" (the
// test, on loopback, which listen.proxy_protocol trusts): the address in
// the PROXY header is the client for the upstream's X-Forwarded-For, the
// access log and access rules.
func TestProxyProtocolClientIdentity(t *testing.T) {
	var mu sync.Mutex
	var xff []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		xff = append(xff, r.Header.Get("X-Forwarded-For"))
		mu.Unlock()
		io.WriteString(w, "backend")
	}))
	defer backend.Close()

	dir := t.TempDir()
	logFile := filepath.Join(dir, "access.log")
	httpAddr, adminAddr := freePort(t), freePort(t)
	cfg := writeFile(t, dir, "edge.yaml", fmt.Sprintf(`
listen:
  http: %q
  proxy_protocol: { trusted: [127.0.0.0/8], timeout: 2s }
admin: %q
sites:
  - access_log: { file: %s }
    access: ["deny 203.0.113.66"]
    routes:
      - path: /
        proxy: { upstreams: [%q] }
`, httpAddr, adminAddr, logFile, backend.URL))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)

	send := func(header string) (int, string) {
		t.Helper()
		c, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, header+"GET /x HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	v2 := "\r\n\r\n\x00\r\nQUIT\n" + "\x21\x21\x00\x24" + // PROXY, TCP over IPv6, 36 bytes
		string(net.ParseIP("2001:db8::7")) + string(net.ParseIP("2001:db8::1")) + "\x12\x34\x01\xbb"
	for _, tc := range []struct {
		name, header, client string
	}{
		{"v1", "PROXY TCP4 203.0.113.7 192.0.2.1 4711 80\r\n", "203.0.113.7"},
		{"v2 ipv6", v2, "2001:db8::7"},
	} {
		code, body := send(tc.header)
		if code != 200 || body != "backend" {
			t.Fatalf("%s: %d %q", tc.name, code, body)
		}
		mu.Lock()
		got := xff[len(xff)-1]
		mu.Unlock()
		if got != tc.client {
			t.Errorf("%s: upstream X-Forwarded-For = %q, want %q", tc.name, got, tc.client)
		}
		testutil.WaitFor(t, 5*time.Second, tc.name+" client in the access log", func() bool {
			b, _ := os.ReadFile(logFile)
			return strings.Contains(string(b), "\n"+tc.client+" ") || strings.HasPrefix(string(b), tc.client+" ")
		})
	}
	if code, _ := send("PROXY TCP4 203.0.113.66 192.0.2.1 4711 80\r\n"); code != http.StatusForbidden {
		t.Errorf("denied client behind the balancer: %d, want 403", code)
	}
	// Without the header a trusted peer is refused (required by default).
	if code, body := send(""); code != 0 {
		t.Errorf("no header from the balancer: %d %q, want the connection closed", code, body)
	}
	mu.Lock()
	n := len(xff)
	mu.Unlock()
	if n != 2 {
		t.Errorf("upstream saw %d requests, want 2", n)
	}
}

func TestValidateProxyProtocol(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "edge.yaml", `listen:
  http: "127.0.0.1:0"
  proxy_protocol:
    trusted: [10.0.0.0/33]
sites:
  - routes: [{ path: /, respond: { body: ok } }]
`)
	_, errOut, code := runEdge(t, "validate", "-config", cfg)
	if want := cfg + ":4:15: listen.proxy_protocol.trusted[0]: invalid CIDR"; code == 0 || !strings.Contains(errOut, want) {
		t.Errorf("validate = %d %q, want %q", code, errOut, want)
	}
}
