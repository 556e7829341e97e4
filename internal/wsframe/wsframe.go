// Package wsframe is edge's one codec for RFC 6455 WebSocket frames: the
// opcodes and close codes, frame headers (parse and append), masking, and
// close frame payloads. It does no I/O and keeps no state, so that each
// user reads the way it must: the hub parses client frames out of pooled
// buffers, the proxy's tunnel follows frame boundaries in a stream it
// copies without buffering.
//
// Only what RFC 6455 itself says lives here; what a peer accepts (a
// message size limit, whether client frames must be masked) is the
// caller's policy.
package wsframe

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Opcodes (RFC 6455 §5.2). Opcodes from OpClose up are control frames.
const (
	OpContinuation = 0x0
	OpText         = 0x1
	OpBinary       = 0x2
	OpClose        = 0x8
	OpPing         = 0x9
	OpPong         = 0xA
)

// IsControl reports whether op is a control opcode (RFC 6455 §5.5).
func IsControl(op byte) bool { return op&0x8 != 0 }

// Close codes (RFC 6455 §7.4.1). CloseNoStatus and CloseAbnormal are
// never sent: they stand for a close frame without a code and for a
// connection gone without one.
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	CloseProtocolError = 1002
	CloseUnsupported   = 1003
	CloseNoStatus      = 1005
	CloseAbnormal      = 1006
	CloseInvalidData   = 1007
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseInternal      = 1011
	CloseTryLater      = 1013
)

// MaxHeaderLen is the longest frame header: 2 bytes, 8 of extended payload
// length and 4 of masking key.
const MaxHeaderLen = 14

// MaxControlPayload is the largest payload of a control frame (RFC 6455
// §5.5).
const MaxControlPayload = 125

// maxCloseReason is what is left of a control payload after the code.
const maxCloseReason = MaxControlPayload - 2

// Header is a frame header (RFC 6455 §5.2).
type Header struct {
	Fin bool
	// RSV holds the three reserved bits (0x70 of the first byte); they
	// must be 0 unless an extension is negotiated.
	RSV    byte
	Op     byte
	Masked bool
	// Len is the payload length. A peer may declare up to 2^64-1; RFC
	// 6455 allows at most 2^63-1.
	Len uint64
	// Key is the masking key, when Masked.
	Key [4]byte
}

// ParseHeader parses the frame header at the start of b and returns it
// with its length n (2 to MaxHeaderLen). When b holds fewer than n bytes,
// the header is incomplete: wait until n bytes are there and call again.
// Fin, RSV, Op and Masked are set as soon as b holds two bytes, so a
// reader can refuse a frame before its length and key arrive; with fewer
// than two, ParseHeader returns the zero Header and 2.
func ParseHeader(b []byte) (h Header, n int) {
	if len(b) < 2 {
		return h, 2
	}
	h.Fin = b[0]&0x80 != 0
	h.RSV = b[0] & 0x70
	h.Op = b[0] & 0x0f
	h.Masked = b[1]&0x80 != 0
	ext := 0
	switch l := b[1] & 0x7f; l {
	case 126:
		ext = 2
	case 127:
		ext = 8
	default:
		h.Len = uint64(l)
	}
	n = 2 + ext
	if h.Masked {
		n += 4
	}
	if len(b) < n {
		return h, n
	}
	switch ext {
	case 2:
		h.Len = uint64(binary.BigEndian.Uint16(b[2:]))
	case 8:
		h.Len = binary.BigEndian.Uint64(b[2:])
	}
	if h.Masked {
		copy(h.Key[:], b[2+ext:])
	}
	return h, n
}

// HeaderLen returns the length of an unmasked header for a payload of n
// bytes: what AppendHeader appends.
func HeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// AppendHeader appends the header of a final, unmasked frame (a server's,
// RFC 6455 §5.1) with opcode op and a payload of n bytes.
func AppendHeader(b []byte, op byte, n int) []byte {
	b = append(b, 0x80|op)
	switch {
	case n <= 125:
		b = append(b, byte(n))
	case n <= 0xffff:
		b = append(b, 126, byte(n>>8), byte(n))
	default:
		b = append(b, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return b
}

// Frame returns a final, unmasked frame holding payload. Server frames
// are not masked, so the same bytes are valid on every connection.
func Frame(op byte, payload []byte) []byte {
	b := make([]byte, 0, HeaderLen(len(payload))+len(payload))
	b = AppendHeader(b, op, len(payload))
	return append(b, payload...)
}

// MaskedFrame returns a final frame holding payload masked with key, as a
// client must send it (RFC 6455 §5.3). payload is not modified.
func MaskedFrame(op byte, payload []byte, key [4]byte) []byte {
	h := HeaderLen(len(payload))
	b := make([]byte, 0, h+4+len(payload))
	b = AppendHeader(b, op, len(payload))
	b[1] |= 0x80
	b = append(b, key[:]...)
	b = append(b, payload...)
	Mask(key, b[h+4:])
	return b
}

// Mask XORs p in place with a masking key (RFC 6455 §5.3), eight bytes at
// a time; it both masks and unmasks. p must start at the first payload
// byte: the key's phase is counted from there.
func Mask(key [4]byte, p []byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, binary.LittleEndian.Uint64(p)^k)
		p = p[8:]
	}
	for i := range p {
		p[i] ^= key[i&3]
	}
}

// ClosePayload returns the payload of a close frame: code, then reason cut
// to fit the 125-byte control frame limit. The cut falls between two
// characters, so a valid UTF-8 reason stays valid (RFC 6455 §5.5.1: a
// peer fails the connection on a reason that is not).
func ClosePayload(code int, reason string) []byte {
	if len(reason) > maxCloseReason {
		cut := maxCloseReason
		for cut > 0 && !utf8.RuneStart(reason[cut]) {
			cut--
		}
		reason = reason[:cut]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	return append(p, reason...)
}

// CloseFrame returns an unmasked close frame with code and reason (see
// ClosePayload).
func CloseFrame(code int, reason string) []byte {
	return Frame(OpClose, ClosePayload(code, reason))
}

// ParseClose parses the payload of a close frame a peer sent. An empty
// payload gives CloseNoStatus. A payload RFC 6455 §5.5.1 and §7.4 forbid
// (one byte, a code a peer may not send, a reason that is not UTF-8) gives
// a *CloseError with the code to fail the connection with.
func ParseClose(p []byte) (code int, reason []byte, err error) {
	switch {
	case len(p) == 0:
		return CloseNoStatus, nil, nil
	case len(p) == 1:
		return 0, nil, &CloseError{CloseProtocolError, "close frame with a 1-byte payload"}
	}
	code = int(binary.BigEndian.Uint16(p))
	if !ValidCloseCode(code) {
		return 0, nil, &CloseError{CloseProtocolError, fmt.Sprintf("bad close code %d", code)}
	}
	if !utf8.Valid(p[2:]) {
		return 0, nil, &CloseError{CloseInvalidData, "invalid UTF-8 in the close reason"}
	}
	return code, p[2:], nil
}

// ValidCloseCode reports whether code may appear in a close frame (RFC
// 6455 §7.4): the defined codes but 1004 to 1006, 1015 and those not yet
// assigned, and the application ranges 3000 to 4999.
func ValidCloseCode(code int) bool {
	switch {
	case code >= 3000 && code <= 4999:
		return true
	case code >= 1000 && code <= 1014:
		return code != 1004 && code != CloseNoStatus && code != CloseAbnormal
	}
	return false
}

// CloseError is a peer's violation of RFC 6455 (or of the receiver's
// limits) that fails the connection: Code and Reason are what the
// receiver's close frame carries.
type CloseError struct {
	Code   int
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("websocket: %s (close %d)", e.Reason, e.Code)
}
