package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/config"
)

// BenchmarkRouter measures what routing, limits and metrics add to a
// request, with a handler that writes 1 KiB.
func BenchmarkRouter(b *testing.B) {
	cfg, err := config.Parse("bench.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - hosts: [a.example.test, "*.b.example.test"]
    routes:
      - { path: /, proxy: { upstreams: ["http://127.0.0.1:1"] } }
      - { path: /static/, proxy: { upstreams: ["http://127.0.0.1:1"] } }
      - { path: /socket/, proxy: { upstreams: ["http://127.0.0.1:1"] } }
`))
	if err != nil {
		b.Fatal(err)
	}
	body := make([]byte, 1024)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	build := func(*config.Site, *config.Route) (http.Handler, error) { return h, nil }
	for _, tc := range []struct {
		name string
		m    *Metrics
	}{{"bare", nil}, {"metrics", NewMetrics(prometheus.NewRegistry())}} {
		rt, err := NewRouter(cfg, build, tc.m)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "http://a.example.test/static/app.js", nil)
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				w.Body.Reset()
				rt.ServeHTTP(w, req)
			}
		})
	}
	b.Run("handler-only", func(b *testing.B) {
		req := httptest.NewRequest("GET", "http://a.example.test/static/app.js", nil)
		w := httptest.NewRecorder()
		b.ReportAllocs()
		for b.Loop() {
			w.Body.Reset()
			h.ServeHTTP(w, req)
		}
	})
}

// browserGET is a typical browser request, about 500 bytes.
const browserGET = "GET /static/app.3f9a1c.js HTTP/1.1\r\nHost: dash.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n" +
	"Accept: */*\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n" +
	"Referer: https://dash.example.com/\r\nSec-Fetch-Dest: script\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Site: same-origin\r\n" +
	"Cookie: session=4f1d2c3b5a6e7f8091a2b3c4d5e6f708; theme=dark\r\nConnection: keep-alive\r\n\r\n"

// BenchmarkFraming measures what the HTTP/1 framing guard adds to each
// request it follows: one pass over the header bytes.
func BenchmarkFraming(b *testing.B) {
	f := &framing{st: &connState{}}
	p := []byte(browserGET)
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		f.feed(p)
	}
	if f.st.badAt.Load() != 0 || f.state != stRequestLine {
		b.Fatal("clean request refused")
	}
}

// BenchmarkListenerHTTP1 measures one keep-alive request and its response
// through a Server listener on loopback (everything the server adds to a
// connection: limits, framing guard, per-connection rules).
func BenchmarkListenerHTTP1(b *testing.B) {
	s := New(quietLog())
	defer s.Shutdown(context.Background())
	if err := s.Apply([]Listener{{Name: "http", Addr: "127.0.0.1:0", Handler: text("ok")}}, Options{}, time.Second); err != nil {
		b.Fatal(err)
	}
	c, err := net.Dial("tcp", s.Addr("http").String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte(browserGET)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
