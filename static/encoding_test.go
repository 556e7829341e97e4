package static

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"edge/internal/compress"
	"edge/internal/testutil"
)

// compressWith compresses s with e using the reference libraries.
func compressWith(t testing.TB, e compress.Encoding, s string) string {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch e {
	case compress.Brotli:
		w = brotli.NewWriterLevel(&buf, 11)
	case compress.Zstd:
		w, _ = zstd.NewWriter(&buf)
	case compress.Gzip:
		w, _ = gzip.NewWriterLevel(&buf, 9)
	}
	io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestPrecompressed(t *testing.T) {
	bothModes(t, func(t *testing.T, cacheOpt string) {
		dir := t.TempDir()
		js := strings.Repeat("console.log('edge');\n", 200)
		writeFiles(t, dir, map[string]string{
			"app.js":      js,
			"app.js.br":   compressWith(t, compress.Brotli, js),
			"app.js.zst":  compressWith(t, compress.Zstd, js),
			"app.js.gz":   compressWith(t, compress.Gzip, js),
			"only.css":    js,
			"only.css.gz": compressWith(t, compress.Gzip, js),
		})
		s := newSite(t, "/", fmt.Sprintf("{root: %q%s}", dir, cacheOpt), nil)

		tests := []struct {
			path, accept, coding string
		}{
			{"/app.js", "", ""},
			{"/app.js", "gzip", "gzip"},
			{"/app.js", "zstd", "zstd"},
			{"/app.js", "br", "br"},
			{"/app.js", "gzip, deflate, br, zstd", "br"},
			{"/app.js", "br;q=0, gzip, zstd", "zstd"},
			{"/app.js", "br;q=0.5, gzip;q=0.8", "gzip"},
			{"/app.js", "*", "br"},
			{"/app.js", "*;q=0", ""},
			{"/app.js", "identity;q=0.9, gzip;q=0.5", ""},
			{"/app.js", "deflate", ""},
			{"/only.css", "br, zstd", ""},
			{"/only.css", "br, gzip", "gzip"},
		}
		etags := map[string]string{}
		for _, tt := range tests {
			name := tt.path + " Accept-Encoding: " + tt.accept
			var hdrs []string
			if tt.accept != "" {
				hdrs = append(hdrs, "Accept-Encoding: "+tt.accept)
			}
			resp, body := s.get(t, tt.path, hdrs...)
			wantStatus(t, name, resp, 200)
			wantHeader(t, name, resp, "Content-Encoding", tt.coding)
			wantHeader(t, name, resp, "Vary", "Accept-Encoding")
			wantHeader(t, name, resp, "Content-Length", strconv.Itoa(len(body)))
			if strings.HasSuffix(tt.path, ".js") {
				wantHeader(t, name, resp, "Content-Type", "text/javascript; charset=utf-8")
			} else {
				wantHeader(t, name, resp, "Content-Type", "text/css; charset=utf-8")
			}
			if got := testutil.Decode(t, tt.coding, body); got != js {
				t.Errorf("%s: decoded body differs from the file", name)
			}
			etag := resp.Header.Get("Etag")
			key := tt.path + tt.coding
			if prev, ok := etags[key]; ok && prev != etag {
				t.Errorf("%s: ETag %s changed from %s", name, etag, prev)
			}
			etags[key] = etag
			// The variant's own ETag revalidates it.
			resp, _ = s.get(t, tt.path, append(hdrs, "If-None-Match: "+etag)...)
			wantStatus(t, name+" revalidated", resp, 304)
		}
		seen := map[string]string{}
		for k, e := range etags {
			if other, dup := seen[e]; dup {
				t.Errorf("variants %s and %s share the ETag %s", k, other, e)
			}
			seen[e] = k
		}

		// HEAD tells the length of the chosen variant.
		resp, body := s.do(t, "HEAD", "/app.js", "Accept-Encoding: gzip")
		if body != "" || resp.Header.Get("Content-Length") != strconv.Itoa(len(compressWith(t, compress.Gzip, js))) {
			t.Errorf("HEAD gzip: Content-Length %s", resp.Header.Get("Content-Length"))
		}
	})
}

func TestPrecompressedOff(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.js": "plain", "a.js.gz": compressWith(t, compress.Gzip, "plain")})
	s := newSite(t, "/", fmt.Sprintf("{root: %q, precompressed: false}", dir), nil)
	resp, body := s.get(t, "/a.js", "Accept-Encoding: gzip")
	if body != "plain" || resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" {
		t.Errorf("precompressed off: body %q, encoding %q, vary %q", body, resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"))
	}
}
