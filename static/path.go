package static

import (
	"net/http"
	"strings"
)

// fileName maps a request path to a root-relative name: with root the
// whole path, with alias the path after the route prefix. "" is the
// directory itself and a trailing slash marks a directory request. It
// returns a status instead when the path is not for this route (404), is
// malformed (400: not absolute, empty, "." or ".." segments, backslashes,
// NUL — the router has already cleaned legitimate paths, so these come
// from hostile or direct callers) or names a dotfile (404).
func (h *Handler) fileName(p string) (string, int) {
	if p == "" || p[0] != '/' {
		return "", http.StatusBadRequest
	}
	rest, ok := strings.CutPrefix(p, h.prefix)
	if !ok || rest != "" && rest[0] != '/' {
		return "", http.StatusNotFound
	}
	name := p[1:]
	if h.alias {
		name = strings.TrimPrefix(rest, "/")
	}
	if code := checkName(p, name); code != 0 {
		return "", code
	}
	return name, 0
}

// checkName checks each segment of name, a suffix of the request path p.
// Dotfiles and dot-directories (.git, .env, .htpasswd) answer 404; the one
// exception is /.well-known/ at the top of the URL (RFC 8615: ACME
// challenges, security.txt).
func checkName(p, name string) int {
	off := len(p) - len(name) // where name starts in p
	for start := 0; start < len(name); {
		end := strings.IndexByte(name[start:], '/')
		if end < 0 {
			end = len(name)
		} else {
			end += start
		}
		seg := name[start:end]
		switch {
		case seg == "" || seg == "." || seg == "..":
			return http.StatusBadRequest
		case strings.ContainsAny(seg, "\\\x00"):
			return http.StatusBadRequest
		case seg[0] == '.' && !(seg == ".well-known" && off+start == 1):
			return http.StatusNotFound
		}
		start = end + 1
	}
	return 0
}
