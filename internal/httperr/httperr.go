// Package httperr is edge's one error responder: the small plain-text
// error page every handler answers with, and the way a handler gives up on
// a request whose client is gone or whose body is unusable without writing
// a made-up status to the wire.
package httperr

import (
	"net/http"
	"strconv"
)

// StatusClientClosed is the status logged for requests the client
// abandoned (nginx's 499). It is never written to the wire.
const StatusClientClosed = 499

// Error writes a small plain-text error page that leaks nothing. The
// response is never cached and never sniffed.
func Error(w http.ResponseWriter, code int) {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	h.Del("ETag")
	h.Del("Last-Modified")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write([]byte(strconv.Itoa(code) + " " + http.StatusText(code) + "\n"))
}

// StatusNoter is implemented by response writers that record a status for
// metrics and access logs (the server's observer). NoteStatus records code
// without writing anything to the client.
type StatusNoter interface {
	NoteStatus(code int)
}

// Note records code as the request's status on every StatusNoter in w's
// Unwrap chain, without writing it.
func Note(w http.ResponseWriter, code int) {
	for w != nil {
		if n, ok := w.(StatusNoter); ok {
			n.NoteStatus(code)
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}

// Abandon ends the request without a response: the status code is logged
// (499 when the client went away) and the connection (or HTTP/2 stream) is
// reset by net/http, which recognises http.ErrAbortHandler and logs
// nothing. It does not return.
func Abandon(w http.ResponseWriter, code int) {
	Note(w, code)
	panic(http.ErrAbortHandler)
}
