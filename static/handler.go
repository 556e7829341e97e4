// Package static serves files from a directory, as nginx's root and alias
// locations do, with what nginx needs extra modules or care for: strong
// validators, ranges, precompressed sidecars chosen by Accept-Encoding,
// optional on-the-fly compression, an SPA fallback, a try_files-style
// fallback handler, and a memory cache of small hot files.
//
// Decisions worth knowing:
//
//   - Every file access goes through an os.Root, so no request path,
//     encoded or not, and no symlink can reach outside the directory;
//     symlinks inside it work. Paths the router would have cleaned ("..",
//     ".", "//", backslash, NUL) answer 400; dotfiles answer 404, except
//     under /.well-known/.
//   - Only GET and HEAD are served: other methods get 405 with
//     "Allow: GET, HEAD" (OPTIONS: 204), unless the file is missing and a
//     fallback handler takes the request.
//   - A precompressed x.br, x.zst or x.gz is sent for x when the client
//     accepts it (highest q wins; at equal q br, zstd, gzip, then codings
//     compressed by edge in configured order; identity when nothing is
//     acceptable). Each variant has its own strong ETag (suffix "-br" and
//     so on); ranges are always served from x.
//   - Files up to cache_max_file_size live in memory with their variants
//     and formatted headers, and are checked with stat(2) at most every
//     cache_revalidate: a change on disk is served within that interval.
//     Larger files are sent with sendfile(2).
//   - SPA: a missing path whose last segment has no extension or ends in
//     .html gets the route's index file with "Cache-Control: no-cache"; a
//     missing app.js or logo.png stays 404.
//   - Errors are edge's one plain, uncached page (internal/httperr): 404
//     for anything missing or unreachable (including a FIFO or device), 403
//     for a permission refused, 500 only for trouble on the server (EMFILE,
//     EIO), which is logged.
package static

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"edge/config"
	"edge/internal/compress"
	"edge/internal/httperr"
)

// Handler serves one static route. It is safe for concurrent use. It
// starts no goroutines and needs no Close: the directory descriptor is
// released when the Handler is garbage collected (os.Root's finalizer),
// which lets in-flight requests finish after a reload swaps routes.
type Handler struct {
	// Static after construction.
	prefix        string // the route path without its trailing slash
	alias         bool   // strip prefix (nginx alias) rather than keep it (root)
	dirPath       string // the configured directory
	index         []string
	browse        bool
	spa           bool
	spaKey        string // the directory whose index serves SPA routes
	precompressed bool
	cacheControl  []string
	revalidate    int64 // nanoseconds between stats of a cached file
	comp          *compress.Compressor
	cache         *cache
	metrics       *metrics // nil without WithRegisterer
	fallback      http.Handler
	scriptExt     string // WithScripts; "": off
	log           *slog.Logger
	epoch         time.Time // origin of ticks

	root        atomic.Pointer[rootDir] // current opening of dirPath
	rootChecked atomic.Int64            // tick of the last check of dirPath

	// Set by tests before serving.
	now      func() time.Time
	testHook func(op, name string) error // before each filesystem operation
}

// New returns the handler for a static route mounted at routePath (such as
// "/static/"). cfg must have been defaulted and validated by package config.
// fallback, when non-nil, serves requests for files that do not exist
// (nginx try_files $uri @backend), with any method, the request unchanged;
// cmd/edge builds it from cfg.Fallback. log may be nil; New adds no
// attributes to it.
//
// New opens the directory; it fails when the directory cannot be opened,
// the metrics cannot be registered or cfg has not been defaulted.
func New(routePath string, cfg *config.Static, fallback http.Handler, log *slog.Logger, opts ...Option) (*Handler, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := defaulted(cfg); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	m, err := newMetrics(o.reg, o.site, routePath)
	if err != nil {
		return nil, err
	}
	dir, alias := cfg.Root, false
	if cfg.Alias != "" {
		dir, alias = cfg.Alias, true
	}
	if dir == "" {
		return nil, errors.New("static: neither root nor alias is set")
	}
	if !strings.HasPrefix(routePath, "/") {
		return nil, errors.New("static: route path must start with /")
	}
	rd, err := openRootDir(dir)
	if err != nil {
		return nil, err // a *PathError naming the directory
	}
	h := &Handler{
		prefix:        strings.TrimSuffix(routePath, "/"),
		alias:         alias,
		dirPath:       dir,
		index:         cfg.Index,
		browse:        cfg.Browse,
		spa:           cfg.SPA,
		precompressed: *cfg.Precompressed,
		cacheControl:  []string{cfg.CacheControl},
		revalidate:    int64(cfg.CacheRevalidate),
		comp:          compress.New(cfg.Compress),
		cache:         newCache(int64(*cfg.CacheMaxFileSize), int64(cfg.CacheMaxBytes), m),
		metrics:       m,
		fallback:      fallback,
		scriptExt:     o.scriptExt,
		log:           log,
		epoch:         time.Now(),
		now:           time.Now,
	}
	if !alias && h.prefix != "" {
		h.spaKey = h.prefix[1:] + "/"
	}
	h.root.Store(rd)
	return h, nil
}

// errNotDefaulted is returned by New for a block that did not come
// through package config, which owns the defaults: a zero field would mean
// something else here than in the documented configuration.
var errNotDefaulted = errors.New("static: config block has not been defaulted by package config")

// defaulted checks that config has filled in the fields whose zero value
// it replaces; New does not guess their defaults.
func defaulted(cfg *config.Static) error {
	if len(cfg.Index) == 0 || cfg.CacheControl == "" || cfg.Precompressed == nil ||
		cfg.CacheMaxFileSize == nil || cfg.CacheMaxBytes <= 0 || cfg.CacheRevalidate <= 0 ||
		(cfg.Compress != nil && cfg.Compress.Enabled == nil) {
		return errNotDefaulted
	}
	return nil
}

// tick returns monotonic nanoseconds since New; wall-clock jumps do not
// stall or hasten revalidation.
func (h *Handler) tick() int64 {
	return int64(h.now().Sub(h.epoch))
}

// ServeHTTP serves GET and HEAD for the files of the route. Other methods
// get 405 (OPTIONS 204), unless the file is missing and a fallback is set.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.script(w, r) {
		return
	}
	name, code := h.fileName(r.URL.Path)
	if code != 0 {
		h.error(w, code)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.otherMethod(w, r, name)
		return
	}
	h.serveKey(w, r, name, false)
}

// serveKey serves the file or directory name (a cache key: root-relative,
// "" for the directory itself, a trailing slash for a directory request).
// spa is set when name is the SPA index standing in for a missing page.
func (h *Handler) serveKey(w http.ResponseWriter, r *http.Request, name string, spa bool) {
	cc := h.cacheControl
	if spa {
		// The page's URL is not a file; make the browser revalidate it.
		cc = hNoCache
	}
	// The hot path: a cached file checked against the disk within the
	// revalidation interval costs no system call before the write.
	a := h.cache.get(name)
	hit := a != nil && h.fresh(name, a)
	if !spa {
		h.metrics.hit(hit)
	}
	if hit {
		h.serveAsset(w, r, a, cc)
		return
	}
	rd := h.dir()
	file, f, fi, ok := h.resolve(w, r, rd, name, spa)
	if !ok {
		return // answered
	}
	defer f.Close()
	if h.cache.fits(fi.Size()) {
		a, err := h.loadCached(rd, file, f, fi)
		switch {
		case err == nil:
			h.cache.add(strings.Clone(name), a)
			h.serveAsset(w, r, a, cc)
			return
		case !errors.Is(err, errTooLarge):
			h.failed(w, r, name, err, spa)
			return
		}
	}
	q := compress.AcceptQ{compress.Identity: 1000} // a range is served from the identity file
	if len(r.Header["Range"]) == 0 {
		q = compress.ParseAccept(headerValue(r, "Accept-Encoding"))
	}
	a = h.openStreamed(rd, file, f, fi, &q)
	defer a.close() // closes f too; closing twice is harmless
	h.serveAsset(w, r, a, cc)
}

// resolve opens the regular file that serves name: the file itself, or the
// index of a directory. Otherwise it answers the request itself (redirect,
// listing, fallbacks, error) and returns ok false.
func (h *Handler) resolve(w http.ResponseWriter, r *http.Request, rd *rootDir, name string, spa bool) (file string, f *os.File, fi fs.FileInfo, ok bool) {
	file = openName(name)
	f, err := h.open(rd, file)
	if err == nil {
		fi, err = f.Stat()
		if err != nil {
			f.Close()
		}
	}
	switch {
	case err != nil:
		h.failed(w, r, name, err, spa)
		return "", nil, nil, false
	case fi.Mode().IsRegular() && !strings.HasSuffix(name, "/"):
		return file, f, fi, true
	case !fi.IsDir():
		// A FIFO, device or socket is not content; "file.js/" is not a
		// directory.
		f.Close()
		h.missing(w, r, name, spa)
		return "", nil, nil, false
	}
	dir := f
	defer dir.Close()
	if !spa && !strings.HasSuffix(r.URL.Path, "/") {
		h.redirectDir(w, r)
		return "", nil, nil, false
	}
	if file, f, fi, ok = h.findIndex(rd, name); ok {
		return file, f, fi, true
	}
	if h.browse && !spa {
		h.serveListing(w, r, rd, dir, name)
	} else {
		h.missing(w, r, name, spa)
	}
	return "", nil, nil, false
}

// fresh reports whether a cached asset may be served as is. At most once
// per revalidation interval one request stats its files; the others keep
// serving the entry meanwhile. A changed entry is dropped.
func (h *Handler) fresh(key string, a *asset) bool {
	now := h.tick()
	last := a.checked.Load()
	if now-last < h.revalidate || !a.checked.CompareAndSwap(last, now) {
		return true
	}
	if h.unchanged(a) {
		return true
	}
	h.cache.remove(key, a)
	return false
}

// openName turns a cache key into a name for os.Root.
func openName(key string) string {
	if key = strings.TrimSuffix(key, "/"); key == "" {
		return "."
	}
	return key
}

// findIndex opens the first index file of the directory dir (a key).
func (h *Handler) findIndex(rd *rootDir, dir string) (string, *os.File, fs.FileInfo, bool) {
	base := strings.TrimSuffix(dir, "/")
	for _, idx := range h.index {
		name := idx
		if base != "" {
			name = base + "/" + idx
		}
		if f, fi, ok := h.openRegular(rd, name); ok {
			return name, f, fi, true
		}
	}
	return "", nil, nil, false
}

// failed answers a filesystem error: a missing file goes on to the
// fallbacks, the rest gets a plain error page.
func (h *Handler) failed(w http.ResponseWriter, r *http.Request, name string, err error, spa bool) {
	code := errorStatus(err)
	switch code {
	case http.StatusNotFound:
		h.missing(w, r, name, spa)
		return
	case http.StatusInternalServerError:
		h.log.Warn("static file error", "path", name, "err", err)
	}
	h.error(w, code)
}

// missing answers a request for a file that does not exist: the fallback
// handler, else the SPA index for paths that look like pages, else 404.
func (h *Handler) missing(w http.ResponseWriter, r *http.Request, name string, spa bool) {
	switch {
	case spa:
		h.error(w, http.StatusNotFound) // the SPA index itself is missing
	case h.fallback != nil:
		h.fallback.ServeHTTP(w, r)
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		h.notAllowed(w, r)
	case h.spa && looksLikePage(name):
		h.serveKey(w, r, h.spaKey, true)
	default:
		h.error(w, http.StatusNotFound)
	}
}

// looksLikePage reports whether a missing path is a client-side route the
// SPA index should answer: its last segment has no extension, or is .html.
// A missing asset (app.js, logo.png, map.json) stays a 404, so that a
// broken deploy shows up as errors rather than as HTML parsed as script.
func looksLikePage(name string) bool {
	last := name[strings.LastIndexByte(name, '/')+1:]
	dot := strings.LastIndexByte(last, '.')
	if dot < 0 {
		return true
	}
	ext := strings.ToLower(last[dot:])
	return ext == ".html" || ext == ".htm"
}

// otherMethod answers methods other than GET and HEAD. A missing file goes
// to the fallback whatever the method, as nginx's try_files does (the
// backend may take a POST); everything else is 405, or 204 for OPTIONS.
func (h *Handler) otherMethod(w http.ResponseWriter, r *http.Request, name string) {
	if h.fallback != nil && !h.exists(name) {
		h.fallback.ServeHTTP(w, r)
		return
	}
	h.notAllowed(w, r)
}

// exists reports whether name is a file or directory of the route, as
// opposed to missing.
func (h *Handler) exists(name string) bool {
	if h.cache.get(name) != nil {
		return true
	}
	fi, err := h.stat(h.dir(), openName(name))
	if err != nil {
		return errorStatus(err) != http.StatusNotFound
	}
	return fi.IsDir() || !strings.HasSuffix(name, "/")
}

var hAllow = []string{"GET, HEAD"}

func (h *Handler) notAllowed(w http.ResponseWriter, r *http.Request) {
	w.Header()["Allow"] = hAllow
	if r.Method == http.MethodOptions {
		w.Header()["X-Content-Type-Options"] = hNosniff
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.error(w, http.StatusMethodNotAllowed)
}

// redirectDir sends a request for a directory without its trailing slash
// to the slash form, keeping the query, so that relative links in its
// index resolve.
func (h *Handler) redirectDir(w http.ResponseWriter, r *http.Request) {
	u := url.URL{Path: r.URL.Path + "/", RawQuery: r.URL.RawQuery}
	hdr := w.Header()
	hdr.Set("Location", u.String())
	hdr["X-Content-Type-Options"] = hNosniff
	hdr["Content-Type"] = hTextPlain
	w.WriteHeader(http.StatusMovedPermanently)
	io.WriteString(w, "301 Moved Permanently\n")
}

// error answers with edge's one error page (httperr.Error: plain text,
// nosniff, "Cache-Control: no-store"). The file's validators and
// Content-Encoding may already be set (a 412 after the headers were
// prepared); httperr.Error clears those, and Accept-Ranges and Vary, which
// also described the file, go here.
func (h *Handler) error(w http.ResponseWriter, code int) {
	hdr := w.Header()
	delete(hdr, "Accept-Ranges")
	delete(hdr, "Vary")
	httperr.Error(w, code)
}
