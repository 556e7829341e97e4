// Package respond holds the route handlers that answer by themselves,
// without files or upstreams: a redirect (nginx's `return 301 URL`) and a
// fixed response (nginx's `return 200 "ok"`).
package respond

import (
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"edge/config"
)

// Redirect answers every request with c.Status and a Location made from
// c.To, its placeholders filled from the request. c comes from
// config.Parse (defaults applied, target validated).
func Redirect(c *config.Redirect) http.Handler {
	status := c.Status
	parts := split(c.To)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b strings.Builder
		for _, p := range parts {
			switch p {
			case "{host}":
				b.WriteString(hostOnly(r.Host))
			case "{path}":
				b.WriteString(r.URL.EscapedPath())
			case "{query}":
				b.WriteString(r.URL.RawQuery)
			case "{uri}":
				b.WriteString(r.URL.RequestURI())
			default:
				b.WriteString(p)
			}
		}
		h := w.Header()
		// What the request brought cannot break the header: net/http
		// already refuses line breaks in the request line and Host.
		h.Set("Location", strings.NewReplacer("\r", "", "\n", "").Replace(b.String()))
		h.Set("Content-Length", "0")
		w.WriteHeader(status)
	})
}

// placeholders matches the names of config.RedirectPlaceholders in braces.
var placeholders = regexp.MustCompile(`\{(` + strings.Join(config.RedirectPlaceholders, "|") + `)\}`)

// split cuts to into literal parts and placeholders, so that a request
// only concatenates.
func split(to string) []string {
	var parts []string
	last := 0
	for _, m := range placeholders.FindAllStringIndex(to, -1) {
		if m[0] > last {
			parts = append(parts, to[last:m[0]])
		}
		parts = append(parts, to[m[0]:m[1]])
		last = m[1]
	}
	if last < len(to) {
		parts = append(parts, to[last:])
	}
	return parts
}

// hostOnly is the request's host without its port, as nginx's $host.
func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		if strings.Contains(h, ":") {
			return "[" + h + "]"
		}
		return h
	}
	return hostport
}

// Fixed answers every request with c's status, content type and body
// (HEAD: the headers only).
func Fixed(c *config.Respond) http.Handler {
	body := []byte(c.Body)
	ctype := []string{c.ContentType}
	length := []string{strconv.Itoa(len(body))}
	status := c.Status
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		if len(body) > 0 {
			h["Content-Type"] = ctype
			h["X-Content-Type-Options"] = []string{"nosniff"}
		}
		if status != http.StatusNoContent && status != http.StatusNotModified {
			h["Content-Length"] = length
		}
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
	})
}
