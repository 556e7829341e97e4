package hub

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"

	"edge/internal/wsframe"
)

// Server frames are built here, once per message, and written as they are
// to every subscriber's socket (RFC 6455 §5.2: frames from a server are not
// masked, so the same bytes are valid for every connection). This is what
// lets the writer put several queued frames into one write(2). The framing
// itself (headers, opcodes, close codes) is internal/wsframe's; the close
// codes the hub sends are listed in PROTOCOL.md §4.

// maxChannelLen bounds channel names; config patterns use the same bound.
const maxChannelLen = 128

// pingFrame is a server ping with no payload.
var pingFrame = wsframe.Frame(wsframe.OpPing, nil)

// textFrame returns a text frame holding payload.
func textFrame(payload []byte) []byte { return wsframe.Frame(wsframe.OpText, payload) }

// rawFrame is the frame of a payload for a raw route: a text frame, or a
// binary frame when the payload is not UTF-8 (a text frame must be, or
// browsers fail the connection).
func rawFrame(payload []byte) []byte {
	if utf8.Valid(payload) {
		return wsframe.Frame(wsframe.OpText, payload)
	}
	return wsframe.Frame(wsframe.OpBinary, payload)
}

// Frames sent often enough to build once.
var (
	slowCloseFrame = wsframe.CloseFrame(wsframe.CloseTryLater, "slow consumer: queue full")
	goingAwayFrame = wsframe.CloseFrame(wsframe.CloseGoingAway, "going away")
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
	b := make([]byte, 0, wsframe.HeaderLen(n)+n)
	b = wsframe.AppendHeader(b, wsframe.OpText, n)
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
