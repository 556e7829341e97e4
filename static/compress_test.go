package static

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"edge/internal/compress"
	"edge/internal/testutil"
)

func TestCompressOnTheFly(t *testing.T) {
	bothModes(t, func(t *testing.T, cacheOpt string) {
		dir := t.TempDir()
		css := strings.Repeat("body { color: #123456; margin: 0 auto; }\n", 300) // 12 KiB
		writeFiles(t, dir, map[string]string{
			"site.css":  css,
			"tiny.css":  "a{}",
			"image.png": css, // not a compressible type
			"pre.js":    css,
			"pre.js.br": compressWith(t, compress.Brotli, css),
			"data.json": css,
		})
		s := newSite(t, "/", fmt.Sprintf("{root: %q, compress: {min_size: 1KiB}%s}", dir, cacheOpt), nil)

		resp, _ := s.get(t, "/site.css")
		identityETag := strings.Trim(resp.Header.Get("Etag"), `"`)
		wantHeader(t, "identity", resp, "Vary", "Accept-Encoding")

		tests := []struct {
			path, accept, coding string
		}{
			{"/site.css", "zstd", "zstd"},
			{"/site.css", "br", "br"},
			{"/site.css", "gzip", "gzip"},
			{"/site.css", "gzip, br, zstd", "zstd"}, // the configured order: zstd, br, gzip
			{"/site.css", "gzip;q=1, zstd;q=0.5", "gzip"},
			{"/site.css", "identity", ""},
			{"/tiny.css", "gzip", ""},
			{"/image.png", "gzip", ""},
			{"/pre.js", "gzip, br, zstd", "br"}, // a sidecar beats compressing
			{"/data.json", "gzip", "gzip"},
		}
		for _, tt := range tests {
			name := tt.path + " " + tt.accept
			resp, body := s.get(t, tt.path, "Accept-Encoding: "+tt.accept)
			wantStatus(t, name, resp, 200)
			wantHeader(t, name, resp, "Content-Encoding", tt.coding)
			if got := testutil.Decode(t, tt.coding, body); tt.path != "/tiny.css" && got != css {
				t.Errorf("%s: decoded body differs", name)
			}
			if cl := resp.Header.Get("Content-Length"); cl != "" && cl != strconv.Itoa(len(body)) {
				t.Errorf("%s: Content-Length %s for %d bytes", name, cl, len(body))
			}
			if tt.coding != "" && len(body) >= len(css) {
				t.Errorf("%s: %d bytes is not smaller than %d", name, len(body), len(css))
			}
			if tt.path == "/site.css" && tt.coding != "" {
				etag := resp.Header.Get("Etag")
				if want := `"` + identityETag + "-" + tt.coding + `"`; etag != want {
					t.Errorf("%s: ETag %s, want %s", name, etag, want)
				}
				resp, body = s.get(t, tt.path, "Accept-Encoding: "+tt.accept, "If-None-Match: "+etag)
				wantStatus(t, name+" revalidated", resp, 304)
				if body != "" {
					t.Errorf("%s: 304 with a body", name)
				}
				wantHeader(t, name+" 304", resp, "Content-Encoding", "")
			}
		}

		// Ranges are never compressed.
		resp, body := s.get(t, "/site.css", "Accept-Encoding: zstd", "Range: bytes=0-3")
		if resp.StatusCode != 206 || body != "body" || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("range: %d %q encoding %q", resp.StatusCode, body, resp.Header.Get("Content-Encoding"))
		}
	})
}
