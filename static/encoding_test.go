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
)

func TestParseAcceptEncoding(t *testing.T) {
	all := []encoding{encBrotli, encZstd, encGzip}
	tests := []struct {
		header string
		want   string // "identity br zstd gzip" q values
		chosen encoding
	}{
		{"", "1 0 0 0", encIdentity},
		{"gzip", "1 0 0 1000", encGzip},
		{"gzip, deflate, br, zstd", "1 1000 1000 1000", encBrotli},
		{"br;q=0, gzip", "1 0 0 1000", encGzip},
		{"br;q=0.5, gzip;q=0.8", "1 500 0 800", encGzip},
		{"br;q=0.5, gzip;q=0.8, identity;q=0.9", "900 500 0 800", encIdentity},
		{"*", "1000 1000 1000 1000", encBrotli},
		{"*;q=0", "0 0 0 0", encIdentity},
		{"*;q=0, gzip", "0 0 0 1000", encGzip},
		{"identity;q=0", "0 0 0 0", encIdentity},
		{"zstd;q=1.000, br;q=0.999", "1 999 1000 0", encZstd},
		{"x-gzip", "1 0 0 1000", encGzip},
		{"GZIP;Q=0.5", "1 0 0 500", encGzip},
		{"gzip;q=2", "1 0 0 0", encIdentity},
		{"gzip;q=abc", "1 0 0 0", encIdentity},
		{"gzip;q=0.1234", "1 0 0 0", encIdentity},
		{" br ; q=0.7 ,, gzip ;level=1", "1 700 0 1000", encGzip},
		{"compress, deflate", "1 0 0 0", encIdentity},
	}
	for _, tt := range tests {
		q := parseAcceptEncoding(tt.header)
		got := fmt.Sprintf("%d %d %d %d", q[encIdentity], q[encBrotli], q[encZstd], q[encGzip])
		if got != tt.want {
			t.Errorf("parseAcceptEncoding(%q) = %s, want %s", tt.header, got, tt.want)
		}
		if c := q.choose(all); c != tt.chosen {
			t.Errorf("parseAcceptEncoding(%q).choose = %q, want %q", tt.header, encToken[c], encToken[tt.chosen])
		}
	}
}

func FuzzParseAcceptEncoding(f *testing.F) {
	for _, s := range []string{"", "gzip", "br;q=0.5, *;q=0", "identity;q=0", ";;,,q=", "a;q=1.", "gzip;q="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := parseAcceptEncoding(s)
		for e, v := range q {
			if v < 0 || v > 1000 {
				t.Fatalf("parseAcceptEncoding(%q)[%s] = %d out of range", s, encToken[e], v)
			}
		}
		q.choose([]encoding{encBrotli, encZstd, encGzip})
	})
}

// compressWith compresses s with e using the reference libraries.
func compressWith(t testing.TB, e encoding, s string) string {
	t.Helper()
	var buf bytes.Buffer
	var w io.WriteCloser
	switch e {
	case encBrotli:
		w = brotli.NewWriterLevel(&buf, 11)
	case encZstd:
		w, _ = zstd.NewWriter(&buf)
	case encGzip:
		w, _ = gzip.NewWriterLevel(&buf, 9)
	}
	io.WriteString(w, s)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// decode undoes a Content-Encoding.
func decode(t testing.TB, coding, body string) string {
	t.Helper()
	var r io.Reader = strings.NewReader(body)
	switch coding {
	case "":
		return body
	case "br":
		r = brotli.NewReader(r)
	case "zstd":
		d, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	case "gzip":
		g, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip: %v", err)
		}
		r = g
	default:
		t.Fatalf("unknown coding %q", coding)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("decode %s: %v", coding, err)
	}
	return string(b)
}

func TestPrecompressed(t *testing.T) {
	bothModes(t, func(t *testing.T, cacheOpt string) {
		dir := t.TempDir()
		js := strings.Repeat("console.log('edge');\n", 200)
		writeFiles(t, dir, map[string]string{
			"app.js":      js,
			"app.js.br":   compressWith(t, encBrotli, js),
			"app.js.zst":  compressWith(t, encZstd, js),
			"app.js.gz":   compressWith(t, encGzip, js),
			"only.css":    js,
			"only.css.gz": compressWith(t, encGzip, js),
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
			if got := decode(t, tt.coding, body); got != js {
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
		if body != "" || resp.Header.Get("Content-Length") != strconv.Itoa(len(compressWith(t, encGzip, js))) {
			t.Errorf("HEAD gzip: Content-Length %s", resp.Header.Get("Content-Length"))
		}
	})
}

func TestPrecompressedOff(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"a.js": "plain", "a.js.gz": compressWith(t, encGzip, "plain")})
	s := newSite(t, "/", fmt.Sprintf("{root: %q, precompressed: false}", dir), nil)
	resp, body := s.get(t, "/a.js", "Accept-Encoding: gzip")
	if body != "plain" || resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Vary") != "" {
		t.Errorf("precompressed off: body %q, encoding %q, vary %q", body, resp.Header.Get("Content-Encoding"), resp.Header.Get("Vary"))
	}
}
