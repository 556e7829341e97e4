package hub

import (
	"encoding/binary"
	"io"
	"testing"
	"time"

	"edge/internal/wsframe"
)

// FuzzReader sends arbitrary bytes as client frames, right behind the
// handshake. Whatever arrives, the hub must not panic, must answer only
// with well-formed server frames and valid close codes, and must go on
// serving new connections.
//
//	go test -run '^$' -fuzz FuzzReader -fuzzminimizetime 0 ./hub
//
// Minimisation is off because coverage here includes the server's
// goroutines and varies from run to run: minimising a new input then hangs
// the fuzz worker (seen with Go 1.26; 30,000 inputs in 40 s without it).
func FuzzReader(f *testing.F) {
	e := newEnv(f, NodeOptions{}, `{ max_message_size: 1KiB }`)
	big := make([]byte, 2000)
	for _, seed := range [][]byte{
		textMsg(`{"type":"ping","id":1}`),
		append(clientFrame(false, wsframe.OpText, []byte(`{"type":`)), clientFrame(true, 0, []byte(`"ping"}`))...),
		clientFrame(true, wsframe.OpPing, []byte("hi")),
		clientFrame(true, wsframe.OpClose, []byte{0x03, 0xe8}),
		clientFrame(true, wsframe.OpClose, []byte{0x03}),
		clientFrame(true, wsframe.OpBinary, []byte{1, 2}),
		clientFrame(true, wsframe.OpText, big),
		clientFrame(false, wsframe.OpPing, nil),
		unmaskedFrame(true, wsframe.OpText, []byte("x")),
		{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		textMsg("\xff\xfe"),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc := dialRaw(t, e, "", data)
		drainServerFrames(t, rc)
		// The hub still serves.
		ok := dialRaw(t, e, "")
		ok.expect("welcome")
		ok.send(textMsg(`{"type":"ping","id":7}`))
		ok.expect("pong")
	})
}

// drainServerFrames reads what the server sends for a short while, or
// until it closes, checking that every frame is a server frame and that a
// close carries a code a server may send.
func drainServerFrames(t *testing.T, rc *rawClient) {
	t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		h, err := readFrameHeader(rc.br)
		if err != nil {
			return // timeout, EOF or reset: all fine
		}
		if h.Masked || h.RSV != 0 {
			t.Fatalf("server frame header %+v: masked or reserved bits set", h)
		}
		if h.Len > 1<<20 {
			t.Fatalf("server frame of %d bytes", h.Len)
		}
		p := make([]byte, h.Len)
		if _, err := io.ReadFull(rc.br, p); err != nil {
			return
		}
		if h.Op == wsframe.OpClose && len(p) >= 2 {
			if code := int(binary.BigEndian.Uint16(p)); !wsframe.ValidCloseCode(code) {
				t.Fatalf("server close code %d", code)
			}
		}
	}
}
