package hub

import (
	"encoding/binary"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Server frames are built here, once per message, and written as they are
// to every subscriber's socket (RFC 6455 §5.2: frames from a server are not
// masked, so the same bytes are valid for every connection). This is what
// lets the writer put several queued frames into one write(2).

const (
	opText   = 0x1
	opBinary = 0x2
	opClose  = 0x8
	opPing   = 0x9
	opPong   = 0xA
)

// Close codes the hub sends (RFC 6455 §7.4.1). PROTOCOL.md lists them.
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeProtocolError = 1002 // a client frame RFC 6455 forbids (reader.go)
	closeUnsupported   = 1003
	closeInvalidData   = 1007 // text that is not UTF-8 (reader.go)
	closePolicy        = 1008
	closeTooBig        = 1009
	closeInternal      = 1011
	closeTryLater      = 1013
)

// maxChannelLen bounds channel names; config patterns use the same bound.
const maxChannelLen = 128

// pingFrame is a server ping with no payload.
var pingFrame = []byte{0x80 | opPing, 0}

// appendFrameHeader appends the header of a final, unmasked frame with the
// given opcode and payload length.
func appendFrameHeader(b []byte, opcode byte, n int) []byte {
	b = append(b, 0x80|opcode)
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

func frameHeaderLen(n int) int {
	switch {
	case n <= 125:
		return 2
	case n <= 0xffff:
		return 4
	}
	return 10
}

// newFrame returns a complete frame holding payload.
func newFrame(opcode byte, payload []byte) []byte {
	b := make([]byte, 0, frameHeaderLen(len(payload))+len(payload))
	b = appendFrameHeader(b, opcode, len(payload))
	return append(b, payload...)
}

// textFrame returns a text frame holding payload.
func textFrame(payload []byte) []byte { return newFrame(opText, payload) }

// rawFrame is the frame of a payload for a raw route: a text frame, or a
// binary frame when the payload is not UTF-8 (a text frame must be, or
// browsers fail the connection).
func rawFrame(payload []byte) []byte {
	if utf8.Valid(payload) {
		return newFrame(opText, payload)
	}
	return newFrame(opBinary, payload)
}

// closeFrame returns a close frame with code and a reason cut to fit the
// 125-byte control frame limit.
func closeFrame(code int, reason string) []byte {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	p := make([]byte, 2, 2+len(reason))
	binary.BigEndian.PutUint16(p, uint16(code))
	p = append(p, reason...)
	return newFrame(opClose, p)
}

// Frames sent often enough to build once.
var (
	slowCloseFrame = closeFrame(closeTryLater, "slow consumer: queue full")
	goingAwayFrame = closeFrame(closeGoingAway, "going away")
)

// dataJSON returns the payload as the value of a "data" member: verbatim
// when it is JSON, else as a JSON string.
func dataJSON(payload []byte) []byte {
	if json.Valid(payload) {
		return payload
	}
	s, _ := json.Marshal(string(payload)) // cannot fail for a string
	return s
}

// messageFrame builds the text frame {"channel":…,"seq":…,"data":…}.
// Channel names are validated and need no escaping.
func messageFrame(channel string, seq uint64, data []byte) []byte {
	var num [20]byte
	seqText := strconv.AppendUint(num[:0], seq, 10)
	const (
		p1 = `{"channel":"`
		p2 = `","seq":`
		p3 = `,"data":`
	)
	n := len(p1) + len(channel) + len(p2) + len(seqText) + len(p3) + len(data) + 1
	b := make([]byte, 0, frameHeaderLen(n)+n)
	b = appendFrameHeader(b, opText, n)
	b = append(b, p1...)
	b = append(b, channel...)
	b = append(b, p2...)
	b = append(b, seqText...)
	b = append(b, p3...)
	b = append(b, data...)
	return append(b, '}')
}

// controlFrame marshals a control message into a text frame.
func controlFrame(v any) []byte {
	p, err := json.Marshal(v)
	if err != nil {
		panic("hub: marshal control message: " + err.Error()) // only our own types
	}
	return textFrame(p)
}

// validChannel reports whether name is a valid channel name: 1 to 128
// characters among letters, digits and _ . : / -.
func validChannel(name string) bool {
	if len(name) == 0 || len(name) > maxChannelLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !channelByte(name[i]) {
			return false
		}
	}
	return true
}

func channelByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == ':' || c == '/' || c == '-'
}

// matchPattern reports whether name matches pattern, where "*" matches any
// run of characters (also "/" and ":") and everything else matches itself.
func matchPattern(pattern, name string) bool {
	// Iterative glob with one backtracking point, linear in practice.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchAny reports whether name matches one of patterns.
func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if matchPattern(p, name) {
			return true
		}
	}
	return false
}
