package fastcgi

import (
	"net/http"

	"edge/config"
	"edge/internal/httperr"
)

// Scripts returns next (the proxy handler running cfg's pool with a
// Transport) behind the script lookup: a request whose path names no
// existing script is answered 404 here, with the site's error page,
// before a server is picked; the others carry their script to the
// Transport in the request's context, so that the file system is asked
// once.
func Scripts(cfg *config.FastCGI, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := resolve(cfg, r.URL.Path)
		if !ok {
			httperr.Error(w, http.StatusNotFound)
			return
		}
		next.ServeHTTP(w, r.WithContext(withScript(r.Context(), s)))
	})
}
