// Package httperr is edge's one error responder: the small plain-text
// error page every handler answers with, and the way a handler gives up on
// a request whose client is gone or whose body is unusable without writing
// a made-up status to the wire.
package httperr

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// StatusClientClosed is the status logged for requests the client
// abandoned (nginx's 499). It is never written to the wire.
const StatusClientClosed = 499

// Error writes a small plain-text error page that leaks nothing. The
// response is never cached and never sniffed.
func Error(w http.ResponseWriter, code int) {
	Text(w, code, strconv.Itoa(code)+" "+http.StatusText(code))
}

// Text writes Error's page with text, made one line, as its body: for the
// handlers whose clients are told why (the hub's refusals, PROTOCOL.md).
// text must leak nothing.
func Text(w http.ResponseWriter, code int, text string) {
	if servedPage(w, code) {
		return
	}
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	h.Del("ETag")
	h.Del("Last-Modified")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	io.WriteString(w, strings.ReplaceAll(text, "\n", " ")+"\n")
}

// ErrorPager is implemented by response writers that answer some errors
// with a page of the site's own (error_pages). ServeErrorPage writes the
// page for code through w, with code as its status, and reports whether
// it did.
type ErrorPager interface {
	ServeErrorPage(w http.ResponseWriter, code int) bool
}

// servedPage asks the first ErrorPager in w's Unwrap chain to answer code.
func servedPage(w http.ResponseWriter, code int) bool {
	for u := w; u != nil; {
		if p, ok := u.(ErrorPager); ok {
			return p.ServeErrorPage(w, code)
		}
		next, ok := u.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		u = next.Unwrap()
	}
	return false
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

// BodyError is a failure to read the client's request body. It is the
// client's fault, never the upstream's: it must not count against an
// upstream's health nor cause a retry. Handlers that read request bodies
// wrap read errors in it so that whoever sees the error later (a proxy's
// error handler after the transport returned it) can tell.
type BodyError struct {
	Err error
}

func (e *BodyError) Error() string { return "reading request body: " + e.Err.Error() }

func (e *BodyError) Unwrap() error { return e.Err }

// Status is the response a body failure deserves: 413 over the size
// limit, 408 when the client stalled past client_body_timeout, 499 when the
// client went away or the body ended early (nothing useful can be
// answered: the request is abandoned), 400 for a malformed body (bad
// chunked framing, a length that does not match).
func (e *BodyError) Status() int {
	var mb *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(e.Err, &mb):
		return http.StatusRequestEntityTooLarge
	case errors.Is(e.Err, os.ErrDeadlineExceeded), errors.As(e.Err, &ne) && ne.Timeout():
		return http.StatusRequestTimeout
	case errors.Is(e.Err, io.ErrUnexpectedEOF), errors.Is(e.Err, io.EOF), errors.Is(e.Err, net.ErrClosed),
		errors.Is(e.Err, syscall.ECONNRESET), errors.Is(e.Err, syscall.EPIPE), errors.Is(e.Err, context.Canceled):
		return StatusClientClosed
	}
	return http.StatusBadRequest
}

// BodyReader wraps a request body so that its read errors (other than
// io.EOF) come back as *BodyError.
func BodyReader(body io.ReadCloser) io.ReadCloser {
	if body == nil || body == http.NoBody {
		return body
	}
	return &bodyReader{body}
}

type bodyReader struct{ io.ReadCloser }

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF {
		var be *BodyError
		if !errors.As(err, &be) {
			err = &BodyError{Err: err}
		}
	}
	return n, err
}

// UpstreamNoter is implemented by response writers that log which upstream
// served a request (the server's observer: the access log's `upstream`
// field). NoteUpstream records it without sending anything to the client.
type UpstreamNoter interface {
	NoteUpstream(addr string)
}

// NoteUpstream records addr as the upstream that served the request on the
// first UpstreamNoter in w's Unwrap chain.
func NoteUpstream(w http.ResponseWriter, addr string) {
	for w != nil {
		if n, ok := w.(UpstreamNoter); ok {
			n.NoteUpstream(addr)
			return
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return
		}
		w = u.Unwrap()
	}
}
