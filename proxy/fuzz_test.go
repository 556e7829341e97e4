package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"edge/config"
	edgeserver "edge/server"
)

// fuzzSeeds are the hostile requests of issue 10 and hostile_test.go, and
// a few well-formed ones.
var fuzzSeeds = []string{
	"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
	chunkedPost + "5\r\nhello\r\n0\r\n\r\n",
	chunkedPost + "5\nhello\n0\n\n",
	chunkedPost + "ZZ\r\nhello\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
	"TRACE / HTTP/1.1\r\nHost: a\r\nCookie: session=secret\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Edge-Verified, X-Forwarded-For, X-Real-IP, Forwarded\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
	"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
}

// fuzzRig is a front server (the router with a route that sets a header,
// over a proxy) and a recording upstream, shared by the inputs of one fuzz
// process. Each input's requests carry its number in the query, so that
// the upstream's count per input can be compared with the front's.
type fuzzRig struct {
	addr   string
	nextID atomic.Int64

	mu       sync.Mutex
	front    map[string]int // guarded by mu: requests the front handled, by input
	upstream map[string]int // guarded by mu: requests the upstream received, by input
	missing  []string       // guarded by mu: headers edge sets that the upstream lacked
}

func newFuzzRig(f *testing.F) *fuzzRig {
	rig := &fuzzRig{front: map[string]int{}, upstream: map[string]int{}}
	up := httptest.NewServer(http.HandlerFunc(rig.record))
	f.Cleanup(up.Close)
	yaml := "listen: {http: \"127.0.0.1:0\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: /\n" +
		"        headers: {request: {set: {X-Edge-Verified: \"yes\"}}}\n" +
		"        proxy: {upstreams: [\"" + up.URL + "\"], response_header_timeout: 2s}\n"
	cfg, err := config.Parse("edge.yaml", []byte(yaml))
	if err != nil {
		f.Fatal(err)
	}
	router, err := edgeserver.NewRouter(cfg, func(_ *config.Site, r *config.Route) (http.Handler, error) {
		return newHandler(f, r.Proxy, Options{}), nil
	}, nil)
	if err != nil {
		f.Fatal(err)
	}
	base := front(f, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strconv.FormatInt(rig.nextID.Load(), 10)
		rig.mu.Lock()
		rig.front[id]++
		rig.mu.Unlock()
		r.URL.RawQuery = "fuzz=" + id
		// client_body_timeout, short.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Second))
		router.ServeHTTP(w, r)
	}), func(s *http.Server) { s.ReadHeaderTimeout = time.Second })
	rig.addr = strings.TrimPrefix(base, "http://")
	return rig
}

// record is the upstream: it counts the request under its input and checks
// the headers edge sets.
func (rig *fuzzRig) record(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	rig.mu.Lock()
	defer rig.mu.Unlock()
	rig.upstream[r.URL.Query().Get("fuzz")]++
	for k, want := range map[string]string{"X-Edge-Verified": "yes", "X-Forwarded-For": "127.0.0.1",
		"X-Real-Ip": "127.0.0.1", "X-Forwarded-Proto": "http"} {
		if v := r.Header.Values(k); len(v) != 1 || v[0] != want {
			rig.missing = append(rig.missing, fmt.Sprintf("%s %s: %s = %q, want %q", r.Method, r.URL, k, v, want))
		}
	}
	if len(r.Header.Values("X-Forwarded-Host")) != 1 {
		rig.missing = append(rig.missing, fmt.Sprintf("%s %s: X-Forwarded-Host = %q", r.Method, r.URL, r.Header.Values("X-Forwarded-Host")))
	}
}

// send writes raw on a new connection as input id, shuts the write side
// and reads until the server closes or a short deadline.
func (rig *fuzzRig) send(t *testing.T, raw []byte) {
	rig.nextID.Add(1)
	c, err := net.Dial("tcp", rig.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write(raw)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

// check fails t if an upstream got more requests than the front handled
// for some input, or lacked a header edge sets. Late upstream requests of
// an earlier input are caught by a later check.
func (rig *fuzzRig) check(t *testing.T, raw []byte) {
	rig.mu.Lock()
	defer rig.mu.Unlock()
	for id, n := range rig.upstream {
		if n > rig.front[id] {
			t.Errorf("input %s (%q): the upstream received %d requests, the front handled %d", id, raw, n, rig.front[id])
		}
	}
	for _, m := range rig.missing {
		t.Errorf("input %q: %s", raw, m)
	}
	rig.missing = nil
}

// FuzzProxyRequest sends raw HTTP/1.1 bytes through a real front server,
// the router and the proxy to a recording upstream: the upstream never
// receives more requests than the front server handled (no smuggled
// request), and every request it receives carries the headers edge sets.
func FuzzProxyRequest(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	rig := newFuzzRig(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > 64<<10 {
			return
		}
		rig.send(t, raw)
		rig.check(t, raw)
	})
}
