package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"

	"edge/internal/httperr"
)

// bufferBody reads the first request_buffering bytes of r's body before any
// upstream is contacted, as nginx's proxy_request_buffering: a body that
// fits is read completely and goes upstream with a Content-Length, so that
// a client sending its body slowly, or never finishing it, holds no backend
// worker (the server's client_body_timeout bounds the wait). A larger body
// streams after the buffered prefix. The body is wrapped so that its read
// failures are *httperr.BodyError, the client's fault, wherever they come
// out (here, or from a Transport writing the rest upstream). A body read
// completely is marked in st: its Expect: 100-continue is answered by edge
// and not forwarded.
func (h *Handler) bufferBody(r *http.Request, st *reqState) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	body := httperr.BodyReader(r.Body)
	r.Body = body
	if h.buffering == 0 {
		return nil
	}
	if r.ContentLength > 0 {
		return bufferKnown(r, st, body, min(r.ContentLength, h.buffering))
	}
	// Unknown length (chunked, or HTTP/2 without content-length): read one
	// byte more than the limit to learn whether the body fits.
	b, err := io.ReadAll(io.LimitReader(body, h.buffering+1))
	if err != nil {
		return err
	}
	if int64(len(b)) > h.buffering {
		r.Body = prefixed(b, body)
		return nil
	}
	setBuffered(r, st, b)
	return nil
}

// bufferKnown reads n bytes of a body of known length: all of it when it
// fits, else the prefix.
func bufferKnown(r *http.Request, st *reqState, body io.ReadCloser, n int64) error {
	b := make([]byte, n)
	if _, err := io.ReadFull(body, b); err != nil {
		if errors.Is(err, io.EOF) {
			// Shorter than its Content-Length: net/http's body reader
			// reports io.ErrUnexpectedEOF itself; this is the same fact.
			err = &httperr.BodyError{Err: io.ErrUnexpectedEOF}
		}
		return err
	}
	if n < r.ContentLength {
		r.Body = prefixed(b, body)
		return nil
	}
	setBuffered(r, st, b)
	return nil
}

// setBuffered makes b the whole body of r, sent with a Content-Length.
func setBuffered(r *http.Request, st *reqState, b []byte) {
	st.buffered = true
	r.TransferEncoding = nil
	r.ContentLength = int64(len(b))
	if len(b) == 0 {
		r.Body = http.NoBody
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
}

// prefixed is a body whose first bytes were read already.
func prefixed(b []byte, rest io.ReadCloser) io.ReadCloser {
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), rest), rest}
}

// clientFault reports whether err is the client's doing rather than the
// upstream's: its body could not be read (malformed, truncated, too large,
// too slow) or it went away. Such errors never count against an
// upstream's health and are never retried.
func clientFault(r *http.Request, err error) bool {
	var be *httperr.BodyError
	var mb *http.MaxBytesError
	return r.Context().Err() != nil || errors.As(err, &be) || errors.As(err, &mb)
}

// clientFailed answers a request that failed by the client's fault:
// 400 for a malformed body, 408 for one that stalled past
// client_body_timeout, 413 over the size limit. A client that went away or
// sent less than it announced gets no response at all: the request is
// abandoned and logged as 499, and nothing is written to the wire.
func (h *Handler) clientFailed(w http.ResponseWriter, r *http.Request, st *reqState, err error) {
	code := http.StatusBadRequest
	var be *httperr.BodyError
	var mb *http.MaxBytesError
	switch {
	case errors.As(err, &be):
		code = be.Status()
	case errors.As(err, &mb):
		code = http.StatusRequestEntityTooLarge
	}
	if code == http.StatusBadRequest && r.Context().Err() != nil {
		// The client went away (an HTTP/2 stream reset reads as a plain
		// error). A read timeout cancels the context too, but it still
		// gets its 408.
		code = httperr.StatusClientClosed
	}
	upstream := upstreamName(st.upstream)
	if upstream == "" {
		upstream = upstreamName(st.failed)
	}
	msg := "request body failed"
	if code == httperr.StatusClientClosed {
		msg = "client went away"
	}
	h.log.Debug(msg, "cause", "client_body", "status", code, "upstream", upstream,
		"method", r.Method, "path", r.URL.Path, "err", err)
	h.metrics.request(upstream, code)
	if code == httperr.StatusClientClosed {
		httperr.Abandon(w, code)
	}
	if r.ProtoMajor == 1 {
		// The rest of the body is in an unknown state: the connection
		// cannot carry another request.
		w.Header().Set("Connection", "close")
	}
	httperr.Error(w, code)
}
