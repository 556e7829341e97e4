package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// parseStatic parses a one-site configuration whose routes are given as
// YAML lines (indented for the routes list); "ROOT" is replaced by an
// existing directory.
func parseStatic(t *testing.T, routes string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	routes = strings.ReplaceAll(routes, "ROOT", filepath.Join(dir, "www"))
	y := "listen: {http: \"127.0.0.1:8080\"}\nadmin: \"\"\nsites:\n  - routes:\n" + routes
	return Parse(filepath.Join(dir, "edge.yaml"), []byte(y))
}

func TestStaticDefaults(t *testing.T) {
	c, err := parseStatic(t, `
      - path: /static/
        static: {root: ROOT}
      - path: /assets/
        static: {alias: ROOT, immutable: true, compress: {}}
`)
	if err != nil {
		t.Fatal(err)
	}
	st := c.Sites[0].Routes[0].Static
	if !reflect.DeepEqual(st.Index, []string{"index.html"}) {
		t.Errorf("index = %q", st.Index)
	}
	if st.CacheControl != DefaultCacheControl || st.Precompressed == nil || !*st.Precompressed {
		t.Errorf("cache_control %q, precompressed %v", st.CacheControl, st.Precompressed)
	}
	if st.CacheMaxFileSize == nil || *st.CacheMaxFileSize != 64<<10 || st.CacheMaxBytes != 64<<20 || st.CacheRevalidate != time.Second {
		t.Errorf("cache defaults: %v %v %v", st.CacheMaxFileSize, st.CacheMaxBytes, st.CacheRevalidate)
	}
	if st.Compress != nil || st.Browse || st.SPA || st.Fallback != nil {
		t.Errorf("compress, browse, spa and fallback must be off by default")
	}

	as := c.Sites[0].Routes[1].Static
	if as.CacheControl != ImmutableCacheControl {
		t.Errorf("immutable cache_control = %q", as.CacheControl)
	}
	cp := as.Compress
	if cp == nil || cp.Enabled == nil || !*cp.Enabled || cp.MinSize != 1<<10 {
		t.Fatalf("compress {} = %+v, want enabled with min_size 1KiB", cp)
	}
	if !reflect.DeepEqual(cp.Encodings, []string{"zstd", "br", "gzip"}) || len(cp.Types) == 0 {
		t.Errorf("compress encodings %q types %q", cp.Encodings, cp.Types)
	}
}

func TestStaticExplicitValues(t *testing.T) {
	c, err := parseStatic(t, `
      - path: /
        static:
          root: ROOT
          index: [index.htm, default.html]
          browse: true
          spa: true
          cache_control: "no-cache"
          precompressed: false
          compress: {enabled: false, min_size: 4KiB, types: [text/css], encodings: [gzip]}
          cache_max_file_size: 0
          cache_max_bytes: 1MiB
          cache_revalidate: 250ms
`)
	if err != nil {
		t.Fatal(err)
	}
	st := c.Sites[0].Routes[0].Static
	if !reflect.DeepEqual(st.Index, []string{"index.htm", "default.html"}) || !st.Browse || !st.SPA {
		t.Errorf("index %q browse %v spa %v", st.Index, st.Browse, st.SPA)
	}
	if st.CacheControl != "no-cache" || *st.Precompressed {
		t.Errorf("cache_control %q precompressed %v", st.CacheControl, *st.Precompressed)
	}
	if *st.Compress.Enabled || st.Compress.MinSize != 4<<10 || !reflect.DeepEqual(st.Compress.Encodings, []string{"gzip"}) {
		t.Errorf("compress = %+v", st.Compress)
	}
	if *st.CacheMaxFileSize != 0 || st.CacheMaxBytes != 1<<20 || st.CacheRevalidate != 250*time.Millisecond {
		t.Errorf("cache: %v %v %v", *st.CacheMaxFileSize, st.CacheMaxBytes, st.CacheRevalidate)
	}
}

func TestStaticProblems(t *testing.T) {
	tests := []struct {
		name   string
		routes string
		want   string // a substring of one problem, with its key path
	}{
		{"root and alias", `
      - path: /
        static: {root: ROOT, alias: ROOT}`, "sites[0].routes[0].static: set root or alias, not both"},
		{"neither", `
      - path: /
        static: {index: [a.html]}`, "sites[0].routes[0].static: missing root or alias"},
		{"missing directory", `
      - path: /
        static: {root: ROOT/nope}`, "sites[0].routes[0].static.root: directory"},
		{"index with a slash", `
      - path: /
        static: {root: ROOT, index: [a/b.html]}`, "static.index[0]: index \"a/b.html\" must be a plain file name"},
		{"unknown encoding", `
      - path: /
        static: {root: ROOT, compress: {encodings: [zstd, deflate]}}`, "static.compress.encodings[1]: \"deflate\" is not one of zstd, br, gzip"},
		{"bad type", `
      - path: /
        static: {root: ROOT, compress: {types: [text/css, javascript]}}`, "static.compress.types[1]: \"javascript\" is not a media type"},
		{"spa and fallback", `
      - path: /static/
        static: {root: ROOT, spa: true, fallback: {route: /}}
      - path: /
        proxy: {upstreams: ["http://127.0.0.1:9000"]}`, "static.spa: spa and fallback both decide"},
		{"fallback to a missing route", `
      - path: /
        static: {root: ROOT, fallback: {route: /api/}}`, "static.fallback.route: no proxy, fastcgi or hub route"},
		{"unknown key", `
      - path: /
        static: {root: ROOT, listing: true}`, "listing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseStatic(t, tt.routes)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			for _, p := range ps {
				if strings.Contains(p.String(), tt.want) {
					if p.Line == 0 {
						t.Errorf("%q has no line number", p)
					}
					return
				}
			}
			t.Errorf("problems:\n%v\nwant one containing %q", err, tt.want)
		})
	}
}

func TestStaticWarnings(t *testing.T) {
	c, err := parseStatic(t, `
      - path: /
        static: {root: ROOT, cache_max_file_size: 2MiB, cache_max_bytes: 1MiB, immutable: true, cache_control: "max-age=60"}
`)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprint(c.Warnings)
	for _, want := range []string{
		"static.cache_max_file_size: larger than cache_max_bytes (1MiB)",
		"static.immutable: has no effect when cache_control is set",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("warnings %s lack %q", got, want)
		}
	}
}
