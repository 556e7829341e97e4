package server

import (
	"bytes"
)

// framing follows the HTTP/1 message framing of what a client sends on one
// connection, request after request, as net/http will read it: request
// line, header fields, then the body by Content-Length or chunked coding,
// then the next request. It exists because net/http resolves the framing
// conflicts that request smuggling relies on by itself and deletes the
// evidence before a handler runs (transfer.go: Content-Length is dropped
// when Transfer-Encoding is present; Transfer-Encoding is dropped and
// ignored on HTTP/1.0, so a chunked body is read as the next request).
// RFC 9112 §6.1 and §6.3 say such a message is an error, and nginx answers
// 400 and closes: framing records the first request whose framing is
// ambiguous in its connState, and the listener answers it, and everything
// after it on the connection, with 400 and Connection: close.
//
// It never copies the bytes it reads: whole lines are looked at where they
// lie; a line split across reads keeps only its first headCap and last
// tailCap bytes, which is all a verdict needs. Body bytes are skipped by
// count. Owned by the connection's reader (guardConn.Read), which net/http
// and, after a hijack, the hijacker call one at a time.
type framing struct {
	st *connState // where verdicts go

	state  uint8
	index  int64 // of the request being read on the connection, from 0
	remain int64 // body or chunk-data bytes still to skip
	size   int64 // bytes of the current header section or trailer

	// The request being read.
	http11  bool // HTTP/1.1 or later
	connect bool
	upgrade bool
	hasCL   bool
	cl      int64
	te      int  // Transfer-Encoding fields
	teBad   bool // a Transfer-Encoding other than "chunked"
	crlf    int  // bytes of the CRLF after chunk data seen

	// A line split across reads: its length so far, its first headCap and
	// its last tailCap bytes.
	n    int
	head [headCap]byte
	tail [tailCap]byte
}

const (
	stRequestLine = iota
	stHeader
	stBody       // Content-Length bytes
	stChunkLine  // chunk-size [; extensions] CRLF
	stChunkData  // chunk bytes
	stChunkCRLF  // the CRLF after chunk data
	stTrailer    // trailer fields after the last chunk
	stDone       // verdict given: the rest is not looked at
	headCap      = 64
	tailCap      = 16
	maxChunkLine = 4096 // net/http's limit (internal/chunked.go)
	// maxHeaderScan bounds the bytes of one header section or trailer
	// that framing follows; past it the connection is served to the end
	// of that request and then closed. net/http refuses far less
	// (server.max_header_bytes), so this only stops a runaway scan.
	maxHeaderScan = 1 << 20
)

// line is one line without its LF: its first headCap and last tailCap
// bytes, and its length; whole when head holds all of it.
type line struct {
	head []byte
	tail []byte
	n    int
}

func (l *line) whole() bool { return len(l.head) == l.n }

func (l *line) last() byte { return l.tail[len(l.tail)-1] }

// trimCR drops one trailing CR, as net/http's line reader does.
func (l *line) trimCR() {
	if l.n > 0 && l.last() == '\r' {
		l.n--
		l.tail = l.tail[:len(l.tail)-1]
		if len(l.head) > l.n {
			l.head = l.head[:l.n]
		}
	}
}

// feed follows p, the next bytes read from the client.
func (f *framing) feed(p []byte) {
	for len(p) > 0 && f.state != stDone {
		switch f.state {
		case stBody, stChunkData:
			k := min(int64(len(p)), f.remain)
			f.remain -= k
			p = p[k:]
			if f.remain == 0 {
				if f.state == stBody {
					f.next()
				} else {
					f.state = stChunkCRLF
				}
			}
		case stChunkCRLF:
			if p[0] != "\r\n"[f.crlf] {
				f.bad() // net/http: malformed chunked encoding
				return
			}
			p = p[1:]
			if f.crlf++; f.crlf == 2 {
				f.crlf = 0
				f.state = stChunkLine
			}
		default:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				f.carry(p)
				f.overflow()
				return
			}
			if f.n == 0 && f.state == stHeader && i > 1 && !mayFrame(p[0]) {
				// The common field (Host, Accept, Cookie, ...), whole in
				// this read: only its size matters.
				if f.size += int64(i) + 1; f.size > maxHeaderScan {
					f.blind()
					return
				}
				p = p[i+1:]
				continue
			}
			var l line
			if f.n == 0 {
				// The same view of the line as if it had been split, so
				// that the verdict never depends on where reads split.
				l = line{head: p[:min(i, headCap)], tail: p[max(0, i-tailCap):i], n: i}
			} else {
				f.carry(p[:i])
				l = line{head: f.head[:min(f.n, headCap)], tail: f.tail[tailCap-min(f.n, tailCap):], n: f.n}
				f.n = 0
			}
			p = p[i+1:]
			f.line(&l)
		}
	}
}

// carry keeps what a partial line needs of b.
func (f *framing) carry(b []byte) {
	if f.n < headCap {
		copy(f.head[f.n:], b)
	}
	if len(b) >= tailCap {
		copy(f.tail[:], b[len(b)-tailCap:])
	} else {
		copy(f.tail[:], f.tail[len(b):])
		copy(f.tail[tailCap-len(b):], b)
	}
	f.n += len(b)
}

// overflow stops following a line that grew past any limit net/http has.
func (f *framing) overflow() {
	switch {
	case f.state == stChunkLine && f.n > maxChunkLine+2:
		f.bad()
	case f.size+int64(f.n) > maxHeaderScan:
		f.blind()
	}
}

func (f *framing) line(l *line) {
	switch f.state {
	case stRequestLine:
		l.trimCR()
		f.requestLine(l)
	case stHeader, stTrailer:
		f.size += int64(l.n) + 1
		if f.size > maxHeaderScan {
			f.blind()
			return
		}
		l.trimCR()
		if f.state == stTrailer {
			if l.n == 0 {
				f.next()
			}
			return
		}
		if l.n == 0 {
			f.endHeader()
			return
		}
		f.headerField(l)
	case stChunkLine:
		f.chunkLine(l)
	}
}

// requestLine notes the method and version; net/http refuses (and closes
// on) request lines that are not "METHOD SP target SP HTTP/x.y".
func (f *framing) requestLine(l *line) {
	if l.n == 0 {
		f.bad()
		return
	}
	f.connect = bytes.HasPrefix(l.head, []byte("CONNECT "))
	sp := bytes.LastIndexByte(l.tail, ' ')
	if !l.whole() && sp < 0 {
		f.bad()
		return
	}
	v := l.tail[sp+1:]
	if l.whole() {
		v = l.head[bytes.LastIndexByte(l.head, ' ')+1:]
	}
	if len(v) != 8 || string(v[:7]) != "HTTP/1." || v[7] < '0' || v[7] > '9' {
		f.bad() // not HTTP/1.x: net/http answers 400 or 505 and closes
		return
	}
	f.http11 = v[7] >= '1'
	f.state = stHeader
}

// headerField looks at the fields that decide where the body ends.
func (f *framing) headerField(l *line) {
	if c := l.head[0]; c == ' ' || c == '\t' {
		// obs-fold (RFC 9112 §5.2): net/http would join it to the
		// previous field, which may be one that frames the body.
		f.bad()
		return
	}
	colon := bytes.IndexByte(l.head, ':')
	if colon < 0 {
		// Not a field (net/http answers 400 and closes), or a name
		// longer than headCap: none of ours.
		return
	}
	name := l.head[:colon]
	switch len(name) {
	case len("content-length"), len("transfer-encoding"), len("upgrade"):
	default:
		return
	}
	switch {
	case bytes.EqualFold(name, []byte("upgrade")):
		f.upgrade = true
		return
	case bytes.EqualFold(name, []byte("content-length")):
	case bytes.EqualFold(name, []byte("transfer-encoding")):
	default:
		return
	}
	if !l.whole() {
		f.bad() // a padded framing value no client sends
		return
	}
	value := bytes.Trim(l.head[colon+1:], " \t")
	if name[0]|0x20 == 't' {
		f.te++
		f.teBad = f.teBad || !bytes.EqualFold(value, []byte("chunked"))
		return
	}
	n, ok := parseLength(value)
	if !ok || (f.hasCL && n != f.cl) {
		f.bad() // net/http: bad or conflicting Content-Length, 400
		return
	}
	f.hasCL, f.cl = true, n
}

// mayFrame reports whether a header line starting with c may be one that
// headerField looks at: Content-Length, Transfer-Encoding, Upgrade, or a
// folded continuation.
func mayFrame(c byte) bool {
	switch c | 0x20 {
	case 'c', 't', 'u', ' ', '\t' | 0x20:
		return true
	}
	return false
}

// endHeader decides how the body is framed, or that it is ambiguous.
func (f *framing) endHeader() {
	switch {
	case f.te > 0 && f.hasCL, f.te > 0 && !f.http11:
		// RFC 9112 §6.1: Transfer-Encoding with Content-Length, or in
		// HTTP/1.0, which does not know it: the ends of the message that
		// a server and a proxy before it see may differ. 400 and close.
		f.bad()
	case f.te > 1 || f.teBad:
		f.bad() // net/http answers 501 and closes
	case f.connect || f.upgrade:
		// What follows may be tunnel data for a handler that hijacks.
		f.blind()
	case f.te == 1:
		f.state = stChunkLine
	case f.cl > 0:
		f.state, f.remain = stBody, f.cl
	default:
		f.next()
	}
}

// chunkLine reads a chunk-size line as net/http does: CRLF-terminated, no
// other CR, extensions after ";" ignored, at most 16 hex digits.
func (f *framing) chunkLine(l *line) {
	if !endsInCRLF(l) || l.n-1 >= maxChunkLine {
		f.bad()
		return
	}
	var size []byte
	if l.whole() {
		size = bytes.TrimRight(l.head[:l.n-1], " \t")
		size, _, _ = bytes.Cut(size, []byte(";"))
	} else if semi := bytes.IndexByte(l.head, ';'); semi >= 0 {
		size = l.head[:semi]
	}
	n, ok := parseHex(size)
	if !ok {
		f.bad()
		return
	}
	if n == 0 {
		f.state, f.size = stTrailer, 0
		return
	}
	f.state, f.remain = stChunkData, n
}

// endsInCRLF reports whether l (read up to its LF) ends in CR and has no
// other CR where framing can see.
func endsInCRLF(l *line) bool {
	if l.n == 0 || l.last() != '\r' {
		return false
	}
	if l.whole() {
		return bytes.IndexByte(l.head[:l.n-1], '\r') < 0
	}
	// A CR in the middle of a long extension goes unseen here; net/http
	// refuses the chunk and closes the connection.
	return bytes.IndexByte(l.head, '\r') < 0 && bytes.IndexByte(l.tail[:len(l.tail)-1], '\r') < 0
}

// next starts the next request on the connection.
func (f *framing) next() {
	*f = framing{st: f.st, index: f.index + 1}
}

// bad records that the current request's framing is ambiguous (or that
// net/http will refuse it); nothing after it is looked at.
func (f *framing) bad() {
	f.st.badAt.CompareAndSwap(0, f.index+1)
	f.state = stDone
}

// blind stops following the connection after the current request: its
// bytes may be a tunnel's, or too many to follow. Later requests on it
// are served and the connection then closed.
func (f *framing) blind() {
	f.st.blindAt.Store(f.index + 1)
	f.state = stDone
}

// parseLength parses a Content-Length value as net/http does (decimal,
// fits in 63 bits).
func parseLength(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

func parseHex(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 15 { // 15 keeps it in int64; net/http allows 16
		return 0, false
	}
	var n int64
	for _, c := range v {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		n = n<<4 | int64(c)
	}
	return n, true
}
