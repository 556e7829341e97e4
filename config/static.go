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
	// SPA serves the route's index file (the first of Index in the route's
	// directory) for GET and HEAD of paths that match no file and look like
	// pages: the last segment has no extension, or ends in .html. A missing
	// app.js or logo.png stays a 404. The response carries
	// "Cache-Control: no-cache". Default false.
	SPA bool `yaml:"spa"`
	// Fallback serves requests for files that do not exist, as nginx
	// try_files $uri @backend, with any method and the request unchanged.
	// Default nil: 404.
	Fallback *Fallback `yaml:"fallback"`
	// CacheControl is the Cache-Control header. Default "public, max-age=3600"
	// ("public, max-age=31536000, immutable" when Immutable is set).
	CacheControl string `yaml:"cache_control"`
	// Immutable marks files as never changing (hashed asset names): the
	// default Cache-Control becomes ImmutableCacheControl. It has no effect
	// when cache_control is set. Default false.
	Immutable bool `yaml:"immutable"`
	// Precompressed serves x.br, x.zst and x.gz next to x when the client
	// accepts them (preferred in that order at equal q), with the
	// Content-Type of x and an ETag of their own. Range requests are served
	// from x. Default true.
	Precompressed *bool `yaml:"precompressed"`
	// Compress compresses compressible responses on the fly when no
	// precompressed file exists. Default off.
	Compress *Compress `yaml:"compress"`
	// CacheMaxFileSize is the largest file kept in memory, with its
	// variants, validators and formatted headers. Larger files are streamed
	// from disk with sendfile(2). Default 64KiB; 0 turns the cache off.
	CacheMaxFileSize *ByteSize `yaml:"cache_max_file_size"`
	// CacheMaxBytes bounds the memory of the route's cache (bytes of all
	// variants); beyond it, little-used entries are evicted. Default 64MiB.
	CacheMaxBytes ByteSize `yaml:"cache_max_bytes"`
	// CacheRevalidate is how often a cached file is checked against the
	// disk with stat(2); a change on disk is served at most this much later.
	// It also bounds how late a repointed root symlink is noticed.
	// Default 1s.
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

// Compress configures on-the-fly compression, of static files and of
// proxied responses alike.
type Compress struct {
	// Enabled turns it on. Writing a compress block without it turns it on.
	Enabled *bool `yaml:"enabled"`
	// MinSize is the smallest file (or proxied body) compressed. Default
	// 1KiB.
	MinSize ByteSize `yaml:"min_size"`
	// Types are compressible media types, matched without parameters; a
	// trailing "/*" matches a family. Default text/*,
	// application/javascript, application/json, application/xml,
	// application/wasm, image/svg+xml, application/manifest+json, font/ttf
	// and font/otf.
	Types []string `yaml:"types"`
	// Encodings are the codings edge compresses with, in order of
	// preference at equal q, among zstd, br and gzip. A precompressed
	// file is preferred to compressing. Files up to cache_max_file_size
	// are compressed once and cached; larger ones are compressed while
	// sent. Default [zstd, br, gzip].
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
	v.compress(sp+".compress", st.Compress)
	if st.CacheMaxFileSize != nil && *st.CacheMaxFileSize > st.CacheMaxBytes {
		v.warnf(sp+".cache_max_file_size", "larger than cache_max_bytes (%s): files this large are never cached", st.CacheMaxBytes)
	}
	if st.Immutable && v.c.written(sp+".cache_control") {
		v.warnf(sp+".immutable", "has no effect when cache_control is set")
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
				v.errf(sp+".fallback.route", "no proxy, fastcgi or hub route with path %q in this site", f.Route)
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
	s.Compress.defaults()
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

// compress validates a compress block at path; nil is valid (off).
func (v *validator) compress(path string, c *Compress) {
	if c == nil {
		return
	}
	for i, e := range c.Encodings {
		v.oneOf(fmt.Sprintf("%s.encodings[%d]", path, i), e, "zstd", "br", "gzip")
	}
	for i, t := range c.Types {
		family, sub, ok := strings.Cut(t, "/")
		if !ok || family == "" || family == "*" || sub == "" || strings.ContainsAny(t, " ;,") {
			v.errf(fmt.Sprintf("%s.types[%d]", path, i), "%q is not a media type such as text/css or text/*", t)
		}
	}
}

// defaults fills a compress block; a nil block stays nil (off).
func (c *Compress) defaults() {
	if c == nil {
		return
	}
	setBool(&c.Enabled, true)
	setSize(&c.MinSize, 1<<10)
	if len(c.Encodings) == 0 {
		c.Encodings = []string{"zstd", "br", "gzip"}
	}
	if len(c.Types) == 0 {
		c.Types = []string{
			"text/*", "application/javascript", "application/json",
			"application/xml", "application/wasm", "image/svg+xml",
			"application/manifest+json", "font/ttf", "font/otf",
		}
	}
}
