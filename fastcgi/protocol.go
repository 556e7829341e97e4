package fastcgi

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// The FastCGI 1.0 record layer (https://fastcgi-archives.github.io/FastCGI_Specification.html),
// in the order of the specification: record header (section 3.3),
// name-value pairs (3.4), the records of a Responder (5.1, 5.3, 6.2).

const (
	version1 = 1

	typeBeginRequest = 1
	typeAbortRequest = 2
	typeEndRequest   = 3
	typeParams       = 4
	typeStdin        = 5
	typeStdout       = 6
	typeStderr       = 7

	roleResponder = 1
	flagKeepConn  = 1

	// requestID is the one request of a connection: edge does not
	// multiplex (php-fpm does not either), so every request is 1.
	requestID = 1

	headerLen     = 8
	maxContentLen = 65535
)

// errProtocol is a peer that does not speak FastCGI as a responder: an
// unknown record type or version, a record for another request.
var errProtocol = errors.New("fastcgi: protocol error")

// recordWriter writes the records of one request to a buffered
// connection. Not safe for concurrent use.
type recordWriter struct {
	w   *bufio.Writer
	hdr [headerLen]byte
}

// record writes one record of type t with content p (at most
// maxContentLen bytes), padded to a multiple of 8 as the specification
// recommends.
func (rw *recordWriter) record(t byte, p []byte) error {
	pad := byte(-len(p) & 7)
	h := rw.hdr[:]
	h[0], h[1] = version1, t
	binary.BigEndian.PutUint16(h[2:], requestID)
	binary.BigEndian.PutUint16(h[4:], uint16(len(p)))
	h[6], h[7] = pad, 0
	rw.w.Write(h)
	rw.w.Write(p)
	var zeros [8]byte
	_, err := rw.w.Write(zeros[:pad])
	return err
}

// beginRequest starts a Responder request; keep asks the server to keep
// the connection after it.
func (rw *recordWriter) beginRequest(keep bool) error {
	var b [8]byte
	binary.BigEndian.PutUint16(b[:], roleResponder)
	if keep {
		b[2] = flagKeepConn
	}
	return rw.record(typeBeginRequest, b[:])
}

// stream writes p as records of type t, split at maxContentLen.
func (rw *recordWriter) stream(t byte, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), maxContentLen)
		if err := rw.record(t, p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

// pairLen is the encoded size of a name-value pair.
func pairLen(name, value string) int {
	n := len(name) + len(value) + 2
	if len(name) > 127 {
		n += 3
	}
	if len(value) > 127 {
		n += 3
	}
	return n
}

func appendLen(b []byte, n int) []byte {
	if n <= 127 {
		return append(b, byte(n))
	}
	return binary.BigEndian.AppendUint32(b, uint32(n)|1<<31)
}

// appendPair appends the encoding of a name-value pair.
func appendPair(b []byte, name, value string) []byte {
	b = appendLen(b, len(name))
	b = appendLen(b, len(value))
	b = append(b, name...)
	return append(b, value...)
}

// stdoutReader reads a response: the content of STDOUT records, with
// STDERR content handed to stderr and the stream ending (io.EOF) at
// END_REQUEST. A Read returns at most what one record holds, so that a
// streamed response reaches the client as it arrives. Not safe for
// concurrent use.
type stdoutReader struct {
	r       *bufio.Reader // the connection
	left    int           // content bytes of the current STDOUT record not yet read
	pad     int           // its padding
	stderr  func([]byte)
	limit   int64 // bytes Read may still return; <0: no limit
	err     error // sticky
	started bool  // a record arrived: the server took the request
}

// errTooLarge is a response header beyond the limit.
var errTooLarge = errors.New("fastcgi: response header too large")

func (s *stdoutReader) Read(p []byte) (int, error) {
	for s.left == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.pad > 0 {
			if _, err := s.r.Discard(s.pad); err != nil {
				s.err = unexpected(err)
				return 0, s.err
			}
			s.pad = 0
		}
		if err := s.next(); err != nil {
			s.err = err
			return 0, err
		}
	}
	if len(p) > s.left {
		p = p[:s.left]
	}
	if s.limit >= 0 {
		if s.limit == 0 {
			return 0, errTooLarge
		}
		if int64(len(p)) > s.limit {
			p = p[:s.limit]
		}
	}
	n, err := s.r.Read(p)
	s.left -= n
	if s.limit >= 0 {
		s.limit -= int64(n)
	}
	if err != nil {
		s.err = unexpected(err)
		if n == 0 {
			return 0, s.err
		}
	}
	return n, nil
}

// next reads record headers up to the next STDOUT content or the end of
// the request.
func (s *stdoutReader) next() error {
	var h [headerLen]byte
	if _, err := io.ReadFull(s.r, h[:]); err != nil {
		if s.started {
			return unexpected(err)
		}
		return err // io.EOF: the server closed before answering
	}
	s.started = true
	if h[0] != version1 {
		return fmt.Errorf("%w: record version %d", errProtocol, h[0])
	}
	id := binary.BigEndian.Uint16(h[2:])
	n := int(binary.BigEndian.Uint16(h[4:]))
	pad := int(h[6])
	if id != requestID {
		return fmt.Errorf("%w: record for request %d", errProtocol, id)
	}
	switch h[1] {
	case typeStdout:
		s.left, s.pad = n, pad
		return nil // an empty STDOUT record ends the stream; END_REQUEST follows
	case typeStderr:
		b, err := s.r.Peek(n)
		if err != nil {
			// More than the buffer holds: pass on what fits.
			if errors.Is(err, bufio.ErrBufferFull) {
				s.stderr(b)
				_, err = s.r.Discard(n + pad)
				return unexpected(err)
			}
			return unexpected(err)
		}
		s.stderr(b)
		_, err = s.r.Discard(n + pad)
		return unexpected(err)
	case typeEndRequest:
		if n < 8 {
			return fmt.Errorf("%w: short END_REQUEST", errProtocol)
		}
		if _, err := s.r.Discard(n + pad); err != nil {
			return unexpected(err)
		}
		return io.EOF
	}
	return fmt.Errorf("%w: unexpected record type %d", errProtocol, h[1])
}

// buffered reports whether the rest of the response, up to its
// END_REQUEST, is already in the connection's buffer, so that reading it
// to the end cannot block, and how many STDOUT bytes it holds. A short
// response (most pages) then goes out with a Content-Length in one write
// instead of chunked and flushed record by record.
func (s *stdoutReader) buffered() (int64, bool) {
	if s.err != nil {
		return 0, s.err == io.EOF
	}
	b, _ := s.r.Peek(s.r.Buffered()) // what is buffered: cannot fail
	i, n := s.left+s.pad, int64(s.left)
	for {
		if i+headerLen > len(b) {
			return 0, false
		}
		h := b[i : i+headerLen]
		if h[0] != version1 || binary.BigEndian.Uint16(h[2:]) != requestID {
			return 0, false // the reader reports it
		}
		size := int(binary.BigEndian.Uint16(h[4:])) + int(h[6])
		switch h[1] {
		case typeStdout:
			n += int64(binary.BigEndian.Uint16(h[4:]))
		case typeStderr:
		case typeEndRequest:
			return n, i+headerLen+size <= len(b)
		default:
			return 0, false
		}
		i += headerLen + size
	}
}

// unexpected turns an EOF in the middle of a response into
// io.ErrUnexpectedEOF.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
