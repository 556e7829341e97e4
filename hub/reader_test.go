package hub

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"edge/internal/wsframe"
)

// The frame reader is tested from a raw TCP client, so that frames the
// server must refuse (and frames sent with the handshake) can be sent.

// rawClient is a WebSocket client that writes frames by hand.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// dialRaw performs the handshake at e's hub with query, sending extra in
// the same write as the request (dialExt without extensions).
func dialRaw(t *testing.T, e *env, query string, extra ...[]byte) *rawClient {
	t.Helper()
	rc, _ := dialExt(t, e, "/socket/"+query, "", extra...)
	return rc
}

// clientFrame returns a masked client frame.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	f := wsframe.MaskedFrame(op, payload, [4]byte{0x37, 0xfa, 0x21, 0x3d})
	if !fin {
		f[0] &^= 0x80
	}
	return f
}

// unmaskedFrame returns a frame without a mask, as a server sends it.
func unmaskedFrame(fin bool, op byte, payload []byte) []byte {
	f := wsframe.Frame(op, payload)
	if !fin {
		f[0] &^= 0x80
	}
	return f
}

// readFrameHeader reads one frame header from br.
func readFrameHeader(br *bufio.Reader) (wsframe.Header, error) {
	b, err := br.Peek(2)
	if err != nil {
		return wsframe.Header{}, err
	}
	h, n := wsframe.ParseHeader(b)
	if b, err = br.Peek(n); err != nil {
		return h, err
	}
	h, _ = wsframe.ParseHeader(b)
	br.Discard(n)
	return h, nil
}

func textMsg(s string) []byte { return clientFrame(true, wsframe.OpText, []byte(s)) }

// send writes frames in one write.
func (rc *rawClient) send(frames ...[]byte) {
	rc.t.Helper()
	var b []byte
	for _, f := range frames {
		b = append(b, f...)
	}
	rc.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := rc.nc.Write(b); err != nil {
		rc.t.Fatalf("write: %v", err)
	}
}

// next returns the next server frame.
func (rc *rawClient) next() (byte, []byte) {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := readFrameHeader(rc.br)
	if err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	if !h.Fin || h.Masked {
		rc.t.Fatalf("server frame header %+v: want final and unmasked", h)
	}
	p := make([]byte, h.Len)
	if _, err := io.ReadFull(rc.br, p); err != nil {
		rc.t.Fatalf("read payload: %v", err)
	}
	return h.Op, p
}

// expect reads the next frame, which must be a JSON text message of type
// typ.
func (rc *rawClient) expect(typ string) frame {
	rc.t.Helper()
	op, p := rc.next()
	var f frame
	if op != wsframe.OpText || json.Unmarshal(p, &f) != nil || f.str("type") != typ {
		rc.t.Fatalf("got frame op %d %q, want a %q message", op, p, typ)
	}
	return f
}

// expectClose reads frames until a close frame, which must carry code,
// and then the end of the connection.
func (rc *rawClient) expectClose(code int) string {
	rc.t.Helper()
	for {
		op, p := rc.next()
		if op != wsframe.OpClose {
			continue
		}
		got := -1
		if len(p) >= 2 {
			got = int(binary.BigEndian.Uint16(p))
		}
		if got != code {
			rc.t.Fatalf("close code %d %q, want %d", got, p, code)
		}
		rc.expectEOF()
		if len(p) < 2 {
			return ""
		}
		return string(p[2:])
	}
}

// expectEOF checks that the server closes the connection.
func (rc *rawClient) expectEOF() {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := rc.br.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !isReset(err)) {
		rc.t.Fatalf("after close: %d bytes, %v; want the connection closed", n, err)
	}
}

func isReset(err error) bool {
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// TestReaderFirstFrameWithHandshake: frames sent in the same write as the
// handshake request are read, not lost and not refused.
func TestReaderFirstFrameWithHandshake(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	rc := dialRaw(t, e, "?channel=early", textMsg(`{"type":"ping","id":1}`), clientFrame(true, wsframe.OpPing, []byte("hi")))
	rc.expect("welcome")
	rc.expect("subscribed")
	if f := rc.expect("pong"); f["id"] != 1.0 {
		t.Errorf("pong %v, want id 1", f)
	}
	if op, p := rc.next(); op != wsframe.OpPong || string(p) != "hi" {
		t.Errorf("got op %d %q, want a pong frame \"hi\"", op, p)
	}
	e.publish(t, "early", `{"x":1}`)
	rc.expect("") // a message has no type
}

// TestReaderFragmentedMessage: a message in three fragments, with control
// frames between them, arrives as one message; the ping is answered at
// once.
func TestReaderFragmentedMessage(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	rc := dialRaw(t, e, "")
	rc.expect("welcome")
	rc.send(
		clientFrame(false, wsframe.OpText, []byte(`{"type":"subscribe",`)),
		clientFrame(true, wsframe.OpPing, []byte("between")),
		clientFrame(false, 0, []byte(`"channel":"frag"`)),
		clientFrame(true, wsframe.OpPong, nil),
	)
	if op, p := rc.next(); op != wsframe.OpPong || string(p) != "between" {
		t.Fatalf("got op %d %q, want a pong frame \"between\"", op, p)
	}
	// The last fragment in its own write: the reader waits for it with the
	// message half read.
	time.Sleep(20 * time.Millisecond)
	rc.send(clientFrame(true, 0, []byte(`,"id":"f"}`)))
	if f := rc.expect("subscribed"); f.str("channel") != "frag" || f.str("id") != "f" {
		t.Errorf("got %v, want subscribed to frag with id f", f)
	}
	// Several messages in one write, and one split in the middle of its
	// header.
	ping := textMsg(`{"type":"ping","id":2}`)
	rc.send(textMsg(`{"type":"ping","id":1}`), ping[:3])
	rc.expect("pong")
	time.Sleep(20 * time.Millisecond)
	rc.send(ping[3:])
	if f := rc.expect("pong"); f["id"] != 2.0 {
		t.Errorf("got %v, want pong 2", f)
	}
}

// TestReaderLargeMessages: messages with 16-bit and 64-bit lengths, larger
// than the read buffer, fragmented and not.
func TestReaderLargeMessages(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ max_message_size: 128KiB }`)
	rc := dialRaw(t, e, "")
	rc.expect("welcome")
	for _, size := range []int{200, 5000, 70000} {
		msg := []byte(`{"type":"ping","id":` + `"` + strings.Repeat("x", size) + `"}`)
		rc.send(clientFrame(true, wsframe.OpText, msg))
		if f := rc.expect("pong"); len(f.str("id")) != size {
			t.Errorf("pong id of %d bytes, want %d", len(f.str("id")), size)
		}
		half := len(msg) / 2
		rc.send(clientFrame(false, wsframe.OpText, msg[:half]), clientFrame(true, 0, msg[half:]))
		if f := rc.expect("pong"); len(f.str("id")) != size {
			t.Errorf("fragmented: pong id of %d bytes, want %d", len(f.str("id")), size)
		}
	}
}

// TestReaderOversized: a message over max_message_size closes with 1009,
// whether in one frame (refused from its header) or over fragments.
func TestReaderOversized(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ max_message_size: 128 }`)
	t.Run("exactly the limit", func(t *testing.T) {
		rc := dialRaw(t, e, "")
		rc.expect("welcome")
		msg := `{"type":"ping","id":"` + strings.Repeat("x", 128-len(`{"type":"ping","id":""}`)) + `"}`
		rc.send(textMsg(msg))
		rc.expect("pong")
	})
	t.Run("one frame", func(t *testing.T) {
		rc := dialRaw(t, e, "")
		rc.expect("welcome")
		f := clientFrame(true, wsframe.OpText, make([]byte, 129))
		rc.send(f[:8]) // the header: the payload is not read
		rc.expectClose(wsframe.CloseTooBig)
	})
	t.Run("fragments", func(t *testing.T) {
		rc := dialRaw(t, e, "")
		rc.expect("welcome")
		rc.send(clientFrame(false, wsframe.OpText, make([]byte, 100)), clientFrame(false, 0, make([]byte, 29)))
		rc.expectClose(wsframe.CloseTooBig)
	})
}

// TestReaderProtocolErrors: frames RFC 6455 forbids close the connection
// with 1002.
func TestReaderProtocolErrors(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	ping := textMsg(`{"type":"ping"}`)
	rsv := append([]byte{}, ping...)
	rsv[0] |= 0x40
	huge := []byte{0x81, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}
	cases := map[string][][]byte{
		"unmasked":                 {unmaskedFrame(true, wsframe.OpText, []byte(`{"type":"ping"}`))},
		"reserved bit":             {rsv},
		"opcode 3":                 {clientFrame(true, 3, nil)},
		"opcode 11":                {clientFrame(true, 11, nil)},
		"continuation first":       {clientFrame(true, 0, []byte("x"))},
		"text inside a fragmented": {clientFrame(false, wsframe.OpText, []byte("{")), ping},
		"fragmented ping":          {clientFrame(false, wsframe.OpPing, nil)},
		"long ping":                {clientFrame(true, wsframe.OpPing, make([]byte, 126))},
		"close with 1 byte":        {clientFrame(true, wsframe.OpClose, []byte{3})},
		"close code 1005":          {clientFrame(true, wsframe.OpClose, []byte{0x03, 0xed})},
		"close code 999":           {clientFrame(true, wsframe.OpClose, []byte{0x03, 0xe7})},
		"length with high bit set": {huge},
		"after a complete message": {ping, clientFrame(true, 0, nil)},
	}
	for name, frames := range cases {
		t.Run(name, func(t *testing.T) {
			rc := dialRaw(t, e, "")
			rc.expect("welcome")
			rc.send(frames...)
			if name == "after a complete message" {
				rc.expect("pong")
			}
			if reason := rc.expectClose(wsframe.CloseProtocolError); reason == "" {
				t.Errorf("close 1002 without a reason")
			}
		})
	}
}

// TestReaderDataErrors: binary messages close with 1003 and text that is
// not UTF-8 with 1007; the server then waits for the client's close reply.
func TestReaderDataErrors(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	cases := map[string]struct {
		frames [][]byte
		code   int
	}{
		"binary":                 {[][]byte{clientFrame(true, wsframe.OpBinary, []byte{1, 2})}, wsframe.CloseUnsupported},
		"fragmented binary":      {[][]byte{clientFrame(false, wsframe.OpBinary, []byte{1}), clientFrame(true, 0, []byte{2})}, wsframe.CloseUnsupported},
		"invalid UTF-8":          {[][]byte{textMsg("{\"type\":\"\xff\"}")}, wsframe.CloseInvalidData},
		"close reason not UTF-8": {[][]byte{clientFrame(true, wsframe.OpClose, []byte{0x03, 0xe8, 0xff})}, wsframe.CloseInvalidData},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			rc := dialRaw(t, e, "")
			rc.expect("welcome")
			rc.send(tc.frames...)
			for {
				op, p := rc.next()
				if op != wsframe.OpClose {
					continue
				}
				if got := int(binary.BigEndian.Uint16(p)); got != tc.code {
					t.Fatalf("close %d %q, want %d", got, p[2:], tc.code)
				}
				break
			}
			rc.send(clientFrame(true, wsframe.OpClose, []byte{0x03, 0xe8}))
			rc.expectEOF()
		})
	}
}

// TestReaderCloseHandshake: the client's close code is echoed and the
// server then closes the connection; an empty close is echoed empty.
func TestReaderCloseHandshake(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	rc := dialRaw(t, e, "")
	rc.expect("welcome")
	rc.send(clientFrame(true, wsframe.OpClose, append([]byte{0x0f, 0xa0}, "bye"...))) // 4000
	if reason := rc.expectClose(4000); reason != "" {
		t.Errorf("echoed reason %q, want none", reason)
	}

	rc = dialRaw(t, e, "")
	rc.expect("welcome")
	rc.send(clientFrame(true, wsframe.OpClose, nil))
	if op, p := rc.next(); op != wsframe.OpClose || len(p) != 0 {
		t.Fatalf("got op %d %q, want an empty close frame", op, p)
	}
	rc.expectEOF()
	waitFor(t, 5*time.Second, "connections gone", func() bool { return e.n.stats.conns.Load() == 0 })
}
