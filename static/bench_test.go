package static

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// discardWriter is the cheapest ResponseWriter, to measure the handler
// alone.
type discardWriter struct {
	h    http.Header
	code int
	n    int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }
func (w *discardWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }

// benchHandlers returns edge's handler and http.FileServer over a
// directory holding a 1 KiB hot.js and a 1 MiB big.bin.
func benchHandlers(b *testing.B) map[string]http.Handler {
	dir := b.TempDir()
	writeFiles(b, dir, map[string]string{
		"hot.js":  strings.Repeat("x", 1024),
		"big.bin": strings.Repeat("y", 1<<20),
	})
	h, err := New("/", staticConfig(b, "/", fmt.Sprintf("{root: %q, compress: {}}", dir)), nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	return map[string]http.Handler{"edge": h, "FileServer": http.FileServer(http.Dir(dir))}
}

// BenchmarkHandler1KiB is the handler's own cost for a hot 1 KiB file,
// without a network.
func BenchmarkHandler1KiB(b *testing.B) {
	for _, name := range []string{"edge", "FileServer"} {
		h := benchHandlers(b)[name]
		for _, accept := range []string{"", "gzip"} {
			b.Run(name+"/accept="+accept, func(b *testing.B) {
				r := &http.Request{Method: "GET", URL: &url.URL{Path: "/hot.js"}, Header: http.Header{}}
				if accept != "" {
					r.Header.Set("Accept-Encoding", accept)
				}
				w := &discardWriter{h: http.Header{}}
				b.ReportAllocs()
				for b.Loop() {
					clear(w.h)
					h.ServeHTTP(w, r)
				}
				if w.code != 200 {
					b.Fatalf("status %d", w.code)
				}
			})
		}
	}
}

// BenchmarkLoopback serves over real HTTP/1.1 keep-alive connections on
// loopback, client and server in one process.
func BenchmarkLoopback(b *testing.B) {
	for _, name := range []string{"edge", "FileServer"} {
		srv := httptest.NewServer(benchHandlers(b)[name])
		b.Cleanup(srv.Close)
		tr := &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}
		b.Cleanup(tr.CloseIdleConnections)
		c := &http.Client{Transport: tr}
		for _, file := range []string{"hot.js", "big.bin"} {
			b.Run(name+"/"+file, func(b *testing.B) {
				u := srv.URL + "/" + file
				b.SetBytes(map[string]int64{"hot.js": 1 << 10, "big.bin": 1 << 20}[file])
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						resp, err := c.Get(u)
						if err != nil {
							b.Error(err)
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
				})
			})
		}
	}
}
