package hub

import (
	"encoding/binary"
	"io"
	"testing"
	"time"
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
		append(clientFrame(false, opText, []byte(`{"type":`)), clientFrame(true, 0, []byte(`"ping"}`))...),
		clientFrame(true, opPing, []byte("hi")),
		clientFrame(true, opClose, []byte{0x03, 0xe8}),
		clientFrame(true, opClose, []byte{0x03}),
		clientFrame(true, opBinary, []byte{1, 2}),
		clientFrame(true, opText, big),
		clientFrame(false, opPing, nil),
		unmaskedFrame(true, opText, []byte("x")),
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
		var h [2]byte
		if _, err := io.ReadFull(rc.br, h[:]); err != nil {
			return // timeout, EOF or reset: all fine
		}
		if h[1]&0x80 != 0 || h[0]&0x70 != 0 {
			t.Fatalf("server frame header %x: masked or reserved bits set", h)
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var x [2]byte
			if _, err := io.ReadFull(rc.br, x[:]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint16(x[:]))
		case 127:
			var x [8]byte
			if _, err := io.ReadFull(rc.br, x[:]); err != nil {
				return
			}
			n = int(binary.BigEndian.Uint64(x[:]))
		}
		if n > 1<<20 {
			t.Fatalf("server frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(rc.br, p); err != nil {
			return
		}
		if h[0]&0x0f == opClose && len(p) >= 2 {
			if code := int(binary.BigEndian.Uint16(p)); !validCloseCode(code) {
				t.Fatalf("server close code %d", code)
			}
		}
	}
}
