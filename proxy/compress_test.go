package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/testutil"
)

// jsonBody is a 16 KiB JSON document, the size of a typical API answer.
var jsonBody = func() string {
	var b strings.Builder
	b.WriteString(`{"orders":[`)
	for i := 0; b.Len() < 16<<10-64; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"country":"DE","total":%d.%02d,"items":%d}`, i, i*7%500, i%100, i%9+1)
	}
	b.WriteString(`]}`)
	return b.String()
}()

var htmlBody = "<!doctype html><title>dash</title>" + strings.Repeat("<div class=\"tile\">orders by country</div>\n", 100)

// compressBackend is a real loopback upstream with one path per shape of
// response the compress decision looks at.
func compressBackend(t *testing.T) *httptest.Server {
	t.Helper()
	gz := compressWithGzip(t, jsonBody)
	mux := http.NewServeMux()
	mux.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Accept-Ranges", "bytes")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(jsonBody)) // Range, HEAD, Content-Length
	})
	mux.HandleFunc("/html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Vary", "Origin")
		io.WriteString(w, htmlBody)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for i := 0; i < len(jsonBody); i += 1000 {
			io.WriteString(w, jsonBody[i:min(i+1000, len(jsonBody))])
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/small", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	})
	mux.HandleFunc("/small-chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":`)
		w.(http.Flusher).Flush()
		io.WriteString(w, `true}`)
	})
	mux.HandleFunc("/gzipped", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(gz)))
		w.Header().Set("Content-Encoding", "gzip")
		io.WriteString(w, gz)
	})
	mux.HandleFunc("/png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Header().Set("Content-Length", fmt.Sprint(len(jsonBody)))
		io.WriteString(w, jsonBody)
	})
	mux.HandleFunc("/no-transform", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, No-Transform")
		w.Header().Set("Content-Length", fmt.Sprint(len(jsonBody)))
		io.WriteString(w, jsonBody)
	})
	mux.HandleFunc("/204", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("/304", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"v1"`)
		w.WriteHeader(http.StatusNotModified)
	})
	mux.HandleFunc("/404", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, htmlBody)
	})
	b := httptest.NewServer(mux)
	t.Cleanup(b.Close)
	return b
}

func compressWithGzip(t testing.TB, s string) string {
	t.Helper()
	var b strings.Builder
	w := gzip.NewWriter(&b)
	io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// rawClient does not ask for or decode gzip itself, so the test sees the
// response as sent.
var rawClient = &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 10 * time.Second}

// fetch sends method url with the header lines of hdr ("K: V").
func fetch(t *testing.T, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	res, err := rawClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return res, string(b)
}

// bothPaths runs f with the lean client and with the Transport only.
func bothPaths(t *testing.T, conf string, f func(t *testing.T, base string, h *Handler)) {
	for _, withLean := range []bool{true, false} {
		t.Run(fmt.Sprintf("lean=%v", withLean), func(t *testing.T) {
			h := newHandler(t, proxyConfig(t, conf), Options{})
			if !withLean {
				h.rp.Transport.(*retryTransport).lean = nil
			}
			f(t, front(t, h, nil), h)
		})
	}
}

// TestCompressCodings: JSON and HTML of known and unknown length come
// compressed with the coding the client asked for, decodable, without
// Content-Length, with a weak ETag and Vary: Accept-Encoding (added to the
// upstream's own Vary).
func TestCompressCodings(t *testing.T) {
	be := compressBackend(t)
	bothPaths(t, "upstreams: ["+be.URL+"]\ncompress: {}", func(t *testing.T, base string, _ *Handler) {
		for _, tc := range []struct{ accept, want string }{
			{"gzip", "gzip"}, {"br", "br"}, {"zstd", "zstd"},
			{"gzip, deflate, br, zstd", "zstd"}, // config order at equal q
			{"gzip;q=1, br;q=0.5", "gzip"},
			{"*", "zstd"},
		} {
			for _, path := range []string{"/json", "/html", "/chunked", "/404"} {
				res, body := fetch(t, "GET", base+path, "Accept-Encoding: "+tc.accept)
				want := map[string]string{"/json": jsonBody, "/html": htmlBody, "/chunked": jsonBody, "/404": htmlBody}[path]
				ce := res.Header.Get("Content-Encoding")
				if ce != tc.want {
					t.Fatalf("%s with %q: Content-Encoding %q, want %q", path, tc.accept, ce, tc.want)
				}
				if got := testutil.Decode(t, ce, body); got != want {
					t.Fatalf("%s %s: decoded body differs (%d bytes, want %d)", path, ce, len(got), len(want))
				}
				if len(body) >= len(want)/2 {
					t.Errorf("%s %s: %d bytes for %d", path, ce, len(body), len(want))
				}
				// net/http's server sets a Content-Length of its own
				// when the whole (coded) body fits its buffer.
				if cl := res.Header.Get("Content-Length"); cl != "" && cl != fmt.Sprint(len(body)) {
					t.Errorf("%s: Content-Length %s for %d bytes: the upstream's was kept", path, cl, len(body))
				}
				if vary := strings.Join(res.Header.Values("Vary"), ", "); !strings.Contains(vary, "Accept-Encoding") {
					t.Errorf("%s: Vary %q", path, vary)
				}
			}
			res, _ := fetch(t, "GET", base+"/json", "Accept-Encoding: "+tc.accept)
			if et := res.Header.Get("ETag"); et != `W/"v1"` || res.Header.Get("Accept-Ranges") != "" {
				t.Errorf("/json: ETag %q Accept-Ranges %q, want W/\"v1\" and none", et, res.Header.Get("Accept-Ranges"))
			}
			res, _ = fetch(t, "GET", base+"/html", "Accept-Encoding: "+tc.accept)
			if vary := res.Header.Values("Vary"); strings.Join(vary, ", ") != "Origin, Accept-Encoding" {
				t.Errorf("/html: Vary %q, want Origin, Accept-Encoding", vary)
			}
		}
	})
}

// TestCompressLeavesAlone: what must reach the client exactly as the
// upstream sent it, and whether it says Vary: Accept-Encoding (only where
// the coding depended on that header).
func TestCompressLeavesAlone(t *testing.T) {
	be := compressBackend(t)
	gz := compressWithGzip(t, jsonBody)
	bothPaths(t, "upstreams: ["+be.URL+"]\ncompress: {}", func(t *testing.T, base string, _ *Handler) {
		for _, tc := range []struct {
			name, method, path string
			hdr                []string
			status             int
			body               string
			length             string // Content-Length expected; "" none
			vary               bool
		}{
			{"under min_size", "GET", "/small", []string{"Accept-Encoding: gzip"}, 200, `{"ok":true}`, "11", false},
			{"under min_size, chunked", "GET", "/small-chunked", []string{"Accept-Encoding: gzip"}, 200, `{"ok":true}`, "", true},
			{"already gzip'd", "GET", "/gzipped", []string{"Accept-Encoding: gzip, br"}, 200, gz, fmt.Sprint(len(gz)), false},
			{"range", "GET", "/json", []string{"Accept-Encoding: gzip", "Range: bytes=0-9"}, 206, jsonBody[:10], "10", false},
			{"HEAD", "HEAD", "/json", []string{"Accept-Encoding: gzip"}, 200, "", fmt.Sprint(len(jsonBody)), false},
			{"not a listed type", "GET", "/png", []string{"Accept-Encoding: gzip"}, 200, jsonBody, fmt.Sprint(len(jsonBody)), false},
			{"no-transform", "GET", "/no-transform", []string{"Accept-Encoding: gzip"}, 200, jsonBody, fmt.Sprint(len(jsonBody)), false},
			{"no Accept-Encoding", "GET", "/json", nil, 200, jsonBody, fmt.Sprint(len(jsonBody)), true},
			{"no Accept-Encoding, chunked", "GET", "/chunked", nil, 200, jsonBody, "", true},
			{"q=0 for each", "GET", "/json", []string{"Accept-Encoding: gzip;q=0, br;q=0, zstd;q=0, identity"}, 200, jsonBody, fmt.Sprint(len(jsonBody)), true},
			{"*;q=0", "GET", "/json", []string{"Accept-Encoding: *;q=0"}, 200, jsonBody, fmt.Sprint(len(jsonBody)), true},
			{"identity preferred", "GET", "/json", []string{"Accept-Encoding: gzip;q=0.5, identity"}, 200, jsonBody, fmt.Sprint(len(jsonBody)), true},
			{"unknown codings only", "GET", "/json", []string{"Accept-Encoding: deflate, compress"}, 200, jsonBody, fmt.Sprint(len(jsonBody)), true},
			{"204", "GET", "/204", []string{"Accept-Encoding: gzip"}, 204, "", "", false},
			{"304", "GET", "/304", []string{"Accept-Encoding: gzip"}, 304, "", "", false},
		} {
			res, body := fetch(t, tc.method, base+tc.path, tc.hdr...)
			if res.StatusCode != tc.status || body != tc.body || res.Header.Get("Content-Length") != tc.length {
				t.Errorf("%s: %d, %d bytes, Content-Length %q; want %d, %d bytes, %q", tc.name, res.StatusCode, len(body),
					res.Header.Get("Content-Length"), tc.status, len(tc.body), tc.length)
			}
			if ce := res.Header.Get("Content-Encoding"); ce != "" && tc.path != "/gzipped" {
				t.Errorf("%s: Content-Encoding %q", tc.name, ce)
			}
			if vary := strings.Contains(strings.Join(res.Header.Values("Vary"), ","), "Accept-Encoding"); vary != tc.vary {
				t.Errorf("%s: Vary %q, want Accept-Encoding in it: %v", tc.name, res.Header.Values("Vary"), tc.vary)
			}
		}
	})
}

// TestCompressOffByDefault: without a compress block nothing is
// compressed and no Vary is added; enabled: false is the same.
func TestCompressOffByDefault(t *testing.T) {
	be := compressBackend(t)
	for _, conf := range []string{"", "\ncompress: {enabled: false}"} {
		h := newHandler(t, proxyConfig(t, "upstreams: ["+be.URL+"]"+conf), Options{})
		res, body := fetch(t, "GET", front(t, h, nil)+"/json", "Accept-Encoding: gzip, br, zstd")
		if body != jsonBody || res.Header.Get("Content-Encoding") != "" || res.Header.Get("Vary") != "" {
			t.Errorf("%q: Content-Encoding %q Vary %q", conf, res.Header.Get("Content-Encoding"), res.Header.Get("Vary"))
		}
	}
}

// TestCompressHugeAcceptEncoding: an Accept-Encoding of nearly 1 MiB (the
// server's header limit) is parsed once, quickly, and its last word
// counts.
func TestCompressHugeAcceptEncoding(t *testing.T) {
	be := compressBackend(t)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+be.URL+"]\ncompress: {}"), Options{})
	base := front(t, h, nil)
	ae := strings.Repeat("x-junk;q=0.001, ", 60000) + "gzip;q=0, br"
	start := time.Now()
	res, body := fetch(t, "GET", base+"/json", "Accept-Encoding: "+ae)
	if res.Header.Get("Content-Encoding") != "br" || testutil.Decode(t, "br", body) != jsonBody {
		t.Errorf("huge Accept-Encoding: %d, Content-Encoding %q", res.StatusCode, res.Header.Get("Content-Encoding"))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

// TestCompressSSEUncompressed: Server-Sent Events are never compressed
// (text/* matches them), and each event reaches the client before the
// upstream sends the next.
func TestCompressSSEUncompressed(t *testing.T) {
	for _, withLean := range []bool{true, false} {
		t.Run(fmt.Sprintf("lean=%v", withLean), func(t *testing.T) {
			next := make(chan struct{})
			be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				for i := range 3 {
					fmt.Fprintf(w, "data: %d %s\n\n", i, strings.Repeat("x", 2000))
					w.(http.Flusher).Flush()
					select {
					case <-next:
					case <-r.Context().Done():
						return
					}
				}
			}))
			t.Cleanup(be.Close)
			h := newHandler(t, proxyConfig(t, "upstreams: ["+be.URL+"]\ncompress: {}"), Options{})
			if !withLean {
				h.rp.Transport.(*retryTransport).lean = nil
			}
			req, _ := http.NewRequest("GET", front(t, h, nil)+"/events", nil)
			req.Header.Set("Accept-Encoding", "gzip, br, zstd")
			res, err := rawClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			if ce := res.Header.Get("Content-Encoding"); ce != "" {
				t.Fatalf("SSE compressed with %q", ce)
			}
			br := bufio.NewReader(res.Body)
			for i := range 3 {
				line, err := br.ReadString('\n')
				if err != nil || !strings.HasPrefix(line, fmt.Sprintf("data: %d ", i)) {
					t.Fatalf("event %d: %q, %v", i, clip(line), err)
				}
				br.ReadString('\n')
				next <- struct{}{} // the upstream sends the next event only now
			}
		})
	}
}

// TestCompressStreamFlushes: a compressed stream (no Content-Length) is
// flushed through the encoder whenever the upstream flushes: the client
// decodes the first part while the upstream still holds back the rest.
func TestCompressStreamFlushes(t *testing.T) {
	next := make(chan struct{})
	part := strings.Repeat(`{"event":"order","country":"FR"}`+"\n", 64) // 2 KiB, above min_size
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for range 3 {
			io.WriteString(w, part)
			w.(http.Flusher).Flush()
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(be.Close)
	bothPaths(t, "upstreams: ["+be.URL+"]\ncompress: {}", func(t *testing.T, base string, _ *Handler) {
		for _, coding := range []string{"gzip", "br", "zstd"} {
			req, _ := http.NewRequest("GET", base+"/stream", nil)
			req.Header.Set("Accept-Encoding", coding)
			res, err := rawClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if ce := res.Header.Get("Content-Encoding"); ce != coding {
				t.Fatalf("Content-Encoding %q, want %q", ce, coding)
			}
			dec := decoder(t, coding, res.Body)
			for i := range 3 {
				buf := make([]byte, len(part))
				if _, err := io.ReadFull(dec, buf); err != nil || string(buf) != part {
					t.Fatalf("%s part %d: %v", coding, i, err)
				}
				next <- struct{}{}
			}
			if rest, err := io.ReadAll(dec); err != nil || len(rest) != 0 {
				t.Errorf("%s: end of stream: %d bytes, %v", coding, len(rest), err)
			}
			res.Body.Close()
		}
	})
}

// decoder returns a streaming decoder of coding over r.
func decoder(t *testing.T, coding string, r io.Reader) io.Reader {
	t.Helper()
	switch coding {
	case "gzip":
		g, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		g.Multistream(false)
		return g
	case "br":
		return brotli.NewReader(r)
	case "zstd":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		return d
	}
	t.Fatalf("unknown coding %q", coding)
	return nil
}

// TestCompressWebSocketUnaffected: with compress on, a WebSocket upgrade
// (whose request accepts gzip, as browsers' do) still becomes a tunnel.
func TestCompressWebSocketUnaffected(t *testing.T) {
	be := newWSBackend(t, false)
	h := newHandler(t, proxyConfig(t, "upstreams: ["+be.URL+"]\ncompress: {min_size: 0}"), Options{})
	base := front(t, h, nil)
	c, res := dialWS(t, nil, base, "/socket/", http.Header{"Accept-Encoding": {"gzip, deflate, br, zstd"}})
	if res.StatusCode != 101 || res.Header.Get("Content-Encoding") != "" {
		t.Fatalf("upgrade: %d, Content-Encoding %q", res.StatusCode, res.Header.Get("Content-Encoding"))
	}
	for i := range 3 {
		echo(t, c, fmt.Sprintf("message %d %s", i, strings.Repeat("y", 3000)))
	}
}

// TestCompressLyingUpstream: an upstream that announces more than it sends
// (Content-Length), or cuts a chunked body, gives the client a response
// that visibly fails (no complete body), never a hang, and the failure is
// logged as the upstream's, not as a client gone (499).
func TestCompressLyingUpstream(t *testing.T) {
	addr, _ := rawBackend(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/length" {
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(jsonBody)+5000, jsonBody)
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
		fmt.Fprintf(c, "%x\r\n%s\r\n", len(jsonBody), jsonBody) // and no last chunk
	})
	for _, withLean := range []bool{true, false} {
		for _, path := range []string{"/length", "/chunked"} {
			t.Run(fmt.Sprintf("lean=%v%s", withLean, path), func(t *testing.T) {
				log, sink := newLog(t)
				reg := prometheus.NewRegistry()
				h := newHandler(t, proxyConfig(t, "upstreams: [http://"+addr+"]\ncompress: {}"), Options{Log: log, Registerer: reg, Site: "s", Route: "/"})
				if !withLean {
					h.rp.Transport.(*retryTransport).lean = nil
				}
				base := front(t, h, nil)
				req, _ := http.NewRequest("GET", base+path, nil)
				req.Header.Set("Accept-Encoding", "gzip")
				res, err := rawClient.Do(req)
				if err == nil {
					body, rerr := io.ReadAll(res.Body)
					res.Body.Close()
					if rerr == nil {
						t.Fatalf("complete response %d (%s, %d bytes) from a lying upstream", res.StatusCode, res.Header.Get("Content-Encoding"), len(body))
					}
				}
				// As without compress: a read error (the upstream's side),
				// not a write error, and no 499 (client gone).
				testutil.WaitFor(t, 5*time.Second, "the upstream's failure logged", func() bool {
					return len(sink.find(slog.LevelWarn, "httputil: ReverseProxy read error during body copy: unexpected EOF")) == 1
				})
				if series := strings.Join(proxySeries(t, reg), "\n"); strings.Contains(series, "499") || !strings.Contains(series, "code=\"200\"") && !strings.Contains(series, "code=200") {
					t.Errorf("metrics:\n%s", series)
				}
			})
		}
	}
}

// TestCompressClientGoneMidStream: a client that leaves while a compressed
// stream is being sent ends the upstream request too, and leaves no
// goroutine behind.
func TestCompressClientGoneMidStream(t *testing.T) {
	upstreamDone := make(chan struct{}, 10)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { upstreamDone <- struct{}{} }()
		w.Header().Set("Content-Type", "application/json")
		for {
			if _, err := io.WriteString(w, jsonBody); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	}))
	t.Cleanup(be.Close)
	bothPaths(t, "upstreams: ["+be.URL+"]\ncompress: {}", func(t *testing.T, base string, _ *Handler) {
		before := runtime.NumGoroutine()
		for _, coding := range []string{"gzip", "br", "zstd"} {
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/stream", nil)
			req.Header.Set("Accept-Encoding", coding)
			res, err := rawClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			dec := decoder(t, coding, res.Body)
			if _, err := io.ReadFull(dec, make([]byte, 3*len(jsonBody))); err != nil {
				t.Fatalf("%s: %v", coding, err)
			}
			cancel()
			res.Body.Close()
			testutil.Recv(t, upstreamDone, 5*time.Second, "the upstream request to end after the client left")
		}
		rawClient.CloseIdleConnections()
		testutil.WaitFor(t, 5*time.Second, "goroutines back to where they were", func() bool {
			return runtime.NumGoroutine() <= before+1
		})
	})
}

// BenchmarkCompressCheck is the per-response cost of the compress
// decision on responses that are not compressed: a type not listed
// (the first checks), and a listed type for a client without
// Accept-Encoding (every check, Vary added).
func BenchmarkCompressCheck(b *testing.B) {
	h := newHandler(b, proxyConfig(b, "upstreams: [http://127.0.0.1:1]\ncompress: {}"), Options{})
	req, _ := http.NewRequest("GET", "http://edge.test/x", nil)
	for _, tc := range []struct{ name, ctype, accept string }{
		{"type not listed", "image/png", "gzip, deflate, br, zstd"},
		{"no Accept-Encoding", "application/json", ""},
	} {
		b.Run(tc.name, func(b *testing.B) {
			if tc.accept != "" {
				req.Header.Set("Accept-Encoding", tc.accept)
			} else {
				req.Header.Del("Accept-Encoding")
			}
			hdr := http.Header{"Content-Type": {tc.ctype}, "Content-Length": {"16384"}}
			res := &http.Response{StatusCode: 200, Header: hdr, ContentLength: 16384, Body: io.NopCloser(strings.NewReader("")), Request: req}
			b.ReportAllocs()
			for b.Loop() {
				delete(hdr, "Vary")
				h.compressResponse(res)
			}
			if res.Header.Get("Content-Encoding") != "" {
				b.Fatal("compressed")
			}
		})
	}
}

// BenchmarkCompressJSON16K is the throughput of proxying a 16 KiB JSON
// response compressed with each coding (and uncompressed, for scale),
// one request at a time over keep-alive connections.
func BenchmarkCompressJSON16K(b *testing.B) {
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(jsonBody)))
		io.WriteString(w, jsonBody)
	}))
	defer be.Close()
	h := newHandler(b, proxyConfig(b, "upstreams: ["+be.URL+"]\ncompress: {}"), Options{})
	base := front(b, h, nil)
	for _, coding := range []string{"identity", "gzip", "br", "zstd"} {
		b.Run(coding, func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{DisableCompression: true}}
			defer c.CloseIdleConnections()
			req, _ := http.NewRequest("GET", base+"/json", nil)
			req.Header.Set("Accept-Encoding", coding)
			b.SetBytes(int64(len(jsonBody)))
			b.ReportAllocs()
			var wire int64
			for b.Loop() {
				res, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, res.Body)
				res.Body.Close()
				wire = n
			}
			b.ReportMetric(float64(wire), "wire-bytes")
		})
	}
}
