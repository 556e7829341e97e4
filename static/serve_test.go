package static

import (
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"edge/internal/compress"
)

// bothModes runs f against a route that caches small files and one that
// streams every file from disk, since the two take different paths.
func bothModes(t *testing.T, f func(t *testing.T, cacheOpt string)) {
	t.Run("cached", func(t *testing.T) { f(t, "") })
	t.Run("streamed", func(t *testing.T) { f(t, ", cache_max_file_size: 0") })
}

func TestValidators(t *testing.T) {
	bothModes(t, func(t *testing.T, cacheOpt string) {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"a.txt": "hello world"})
		s := newSite(t, "/", fmt.Sprintf("{root: %q%s}", dir, cacheOpt), nil)

		resp, body := s.get(t, "/a.txt")
		etag, lm := resp.Header.Get("Etag"), resp.Header.Get("Last-Modified")
		if body != "hello world" || !strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, "W/") {
			t.Fatalf("body %q, ETag %q: want the file and a strong ETag", body, etag)
		}
		modTime, err := http.ParseTime(lm)
		if err != nil {
			t.Fatalf("Last-Modified %q: %v", lm, err)
		}
		wantHeader(t, "200", resp, "Content-Length", "11")
		wantHeader(t, "200", resp, "Accept-Ranges", "bytes")

		tests := []struct {
			name    string
			headers []string
			code    int
		}{
			{"If-None-Match same", []string{"If-None-Match: " + etag}, 304},
			{"If-None-Match in list", []string{`If-None-Match: "x", ` + etag}, 304},
			{"If-None-Match weak form", []string{"If-None-Match: W/" + etag}, 304},
			{"If-None-Match star", []string{"If-None-Match: *"}, 304},
			{"If-None-Match other", []string{`If-None-Match: "other"`}, 200},
			{"If-Modified-Since same", []string{"If-Modified-Since: " + lm}, 304},
			{"If-Modified-Since later", []string{"If-Modified-Since: " + modTime.Add(time.Hour).Format(http.TimeFormat)}, 304},
			{"If-Modified-Since earlier", []string{"If-Modified-Since: " + modTime.Add(-time.Hour).Format(http.TimeFormat)}, 200},
			{"If-None-Match beats If-Modified-Since", []string{`If-None-Match: "other"`, "If-Modified-Since: " + lm}, 200},
			{"If-Match same", []string{"If-Match: " + etag}, 200},
			{"If-Match other", []string{`If-Match: "other"`}, 412},
			{"If-Match weak never matches", []string{"If-Match: W/" + etag}, 412},
			{"If-Unmodified-Since earlier", []string{"If-Unmodified-Since: " + modTime.Add(-time.Hour).Format(http.TimeFormat)}, 412},
			{"If-Unmodified-Since same", []string{"If-Unmodified-Since: " + lm}, 200},
		}
		for _, tt := range tests {
			resp, body := s.get(t, "/a.txt", tt.headers...)
			wantStatus(t, tt.name, resp, tt.code)
			switch tt.code {
			case 304:
				if body != "" {
					t.Errorf("%s: 304 with body %q", tt.name, body)
				}
				wantHeader(t, tt.name, resp, "Etag", etag)
				wantHeader(t, tt.name, resp, "Cache-Control", "public, max-age=3600")
				wantHeader(t, tt.name, resp, "Vary", "Accept-Encoding")
				wantHeader(t, tt.name, resp, "Content-Type", "")
			case 200:
				if body != "hello world" {
					t.Errorf("%s: body %q", tt.name, body)
				}
			case 412:
				wantHeader(t, tt.name, resp, "Etag", "")
			}
		}
	})
}

func TestRanges(t *testing.T) {
	bothModes(t, func(t *testing.T, cacheOpt string) {
		dir := t.TempDir()
		const content = "0123456789abcdefghij" // 20 bytes
		gz := compressWith(t, compress.Gzip, content)
		writeFiles(t, dir, map[string]string{"r.txt": content, "r.txt.gz": gz})
		s := newSite(t, "/", fmt.Sprintf("{root: %q%s}", dir, cacheOpt), nil)
		resp, _ := s.get(t, "/r.txt")
		etag := resp.Header.Get("Etag")

		resp, body := s.get(t, "/r.txt", "Range: bytes=2-5")
		wantStatus(t, "single range", resp, 206)
		wantHeader(t, "single range", resp, "Content-Range", "bytes 2-5/20")
		wantHeader(t, "single range", resp, "Content-Length", "4")
		wantHeader(t, "single range", resp, "Content-Type", "text/plain; charset=utf-8")
		if body != "2345" {
			t.Errorf("single range body %q", body)
		}

		resp, body = s.get(t, "/r.txt", "Range: bytes=-3")
		if resp.StatusCode != 206 || body != "hij" {
			t.Errorf("suffix range: %d %q", resp.StatusCode, body)
		}

		// Ranges apply to the identity file even when the client takes gzip.
		resp, body = s.get(t, "/r.txt", "Range: bytes=0-3", "Accept-Encoding: gzip")
		if resp.StatusCode != 206 || body != "0123" || resp.Header.Get("Content-Encoding") != "" {
			t.Errorf("range with gzip accepted: %d %q encoding %q", resp.StatusCode, body, resp.Header.Get("Content-Encoding"))
		}
		wantHeader(t, "range", resp, "Vary", "Accept-Encoding")

		resp, body = s.get(t, "/r.txt", "Range: bytes=0-1,10-12")
		wantStatus(t, "multiple ranges", resp, 206)
		mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
		if err != nil || mt != "multipart/byteranges" {
			t.Fatalf("multiple ranges: Content-Type %q", resp.Header.Get("Content-Type"))
		}
		mr := multipart.NewReader(strings.NewReader(body), params["boundary"])
		var parts []string
		for {
			p, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(p)
			parts = append(parts, p.Header.Get("Content-Range")+"="+string(b))
		}
		if got := strings.Join(parts, ";"); got != "bytes 0-1/20=01;bytes 10-12/20=abc" {
			t.Errorf("parts = %q", got)
		}

		resp, body = s.get(t, "/r.txt", "Range: bytes=20-")
		wantStatus(t, "unsatisfiable", resp, 416)
		wantHeader(t, "unsatisfiable", resp, "Content-Range", "bytes */20")
		if strings.Contains(body, dir) {
			t.Errorf("416 body leaks the path: %q", body)
		}

		resp, body = s.get(t, "/r.txt", "Range: bytes=0-1", "If-Range: "+etag)
		if resp.StatusCode != 206 || body != "01" {
			t.Errorf("If-Range current: %d %q", resp.StatusCode, body)
		}
		resp, body = s.get(t, "/r.txt", "Range: bytes=0-1", `If-Range: "stale"`)
		if resp.StatusCode != 200 || body != content {
			t.Errorf("If-Range stale: %d %q, want the whole file", resp.StatusCode, body)
		}
		resp, _ = s.get(t, "/r.txt", "Range: bytes=0-1", "If-None-Match: "+etag)
		wantStatus(t, "range with matching If-None-Match", resp, 304)
	})
}
