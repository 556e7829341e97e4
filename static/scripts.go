package static

import (
	"net/http"
	"strings"
)

// WithScripts sends every request whose path has a segment ending in ext
// (".php") to the fallback, file or not: nginx's `location ~ \.php$`
// beside `try_files`. cmd/edge sets it when the fallback is a fastcgi
// route, so that a script under the root runs and its source is never
// served as a file. "": off (the default).
func WithScripts(ext string) Option {
	return func(o *options) { o.scriptExt = ext }
}

// isScript reports whether a segment of the URL path p ends in ext after
// at least one other character.
func isScript(p, ext string) bool {
	for i := 0; ; {
		j := strings.Index(p[i:], ext)
		if j < 0 {
			return false
		}
		end := i + j + len(ext)
		if (end == len(p) || p[end] == '/') && i+j > 0 && p[i+j-1] != '/' {
			return true
		}
		i = end
	}
}

// script hands a script request to the fallback and reports whether it
// did.
func (h *Handler) script(w http.ResponseWriter, r *http.Request) bool {
	if h.scriptExt == "" || h.fallback == nil || !isScript(r.URL.Path, h.scriptExt) {
		return false
	}
	h.fallback.ServeHTTP(w, r)
	return true
}
