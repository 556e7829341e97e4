// Package fastcgi is edge's FastCGI client: an http.RoundTripper that
// runs a request as a script on a FastCGI server (PHP-FPM) and returns
// the script's output as an *http.Response. The proxy handler uses it in
// place of its HTTP transport, so that a fastcgi route has the proxy's
// upstream selection, passive and active health, retries, request
// buffering, error pages, metrics and access log without a second copy;
// cmd/edge wires the two.
//
// One request runs per connection at a time (request id 1, no
// multiplexing, as php-fpm). With keepalive above 0 connections are kept
// with the keep-conn flag in a small idle pool per server.
package fastcgi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"edge/config"
)

// DialFunc connects to a server's address, as net.Dialer.DialContext.
// The proxy passes its own: dial slots, unix sockets, connect errors that
// its retries recognise.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Transport is a FastCGI RoundTripper for the servers of one fastcgi
// route. The request's URL host is the address dialled. Safe for
// concurrent use.
type Transport struct {
	// Static after NewTransport.
	cfg           *config.FastCGI
	dial          DialFunc
	log           *slog.Logger
	headerTimeout time.Duration
	keep          int // idle connections kept per address; 0: none

	mu     sync.Mutex
	idle   map[string][]*conn // guarded by mu
	closed bool               // guarded by mu: CloseIdleConnections was called
}

// NewTransport returns the Transport of a fastcgi route. cfg must have had
// the config defaults applied. log receives the scripts' stderr at Warn;
// nil discards it.
func NewTransport(cfg *config.FastCGI, dial DialFunc, log *slog.Logger) *Transport {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Transport{
		cfg: cfg, dial: dial, log: log,
		headerTimeout: cfg.Pool.ResponseHeaderTimeout,
		keep:          *cfg.Pool.KeepAlive,
		idle:          map[string][]*conn{},
	}
}

// maxHeaderBytes bounds the CGI header block of a response; a larger one
// is a 502, as nginx's "upstream sent too big header".
const maxHeaderBytes = 1 << 20

// maxStderrBytes bounds how much of a request's stderr is logged.
const maxStderrBytes = 4 << 10

// idleTimeout closes connections idle this long in the pool.
const idleTimeout = 30 * time.Second

// conn is one connection to a server.
type conn struct {
	net.Conn
	addr string
	br   *bufio.Reader
	bw   *bufio.Writer
	used time.Time // when it went idle
}

// RoundTrip runs req. A request whose script does not exist gets a 404
// response without contacting the server (the Handler answers those
// before). Errors from the dial are the DialFunc's; a server that closes
// or sends what is not FastCGI gives an error (the proxy answers 502), a
// response header that does not come within response_header_timeout a
// timeout (504).
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	s, ok := scriptFrom(req.Context())
	if !ok {
		if s, ok = resolve(t.cfg, req.URL.Path); !ok {
			return notFound(req), nil
		}
	}
	body := req.Body
	if body == http.NoBody {
		body = nil
	}
	if body != nil && req.ContentLength < 0 {
		// CGI needs CONTENT_LENGTH: a body of unknown length (chunked,
		// beyond request_buffering) is spooled to a file first, as nginx
		// does. max_body_size has bounded it.
		f, n, err := spool(body)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r2 := *req
		r2.ContentLength, r2.Body = n, f
		req, body = &r2, f
	}
	ctx := req.Context()
	c, err := t.get(ctx, req.URL.Host)
	if err != nil {
		return nil, err
	}
	// The context's end interrupts any read or write on the connection.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		c.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}

	rw := &recordWriter{w: c.bw}
	rw.beginRequest(t.keep > 0)
	p := params(make([]byte, 0, 1024), req, s, t.cfg.Root, t.cfg.Env)
	writePairs(rw, p)
	rw.record(typeParams, nil)
	var wrote chan error // the body writer's result; nil: written here
	if body == nil {
		rw.record(typeStdin, nil)
		if err := c.bw.Flush(); err != nil {
			return fail(err)
		}
	} else {
		// The body is written while the response is read: a script may
		// answer before it has read its input, and neither side may wait
		// for the other.
		if err := c.bw.Flush(); err != nil {
			return fail(err)
		}
		wrote = make(chan error, 1)
		go func() { wrote <- writeBody(rw, body) }()
	}

	if t.headerTimeout > 0 {
		c.SetReadDeadline(time.Now().Add(t.headerTimeout))
	}
	var logged int
	out := &stdoutReader{r: c.br, limit: maxHeaderBytes, stderr: func(b []byte) {
		logged = t.logStderr(s, b, logged)
	}}
	tr := textproto.NewReader(bufio.NewReaderSize(out, 4096))
	hdr, err := tr.ReadMIMEHeader()
	if err != nil {
		if errors.Is(err, io.EOF) && !out.started {
			err = fmt.Errorf("fastcgi: server closed the connection: %w", io.ErrUnexpectedEOF)
		} else if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: response without a header block", errProtocol)
		}
		return fail(err)
	}
	c.SetReadDeadline(time.Time{})
	out.limit = -1

	res := &http.Response{
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header(hdr), Request: req, ContentLength: -1,
		StatusCode: http.StatusOK,
	}
	if st := hdr.Get("Status"); st != "" {
		code, err := strconv.Atoi(strings.TrimSpace(strings.SplitN(strings.TrimSpace(st), " ", 2)[0]))
		if err != nil || code < 100 || code > 999 {
			return fail(fmt.Errorf("%w: invalid Status %q", errProtocol, st))
		}
		res.StatusCode = code
		delete(res.Header, "Status")
	} else if hdr.Get("Location") != "" {
		res.StatusCode = http.StatusFound // RFC 3875 section 6.2.3
	}
	res.Status = strconv.Itoa(res.StatusCode) + " " + http.StatusText(res.StatusCode)
	if cl := hdr.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			res.ContentLength = n
		} else {
			delete(res.Header, "Content-Length")
		}
	}
	if n, ok := out.buffered(); ok && res.ContentLength < 0 {
		res.ContentLength = int64(tr.R.Buffered()) + n
	}
	if req.Method == http.MethodHead {
		res.ContentLength = max(res.ContentLength, 0)
	}
	res.Body = &responseBody{t: t, c: c, r: tr.R, out: out, wrote: wrote, stop: stop}
	return res, nil
}

// writePairs writes the PARAMS stream: records that each hold whole
// pairs, since php-fpm decodes each record alone.
func writePairs(rw *recordWriter, p []byte) {
	for len(p) > 0 {
		n := 0
		for n < len(p) {
			l := pairSize(p[n:])
			if n+l > maxContentLen {
				break
			}
			n += l
		}
		rw.record(typeParams, p[:n])
		p = p[n:]
	}
}

// pairSize is the length of the encoded pair at the start of p.
func pairSize(p []byte) int {
	readLen := func(i int) (int, int) {
		if p[i] < 128 {
			return int(p[i]), i + 1
		}
		return int(uint32(p[i]&0x7f)<<24 | uint32(p[i+1])<<16 | uint32(p[i+2])<<8 | uint32(p[i+3])), i + 4
	}
	nl, i := readLen(0)
	vl, i := readLen(i)
	return i + nl + vl
}

// writeBody streams the request body as STDIN records and ends the
// stream.
func writeBody(rw *recordWriter, body io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := body.Read(buf)
		if n > 0 {
			if werr := rw.stream(typeStdin, buf[:n]); werr != nil {
				return werr
			}
			if werr := rw.w.Flush(); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	rw.record(typeStdin, nil)
	return rw.w.Flush()
}

// spool copies a body of unknown length to an unlinked temporary file.
func spool(body io.Reader) (*os.File, int64, error) {
	f, err := os.CreateTemp("", "edge-fastcgi-body-")
	if err != nil {
		return nil, 0, err
	}
	os.Remove(f.Name())
	n, err := io.Copy(f, body)
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	return f, n, nil
}

// logStderr logs what a script wrote to stderr, a line a record, up to
// maxStderrBytes a request; it returns the bytes logged so far.
func (t *Transport) logStderr(s script, b []byte, logged int) int {
	if logged >= maxStderrBytes {
		return logged
	}
	b = b[:min(len(b), maxStderrBytes-logged)]
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if line != "" {
			t.log.Warn("fastcgi stderr", "script", s.file, "line", line)
		}
	}
	return logged + len(b)
}

func notFound(req *http.Request) *http.Response {
	body := "404 page not found\n"
	return &http.Response{
		Status: "404 Not Found", StatusCode: http.StatusNotFound,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req,
	}
}

// responseBody is the script's output after the header block. At the end
// of the request (END_REQUEST) the connection goes back to the pool when
// keep-alive is on and the body was written; closed earlier, it is
// closed.
type responseBody struct {
	t     *Transport
	c     *conn
	r     *bufio.Reader // over out, holding what the header parse read ahead
	out   *stdoutReader
	wrote chan error
	stop  func() bool
	done  bool // the connection was released
	eof   bool
}

func (b *responseBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
		b.release(true)
	}
	return n, err
}

func (b *responseBody) Close() error {
	b.release(b.eof)
	return nil
}

// release ends the request: the connection is kept when the response was
// read to its end and the body written, else closed.
func (b *responseBody) release(complete bool) {
	if b.done {
		return
	}
	b.done = true
	interrupted := !b.stop()
	if !complete || interrupted {
		b.c.Close() // a body writer still running fails and ends
		return
	}
	if b.wrote != nil {
		// The script may have answered without reading all its input:
		// then the rest would be read as the next request.
		select {
		case err := <-b.wrote:
			if err != nil {
				b.c.Close()
				return
			}
		default:
			b.c.Close()
			return
		}
	}
	b.t.put(b.c)
}

// get returns an idle connection to addr that is still open, or dials
// one.
func (t *Transport) get(ctx context.Context, addr string) (*conn, error) {
	for {
		t.mu.Lock()
		list := t.idle[addr]
		var c *conn
		if n := len(list); n > 0 {
			c = list[n-1]
			list[n-1] = nil
			t.idle[addr] = list[:n-1]
		}
		t.mu.Unlock()
		if c == nil {
			break
		}
		if time.Since(c.used) < idleTimeout && alive(c.Conn) {
			return c, nil
		}
		c.Close()
	}
	nc, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: nc, addr: addr, br: bufio.NewReaderSize(nc, 8192), bw: bufio.NewWriterSize(nc, 8192)}, nil
}

// put keeps c for the next request to its address, or closes it.
func (t *Transport) put(c *conn) {
	if t.keep == 0 {
		c.Close()
		return
	}
	if c.br.Buffered() > 0 {
		c.Close() // bytes after END_REQUEST: not a clean state
		return
	}
	c.used = time.Now()
	t.mu.Lock()
	if !t.closed && len(t.idle[c.addr]) < t.keep {
		t.idle[c.addr] = append(t.idle[c.addr], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the idle connections, and every connection
// released from now on.
func (t *Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle, t.closed = map[string][]*conn{}, true
	t.mu.Unlock()
	for _, list := range idle {
		for _, c := range list {
			c.Close()
		}
	}
}

// alive reports whether an idle connection is still open: the server may
// have closed it (a php-fpm worker that reached pm.max_requests, a
// restart). It peeks without blocking; anything readable (EOF, stray
// bytes) means the connection is not fit for a request.
func alive(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	ok = false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		ok = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return err == nil && ok
}

var _ http.RoundTripper = (*Transport)(nil)
