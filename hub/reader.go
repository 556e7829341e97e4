package hub

import (
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"slices"
	"sync"
	"unicode/utf8"

	"edge/internal/wsframe"
)

// Client frames are read here, straight from the socket (RFC 6455 §5),
// rather than through gorilla/websocket, which only does the handshake.
// What this buys is an idle connection's memory: while a client sends
// nothing, its reader holds no read buffer and parks in a shallow call
// (readLoop → wait → Read), so its goroutine stays on the 2 KiB minimum
// stack. A read buffer is taken from a pool when bytes arrive and given
// back once none are left.

// readBufSize is the size of the pooled read buffers. It is at least
// net/http's read buffer, so that the bytes it read past the handshake
// fit in one (see hijackTap).
const readBufSize = 4 << 10

// readBufs holds read-ahead and message buffers of readBufSize bytes.
var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

func getReadBuf() *[]byte { return readBufs.Get().(*[]byte) }

// putReadBuf returns a buffer to the pool; larger ones (grown for a large
// message) are left to the garbage collector.
func putReadBuf(b *[]byte) {
	if cap(*b) == readBufSize {
		*b = (*b)[:readBufSize]
		readBufs.Put(b)
	}
}

// protocolError is a client frame RFC 6455 forbids: it ends the
// connection with close code 1002.
func protocolError(format string, args ...any) error {
	return &wsframe.CloseError{Code: wsframe.CloseProtocolError, Reason: fmt.Sprintf(format, args...)}
}

// errPeerClosed ends the reader after the client's close frame.
var errPeerClosed = errors.New("websocket: closed by the client")

// readBuffer is the read side of a client connection. Owned by the
// reader goroutine.
type readBuffer struct {
	// buf holds bytes read ahead of parsing, buf[r:w]; nil while idle.
	buf  *[]byte
	r, w int
	// idle receives the first bytes after an idle wait.
	idle [8]byte
}

// setEarly makes bytes read before the reader started (with the
// handshake) the first ones parsed.
func (rd *readBuffer) setEarly(p []byte) {
	if len(p) == 0 {
		return
	}
	if len(p) <= readBufSize {
		rd.buf = getReadBuf()
	} else {
		b := make([]byte, len(p))
		rd.buf = &b
	}
	rd.r, rd.w = 0, copy(*rd.buf, p)
}

// release gives the read buffer back once nothing is buffered.
func (rd *readBuffer) release() {
	if rd.buf != nil && rd.r == rd.w {
		putReadBuf(rd.buf)
		rd.buf, rd.r, rd.w = nil, 0, 0
	}
}

// wait returns once bytes are buffered, blocking without a buffer while
// none are. It is where an idle reader parks: keep it shallow.
func (c *client) wait() error {
	rd := &c.rd
	if rd.r < rd.w {
		return nil
	}
	rd.release()
	n, err := c.nc.Read(rd.idle[:])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	// An error with data comes back on the next read.
	rd.buf = getReadBuf()
	rd.r, rd.w = 0, copy(*rd.buf, rd.idle[:n])
	return nil
}

// fill makes at least n (at most readBufSize) bytes available in buf[r:w].
func (c *client) fill(n int) error {
	rd := &c.rd
	if rd.w-rd.r >= n {
		return nil
	}
	if rd.buf == nil {
		rd.buf = getReadBuf()
	}
	b := *rd.buf
	if len(b)-rd.r < n {
		rd.w = copy(b, b[rd.r:rd.w])
		rd.r = 0
	}
	for rd.w-rd.r < n {
		m, err := c.nc.Read(b[rd.w:])
		rd.w += m
		if err != nil && rd.w-rd.r < n {
			return err
		}
	}
	return nil
}

// readFull reads len(p) bytes: the buffered ones first, the rest straight
// from the socket.
func (c *client) readFull(p []byte) error {
	rd := &c.rd
	k := 0
	if rd.buf != nil {
		k = copy(p, (*rd.buf)[rd.r:rd.w])
		rd.r += k
	}
	if k == len(p) {
		return nil
	}
	_, err := io.ReadFull(c.nc, p[k:])
	return err
}

// readHeader parses a frame header, checking what does not depend on the
// frames before it. A frame is refused as soon as its first two bytes
// show it is wrong, before its length and key arrive.
func (c *client) readHeader() (wsframe.Header, error) {
	if err := c.fill(2); err != nil {
		return wsframe.Header{}, err
	}
	h, n := wsframe.ParseHeader((*c.rd.buf)[c.rd.r:c.rd.w])
	if h.RSV != 0 {
		// RSV1 marks the first frame of a compressed message when the
		// client negotiated permessage-deflate (RFC 7692 §6); no other
		// extension is negotiated, so the other bits must be 0.
		switch {
		case h.RSV != rsv1 || !c.deflate:
			return h, protocolError("reserved bits set")
		case h.Op != wsframe.OpText && h.Op != wsframe.OpBinary:
			return h, protocolError("compressed bit on a control or continuation frame")
		}
	}
	if !h.Masked {
		return h, protocolError("client frames must be masked")
	}
	if err := c.fill(n); err != nil {
		return h, err
	}
	h, n = wsframe.ParseHeader((*c.rd.buf)[c.rd.r:c.rd.w])
	if h.Len>>63 != 0 {
		return h, protocolError("payload length out of range")
	}
	c.rd.r += n
	return h, nil
}

// readMessage reads frames until a data message is complete and returns
// it in a pooled buffer (give it back with putReadBuf). Control frames
// are answered on the way; one that arrives outside a fragmented message
// returns (0, nil, nil), so that the reader waits for the next frame
// without holding a buffer. Errors of the client's making are *wsframe.CloseError.
func (c *client) readMessage(limit int) (op byte, msg *[]byte, err error) {
	compressed := false
	defer func() {
		if err != nil && msg != nil {
			putReadBuf(msg)
			msg = nil
		}
	}()
	for {
		h, herr := c.readHeader()
		if herr != nil {
			return 0, msg, herr
		}
		if wsframe.IsControl(h.Op) {
			if cerr := c.control(h); cerr != nil || op == 0 {
				return 0, msg, cerr
			}
			continue
		}
		switch {
		case h.Op == 0 && op == 0:
			return 0, msg, protocolError("continuation frame outside a message")
		case h.Op == wsframe.OpText || h.Op == wsframe.OpBinary:
			if op != 0 {
				return 0, msg, protocolError("data frame inside a fragmented message")
			}
			op = h.Op
			compressed = h.RSV == rsv1
			msg = getReadBuf()
			*msg = (*msg)[:0]
		case h.Op != 0:
			return 0, msg, protocolError("bad opcode %d", h.Op)
		}
		start := len(*msg)
		if h.Len > uint64(limit-start) {
			return 0, msg, &wsframe.CloseError{Code: wsframe.CloseTooBig}
		}
		// The buffer grows with what arrives, at most doubling per read,
		// not to the declared length at once: a 14-byte header cannot make
		// the hub allocate max_message_size.
		for rem := int(h.Len); rem > 0; {
			size := len(*msg)
			k := min(rem, max(readBufSize, size))
			*msg = slices.Grow(*msg, k)[:size+k]
			if rerr := c.readFull((*msg)[size:]); rerr != nil {
				return 0, msg, rerr
			}
			rem -= k
		}
		wsframe.Mask(h.Key, (*msg)[start:])
		if h.Fin && compressed {
			out, ierr := inflate(msg, limit)
			if ierr != nil {
				return 0, msg, ierr
			}
			c.n.stats.inflated.Add(1)
			putReadBuf(msg)
			return op, out, nil
		}
		if h.Fin {
			return op, msg, nil
		}
	}
}

// control acts on a control frame: ping is answered with a pong, pong
// extends the idle deadline, close is echoed and ends the reader.
func (c *client) control(h wsframe.Header) error {
	if !h.Fin {
		return protocolError("fragmented control frame")
	}
	if h.Len > wsframe.MaxControlPayload {
		return protocolError("control frame longer than 125 bytes")
	}
	if err := c.fill(int(h.Len)); err != nil {
		return err
	}
	p := (*c.rd.buf)[c.rd.r : c.rd.r+int(h.Len)]
	c.rd.r += int(h.Len)
	wsframe.Mask(h.Key, p)
	switch h.Op {
	case wsframe.OpPing:
		c.touch()
		c.send(wsframe.Frame(wsframe.OpPong, p), true)
		return nil
	case wsframe.OpPong:
		c.touch()
		return nil
	case wsframe.OpClose:
		return c.peerClose(p)
	}
	return protocolError("bad opcode %d", h.Op)
}

// peerClose checks the client's close frame and echoes its code (RFC 6455
// §5.5.1); the reader then ends and the connection closes once the echo
// is written.
func (c *client) peerClose(p []byte) error {
	code, _, err := wsframe.ParseClose(p)
	if err != nil {
		return err
	}
	f := wsframe.Frame(wsframe.OpClose, nil)
	if code != wsframe.CloseNoStatus {
		f = wsframe.CloseFrame(code, "")
	}
	c.mu.Lock()
	if c.state == stateOpen {
		c.closeLocked(f)
	}
	c.mu.Unlock()
	return errPeerClosed
}

// readLoop waits for the client's next bytes, acts on them, and then
// hands the wait to a new goroutine: acting on a frame (even a pong: it
// moves the idle deadline) grows a goroutine's stack past its 2 KiB
// start, and a parked goroutine's stack never shrinks back that far, so
// an idle connection whose reader had worked would keep 4 KiB or more.
// A new goroutine per burst of client frames costs about a microsecond.
// The reader role (and its count on n.wg) passes from one goroutine to
// the next; finish ends it.
func (c *client) readLoop() {
	pprof.SetGoroutineLabels(readLabels)
	err := c.wait()
	if err == nil {
		err = c.readBurst()
	}
	if err != nil {
		var ce *wsframe.CloseError
		if errors.As(err, &ce) {
			c.closeWith(ce.Code, ce.Reason)
		}
		c.finish(err)
		return
	}
	go c.readLoop()
}

// readBurst reads and acts on frames while bytes are buffered.
func (c *client) readBurst() error {
	for {
		if err := c.readAndHandle(); err != nil {
			return err
		}
		if c.rd.r == c.rd.w {
			return nil
		}
	}
}

// readAndHandle reads the next frames and acts on the message they hold.
func (c *client) readAndHandle() error {
	op, msg, err := c.readMessage(c.maxMessage)
	if err != nil || msg == nil {
		return err
	}
	defer putReadBuf(msg)
	c.touch()
	c.mu.Lock()
	open := c.state == stateOpen
	c.mu.Unlock()
	switch {
	case !open:
		// Closing: wait for the client's close reply, ignore data.
	case op != wsframe.OpText:
		c.closeWith(wsframe.CloseUnsupported, "binary frames are not supported")
	case !utf8.Valid(*msg):
		c.closeWith(wsframe.CloseInvalidData, "invalid UTF-8 in a text message")
	default:
		c.handle(*msg)
	}
	return nil
}
