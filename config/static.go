package config

import (
	"fmt"
	"strings"
	"time"
)

// Static serves files from a directory, as nginx root/alias.
type Static struct {
	// Root is the directory the full URL path is appended to (nginx root):
	// with path /static/ and root /srv/www, /static/app.js is
	// /srv/www/static/app.js.
	Root string `yaml:"root"`
	// Alias is the directory the path after the route prefix is appended to
	// (nginx alias): with path /assets/ and alias /srv/build,
	// /assets/app.js is /srv/build/app.js. Exactly one of root and alias.
	Alias string `yaml:"alias"`
	// Index is the file served for a directory. Default ["index.html"].
	Index []string `yaml:"index"`
	// Browse lists directories without an index file. Default false.
	Browse bool `yaml:"browse"`
	// SPA serves the route's index.html for paths that match no file, for
	// client-side routing. Default false.
	SPA bool `yaml:"spa"`
	// Fallback serves requests for files that do not exist, as nginx
	// try_files $uri @backend. Default nil: 404.
	Fallback *Fallback `yaml:"fallback"`
	// CacheControl is the Cache-Control header. Default "public, max-age=3600"
	// ("public, max-age=31536000, immutable" when Immutable is set).
	CacheControl string `yaml:"cache_control"`
	// Immutable marks files as never changing (hashed asset names).
	Immutable bool `yaml:"immutable"`
	// Precompressed serves x.br, x.zst and x.gz next to x when the client
	// accepts them. Default true.
	Precompressed *bool `yaml:"precompressed"`
	// Compress compresses compressible responses on the fly when no
	// precompressed file exists. Default off.
	Compress *Compress `yaml:"compress"`
	// CacheMaxFileSize is the largest file kept in memory with its
	// validators. Default 64KiB; 0 turns the cache off.
	CacheMaxFileSize *ByteSize `yaml:"cache_max_file_size"`
	// CacheMaxBytes bounds the memory cache. Default 64MiB.
	CacheMaxBytes ByteSize `yaml:"cache_max_bytes"`
	// CacheRevalidate is how often a cached entry is checked against the
	// disk with stat(2). Default 1s.
	CacheRevalidate time.Duration `yaml:"cache_revalidate"`
}

// Fallback names what serves a missing file: an inline proxy, or another
// route of the same site by its path. Exactly one of the two.
type Fallback struct {
	// Proxy is an inline proxy handler, as nginx's named location.
	Proxy *Proxy `yaml:"proxy"`
	// Route is the path of another route of this site, whose handler then
	// serves the request unchanged.
	Route string `yaml:"route"`
}

// Compress configures on-the-fly compression.
type Compress struct {
	// Enabled turns it on. Writing a compress block without it turns it on.
	Enabled *bool `yaml:"enabled"`
	// MinSize is the smallest response compressed. Default 1KiB.
	MinSize ByteSize `yaml:"min_size"`
	// Types are compressible media types; a trailing "/*" matches a family.
	// Default text/*, application/javascript, application/json,
	// image/svg+xml, application/wasm and a few more.
	Types []string `yaml:"types"`
	// Encodings in order of preference among br, zstd and gzip.
	// Default [zstd, br, gzip].
	Encodings []string `yaml:"encodings"`
}

func (v *validator) static(sp string, st *Static, site Site) {
	switch {
	case st.Root != "" && st.Alias != "":
		v.errf(sp, "set root or alias, not both")
	case st.Root != "":
		v.dir(sp+".root", st.Root)
	case st.Alias != "":
		v.dir(sp+".alias", st.Alias)
	default:
		v.errf(sp, "missing root or alias")
	}
	for i, idx := range st.Index {
		if idx == "" || strings.ContainsAny(idx, "/\\") {
			v.errf(fmt.Sprintf("%s.index[%d]", sp, i), "index %q must be a plain file name", idx)
		}
	}
	if c := st.Compress; c != nil {
		for i, e := range c.Encodings {
			v.oneOf(fmt.Sprintf("%s.compress.encodings[%d]", sp, i), e, "zstd", "br", "gzip")
		}
	}
	if f := st.Fallback; f != nil {
		switch {
		case (f.Proxy == nil) == (f.Route == ""):
			v.errf(sp+".fallback", "fallback needs exactly one of proxy or route")
		case f.Proxy != nil:
			v.proxy(sp+".fallback.proxy", f.Proxy)
		default:
			found := false
			for _, r := range site.Routes {
				if r.Path == f.Route && r.Static == nil {
					found = true
				}
			}
			if !found {
				v.errf(sp+".fallback.route", "no proxy or hub route with path %q in this site", f.Route)
			}
		}
	}
	if st.SPA && st.Fallback != nil {
		v.errf(sp+".spa", "spa and fallback both decide what serves a missing file: choose one")
	}
}

func (s *Static) defaults(c *Config) {
	s.Root, s.Alias = c.resolve(s.Root), c.resolve(s.Alias)
	if len(s.Index) == 0 {
		s.Index = []string{"index.html"}
	}
	if s.CacheControl == "" {
		s.CacheControl = DefaultCacheControl
		if s.Immutable {
			s.CacheControl = ImmutableCacheControl
		}
	}
	setBool(&s.Precompressed, true)
	if s.Compress != nil {
		setBool(&s.Compress.Enabled, true)
		setSize(&s.Compress.MinSize, 1<<10)
		if len(s.Compress.Encodings) == 0 {
			s.Compress.Encodings = []string{"zstd", "br", "gzip"}
		}
		if len(s.Compress.Types) == 0 {
			s.Compress.Types = []string{
				"text/*", "application/javascript", "application/json",
				"application/xml", "application/wasm", "image/svg+xml",
				"application/manifest+json", "font/ttf", "font/otf",
			}
		}
	}
	if s.CacheMaxFileSize == nil {
		v := ByteSize(64 << 10)
		s.CacheMaxFileSize = &v
	}
	setSize(&s.CacheMaxBytes, 64<<20)
	setDur(&s.CacheRevalidate, time.Second)
	if s.Fallback != nil && s.Fallback.Proxy != nil {
		s.Fallback.Proxy.defaults(c)
	}
}
