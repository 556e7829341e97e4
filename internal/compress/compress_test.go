package compress

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"edge/config"
	"edge/internal/testutil"
)

// compressConfig returns the defaulted compress block of a static route
// written as block ("{}" is the bare "compress: {}").
func compressConfig(t testing.TB, block string) *config.Compress {
	t.Helper()
	dir := t.TempDir()
	y := fmt.Sprintf("listen: {http: \"127.0.0.1:0\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: /\n        static: {root: %q, compress: %s}\n", dir, block)
	c, err := config.Parse(filepath.Join(dir, "edge.yaml"), []byte(y))
	if err != nil {
		t.Fatalf("config:\n%v", err)
	}
	return c.Sites[0].Routes[0].Static.Compress
}

func TestParseAcceptEncoding(t *testing.T) {
	all := []Encoding{Brotli, Zstd, Gzip}
	tests := []struct {
		header string
		want   string // "identity br zstd gzip" q values
		chosen Encoding
	}{
		{"", "1 0 0 0", Identity},
		{"gzip", "1 0 0 1000", Gzip},
		{"gzip, deflate, br, zstd", "1 1000 1000 1000", Brotli},
		{"br;q=0, gzip", "1 0 0 1000", Gzip},
		{"br;q=0.5, gzip;q=0.8", "1 500 0 800", Gzip},
		{"br;q=0.5, gzip;q=0.8, identity;q=0.9", "900 500 0 800", Identity},
		{"*", "1000 1000 1000 1000", Brotli},
		{"*;q=0", "0 0 0 0", Identity},
		{"*;q=0, gzip", "0 0 0 1000", Gzip},
		{"identity;q=0", "0 0 0 0", Identity},
		{"zstd;q=1.000, br;q=0.999", "1 999 1000 0", Zstd},
		{"x-gzip", "1 0 0 1000", Gzip},
		{"GZIP;Q=0.5", "1 0 0 500", Gzip},
		{"gzip;q=2", "1 0 0 0", Identity},
		{"gzip;q=abc", "1 0 0 0", Identity},
		{"gzip;q=0.1234", "1 0 0 0", Identity},
		{" br ; q=0.7 ,, gzip ;level=1", "1 700 0 1000", Gzip},
		{"compress, deflate", "1 0 0 0", Identity},
	}
	for _, tt := range tests {
		q := ParseAccept(tt.header)
		got := fmt.Sprintf("%d %d %d %d", q[Identity], q[Brotli], q[Zstd], q[Gzip])
		if got != tt.want {
			t.Errorf("ParseAccept(%q) = %s, want %s", tt.header, got, tt.want)
		}
		if c := q.Choose(all); c != tt.chosen {
			t.Errorf("ParseAccept(%q).Choose = %q, want %q", tt.header, c.String(), tt.chosen.String())
		}
	}
}

func FuzzParseAccept(f *testing.F) {
	for _, s := range []string{"", "gzip", "br;q=0.5, *;q=0", "identity;q=0", ";;,,q=", "a;q=1.", "gzip;q="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := ParseAccept(s)
		for e, v := range q {
			if v < 0 || v > 1000 {
				t.Fatalf("ParseAccept(%q)[%s] = %d out of range", s, Encoding(e), v)
			}
		}
		q.Choose([]Encoding{Brotli, Zstd, Gzip})
	})
}

func TestCompressorPoolReuse(t *testing.T) {
	c := New(compressConfig(t, "{}"))
	in := []byte(strings.Repeat("abcdefgh", 1000))
	for _, e := range []Encoding{Brotli, Zstd, Gzip} {
		first := c.CompressBytes(e, in)
		for range 3 {
			// A pooled encoder must not carry state from its last use.
			if again := c.CompressBytes(e, in); string(again) != string(first) {
				t.Fatalf("%s: output differs on reuse", e.String())
			}
		}
		if got := testutil.Decode(t, e.String(), string(first)); got != string(in) {
			t.Errorf("%s: round trip differs", e.String())
		}
	}
	if c.CompressBytes(Gzip, []byte("x")) != nil {
		t.Errorf("compressing 1 byte should not pay off")
	}
	if New(nil) != nil {
		t.Errorf("no compress block must give a nil compressor")
	}
	off := compressConfig(t, "{enabled: false}")
	if New(off) != nil {
		t.Errorf("enabled: false must give a nil compressor")
	}
}

func TestTypeMatches(t *testing.T) {
	types := []string{"text/*", "application/json", "Image/SVG+xml"}
	for _, tt := range []struct {
		ctype string
		want  bool
	}{
		{"text/html; charset=utf-8", true},
		{"TEXT/CSS", true},
		{"application/json", true},
		{" application/json ; charset=utf-8", true},
		{"application/jsonx", false},
		{"image/svg+xml", true},
		{"image/png", false},
		{"text", false},
		{"", false},
		{"textual/html", false},
	} {
		if got := TypeMatches(tt.ctype, types); got != tt.want {
			t.Errorf("TypeMatches(%q) = %v, want %v", tt.ctype, got, tt.want)
		}
	}
}

// TestAcceptHuge: a header of many elements is parsed in one pass; the
// last word on a coding wins.
func TestAcceptHuge(t *testing.T) {
	h := strings.Repeat("x-junk;q=0.5, ", 50000) + "gzip;q=0, br"
	q := ParseAccept(h)
	if q[Gzip] != 0 || q[Brotli] != 1000 || q.Choose([]Encoding{Gzip, Brotli}) != Brotli {
		t.Errorf("ParseAccept(huge) = %v", q)
	}
	if testing.AllocsPerRun(10, func() { ParseAccept(h) }) != 0 {
		t.Errorf("ParseAccept allocates")
	}
}
