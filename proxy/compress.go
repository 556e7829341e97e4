package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"edge/internal/compress"
)

// Compression of proxied responses (proxy.compress), as nginx's gzip on,
// gzip_types and gzip_proxied any, with static's codings, negotiation and
// encoder pools (internal/compress). It works on the upstream's
// *http.Response in modifyResponse, so the lean client and the Transport
// get the same treatment, and it compresses in the goroutine that copies
// the body to the client: no goroutine, pipe or copy of the body of its
// own.

// hVary is the Vary value added to responses whose coding depends on the
// request's Accept-Encoding; never modified.
var hVary = []string{"Accept-Encoding"}

// compressResponse decides whether res goes to the client compressed and,
// if so, rewrites its header and body. The order of the checks is the
// order of their cost: what the response says first, then the request's
// Accept-Encoding, then (only for a body without Content-Length) reading
// up to min_size bytes of it. A response it leaves alone gets at most a
// Vary: Accept-Encoding, when the decision depended on that header.
func (h *Handler) compressResponse(res *http.Response) {
	c := h.comp
	hdr := res.Header
	switch res.StatusCode {
	case http.StatusNoContent, http.StatusPartialContent, http.StatusNotModified:
		return
	}
	if res.StatusCode < 200 || res.ContentLength == 0 || res.Body == nil || res.Body == http.NoBody ||
		len(hdr["Content-Encoding"]) > 0 || len(hdr["Content-Range"]) > 0 {
		return
	}
	ctype := headerValue(hdr, "Content-Type")
	if !c.TypeOK(ctype) || isEventStream(ctype) ||
		httpguts.HeaderValuesContainsToken(hdr["Cache-Control"], "no-transform") {
		return
	}
	if res.ContentLength > 0 && res.ContentLength < c.MinSize() {
		return
	}
	req := res.Request
	if req.Method == http.MethodHead || len(req.Header["Range"]) > 0 || len(req.Header["Upgrade"]) > 0 {
		return
	}
	// From here on, the coding depends on the request's Accept-Encoding
	// (also when the client accepts none of ours): caches must know.
	addVary(hdr)
	q := compress.ParseAccept(headerValue(req.Header, "Accept-Encoding"))
	e := q.Choose(c.Order())
	if e == compress.Identity {
		return
	}
	var prefix []byte
	if res.ContentLength < 0 && c.MinSize() > 0 {
		var err error
		prefix, err = readPrefix(res.Body, int(c.MinSize()))
		if err != nil {
			// Short (io.EOF) or failed: the client gets the body as the
			// upstream sent it, failure included, as without compression.
			res.Body = &prefixedBody{prefix: prefix, err: err, src: res.Body}
			return
		}
	}
	hdr["Content-Encoding"] = []string{e.String()}
	delete(hdr, "Content-Length")
	// nginx: the coded body is another representation, so a strong
	// validator of the identity body would be wrong for it (RFC 9110
	// §8.8.3), and byte ranges of it are not offered.
	if et := headerValue(hdr, "Etag"); strings.HasPrefix(et, `"`) {
		hdr["Etag"] = []string{"W/" + et}
	}
	delete(hdr, "Accept-Ranges")
	// res.ContentLength keeps the upstream's value: ReverseProxy reads it
	// only to choose how to flush, and a body that came with a length is
	// no stream: it is flushed as flush_interval says, where a stream
	// (-1) is flushed after every write, and then the encoder with it.
	b := &compressBody{src: res.Body, prefix: prefix, comp: c, e: e, stream: res.ContentLength < 0}
	b.enc = c.Get(e, &b.out)
	res.Body = b
}

// headerValue returns the first value of a canonical header key without
// the canonicalisation Header.Get does.
func headerValue(h http.Header, key string) string {
	if v := h[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// isEventStream reports a Server-Sent Events response: never compressed,
// whatever types says, so that each event reaches the browser when it is
// sent.
func isEventStream(ctype string) bool {
	mt, _, _ := strings.Cut(ctype, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// addVary adds Accept-Encoding to the response's Vary unless it is there
// already or Vary is "*".
func addVary(hdr http.Header) {
	v := hdr["Vary"]
	if len(v) == 0 {
		hdr["Vary"] = hVary
		return
	}
	if httpguts.HeaderValuesContainsToken(v, "Accept-Encoding") || httpguts.HeaderValuesContainsToken(v, "*") {
		return
	}
	hdr["Vary"] = append(v[:len(v):len(v)], "Accept-Encoding")
}

// readPrefix reads up to n bytes of body. It returns them with a nil
// error when it got all n, else with the error that stopped it (io.EOF:
// the body is shorter). A read that returns data and an error counts
// both.
func readPrefix(body io.Reader, n int) ([]byte, error) {
	buf := make([]byte, n)
	got := 0
	for got < n {
		m, err := body.Read(buf[got:])
		got += m
		if err != nil {
			return buf[:got], err
		}
	}
	return buf, nil
}

// prefixedBody replays a prefix read for the decision, then what reading
// it ended with: io.EOF, or the upstream's (or the client's) error, so
// that ReverseProxy sees the failure as it would have without compress.
type prefixedBody struct {
	prefix []byte
	err    error
	src    io.ReadCloser
}

func (b *prefixedBody) Read(p []byte) (int, error) {
	if len(b.prefix) > 0 {
		n := copy(p, b.prefix)
		b.prefix = b.prefix[n:]
		return n, nil
	}
	return 0, b.err
}

func (b *prefixedBody) Close() error { return b.src.Close() }

// compressBody is the coded body: each Read takes the next piece of the
// upstream body (the prefix read for the decision first) through the
// encoder. The encoder is flushed after every piece of a stream (a body
// without Content-Length), so what the upstream flushed reaches the client
// decodable; a body of known length is coded in as few blocks as the
// encoder likes. Read and Close are called by one goroutine,
// ReverseProxy's copy; a client that goes away ends that copy, which
// closes the body: the encoder goes back to its pool, nothing is left
// running.
type compressBody struct {
	src    io.ReadCloser
	prefix []byte // read for the decision, not coded yet
	comp   *compress.Compressor
	e      compress.Encoding
	enc    compress.Encoder // nil once back in the pool
	stream bool
	out    bytes.Buffer // coded bytes not read yet
	err    error        // returned once out is empty: io.EOF after the encoder's end, or the failure
}

func (b *compressBody) Read(p []byte) (int, error) {
	for b.out.Len() == 0 {
		if b.err != nil {
			return 0, b.err
		}
		if len(p) == 0 {
			return 0, nil
		}
		b.code(p)
	}
	return b.out.Read(p)
}

// code codes the next piece of the body into out, using p (the caller's
// buffer, free until Read returns) to read into: encoders copy what they
// are given.
func (b *compressBody) code(p []byte) {
	var n int
	var err error
	if len(b.prefix) > 0 {
		n = copy(p, b.prefix)
		b.prefix = b.prefix[n:]
	} else {
		n, err = b.src.Read(p)
	}
	if n > 0 {
		if _, werr := b.enc.Write(p[:n]); werr != nil {
			b.fail(werr)
			return
		}
	}
	switch {
	case err == io.EOF:
		if cerr := b.enc.Close(); cerr != nil {
			b.fail(cerr)
			return
		}
		b.release()
		b.err = io.EOF
	case err != nil:
		// What was coded so far goes out, then the error: ReverseProxy
		// aborts the response, so the client sees it cut, never complete.
		b.fail(err)
	case b.stream && n > 0 && len(b.prefix) == 0:
		if ferr := b.enc.Flush(); ferr != nil {
			b.fail(ferr)
		}
	}
}

func (b *compressBody) fail(err error) {
	b.release()
	b.err = err
}

// release hands the encoder back to its pool, once.
func (b *compressBody) release() {
	if b.enc != nil {
		b.comp.Put(b.e, b.enc)
		b.enc = nil
	}
}

func (b *compressBody) Close() error {
	b.release()
	if b.err == nil {
		b.err = http.ErrBodyReadAfterClose
	}
	return b.src.Close()
}
