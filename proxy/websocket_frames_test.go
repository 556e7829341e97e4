package proxy

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/gorilla/websocket"
)

// testFrame builds a frame with an n-byte payload; masked frames carry a
// key, as a client's.
func testFrame(op byte, n int, masked bool) []byte {
	b := []byte{0x80 | op}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch {
	case n <= 125:
		b = append(b, m|byte(n))
	case n <= 0xffff:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if masked {
		b = append(b, 1, 2, 3, 4)
	}
	return append(b, bytes.Repeat([]byte{'x'}, n)...)
}

// TestFrameScannerBoundaries: the tunnel's scanner finds the end of every
// frame of each header shape (7-bit, 16-bit and 64-bit lengths, masked or
// not, empty payloads), whether the stream arrives at once, byte by byte
// or in odd pieces.
func TestFrameScannerBoundaries(t *testing.T) {
	var frames [][]byte
	for _, masked := range []bool{false, true} {
		for _, n := range []int{0, 1, 125, 126, 300, 0xffff, 0x10000} {
			frames = append(frames, testFrame(websocket.BinaryMessage, n, masked))
		}
		frames = append(frames, testFrame(websocket.PingMessage, 0, masked))
	}
	var stream []byte
	var ends []int // offsets just after each frame
	for _, f := range frames {
		stream = append(stream, f...)
		ends = append(ends, len(stream))
	}
	for _, piece := range []int{1, 2, 3, 7, 13, 4096, len(stream)} {
		// Without stop: boundaries are reported at the ends of pieces.
		var f frameScanner
		for off := 0; off < len(stream); off += piece {
			end := min(off+piece, len(stream))
			k, boundary := f.scan(stream[off:end], false)
			if k != end-off {
				t.Fatalf("piece %d at %d: consumed %d of %d", piece, off, k, end-off)
			}
			want := false
			for _, e := range ends {
				want = want || e == end
			}
			if boundary != want || f.atBoundary() != want {
				t.Fatalf("piece %d, end %d: boundary %v, want %v", piece, end, boundary, want)
			}
		}
		// With stop: every frame end is found exactly.
		var g frameScanner
		var found []int
		for off := 0; off < len(stream); off += piece {
			b := stream[off:min(off+piece, len(stream))]
			pos := off
			for len(b) > 0 {
				k, boundary := g.scan(b, true)
				pos += k
				b = b[k:]
				if boundary {
					found = append(found, pos)
				}
			}
		}
		if len(found) != len(ends) {
			t.Fatalf("piece %d: found ends %v, want %v", piece, found, ends)
		}
		for i := range ends {
			if found[i] != ends[i] {
				t.Fatalf("piece %d: found ends %v, want %v", piece, found, ends)
			}
		}
	}
}

// TestCloseFrame: the tunnel's close frames are 1001 "going away", masked
// towards the upstream and unmasked towards the client.
func TestCloseFrame(t *testing.T) {
	for _, masked := range []bool{false, true} {
		f := closeFrame(masked)
		if f[0] != 0x88 || (f[1]&0x80 != 0) != masked {
			t.Fatalf("masked %v: header % x", masked, f[:2])
		}
		n := int(f[1] & 0x7f)
		p := f[2:]
		if masked {
			key := p[:4]
			p = append([]byte(nil), p[4:]...)
			for i := range p {
				p[i] ^= key[i%4]
			}
		}
		if len(p) != n || binary.BigEndian.Uint16(p) != 1001 || string(p[2:]) != "going away" {
			t.Errorf("masked %v: payload %q (length %d)", masked, p, n)
		}
	}
}
