package proxy

import (
	"encoding/binary"
	"math/rand/v2"

	"edge/internal/wsframe"
)

// frameScanner follows the frame boundaries of one direction of a
// WebSocket stream (RFC 6455 section 5.2) without buffering it: it
// collects each frame header (wsframe parses it) and skips the payload by
// length. The tunnel uses it to put a close frame between two frames,
// never inside one. Control frames may come between the fragments of a
// message (section 5.4), so a frame boundary is enough.
type frameScanner struct {
	hdr       [wsframe.MaxHeaderLen]byte // the header being read
	hn        int                        // header bytes read so far
	need      int                        // header length as far as known; 0 before the first byte
	remaining uint64                     // payload bytes left in the current frame
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
		if f.hn < f.need {
			continue
		}
		h, n := wsframe.ParseHeader(f.hdr[:f.hn])
		if f.hn < n {
			f.need = n // the length and key bytes are still to come
			continue
		}
		f.remaining = h.Len
		f.hn, f.need = 0, 0
		if f.remaining == 0 && stop {
			return i, true
		}
	}
	return i, f.atBoundary()
}

// closeGoingAway is the close frame payload: status 1001 and its reason.
var closeGoingAway = wsframe.ClosePayload(wsframe.CloseGoingAway, "going away")

// closeFrame returns a close frame with status 1001 "going away". Frames a
// client sends must be masked (RFC 6455 section 5.3), a server's must not.
func closeFrame(masked bool) []byte {
	if !masked {
		return wsframe.Frame(wsframe.OpClose, closeGoingAway)
	}
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], rand.Uint32())
	return wsframe.MaskedFrame(wsframe.OpClose, closeGoingAway, key)
}
