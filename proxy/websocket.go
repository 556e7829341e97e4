package proxy

import (
	"encoding/binary"
	"math/rand/v2"
)

// frameScanner follows the frame boundaries of one direction of a
// WebSocket stream (RFC 6455 section 5.2) without buffering it: it reads
// each frame header and skips the payload by length. The tunnel uses it to
// put a close frame between two frames, never inside one. Control frames
// may come between the fragments of a message (section 5.4), so a frame
// boundary is enough.
type frameScanner struct {
	hdr       [14]byte // the header being read
	hn        int      // header bytes read so far
	need      int      // header length, known once two bytes are in
	remaining uint64   // payload bytes left in the current frame
}

// atBoundary reports whether the stream is between two frames.
func (f *frameScanner) atBoundary() bool {
	return f.hn == 0 && f.remaining == 0
}

// scan advances over b. With stop set it returns as soon as a frame ends,
// with the number of bytes consumed and true; otherwise it consumes all of
// b and reports whether b ended between two frames.
func (f *frameScanner) scan(b []byte, stop bool) (int, bool) {
	i := 0
	for i < len(b) {
		if f.remaining > 0 {
			k := min(uint64(len(b)-i), f.remaining)
			i += int(k)
			f.remaining -= k
			if f.remaining == 0 && stop {
				return i, true
			}
			continue
		}
		f.hdr[f.hn] = b[i]
		f.hn++
		i++
		if f.hn == 2 {
			f.need = 2
			switch f.hdr[1] & 0x7f {
			case 126:
				f.need += 2
			case 127:
				f.need += 8
			}
			if f.hdr[1]&0x80 != 0 {
				f.need += 4 // masking key
			}
		}
		if f.hn < 2 || f.hn < f.need {
			continue
		}
		switch n := f.hdr[1] & 0x7f; n {
		case 126:
			f.remaining = uint64(binary.BigEndian.Uint16(f.hdr[2:4]))
		case 127:
			f.remaining = binary.BigEndian.Uint64(f.hdr[2:10])
		default:
			f.remaining = uint64(n)
		}
		f.hn = 0
		if f.remaining == 0 && stop {
			return i, true
		}
	}
	return i, f.atBoundary()
}

// closeGoingAway is the close frame payload: status 1001 and its reason.
var closeGoingAway = append([]byte{0x03, 0xe9}, "going away"...)

// closeFrame returns a close frame with status 1001 "going away". Frames a
// client sends must be masked (RFC 6455 section 5.3), a server's must not.
func closeFrame(masked bool) []byte {
	payload := closeGoingAway
	if !masked {
		return append([]byte{0x88, byte(len(payload))}, payload...)
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	f := append([]byte{0x88, 0x80 | byte(len(payload))}, key[:]...)
	for i, c := range payload {
		f = append(f, c^key[i%4])
	}
	return f
}
