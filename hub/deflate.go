package hub

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/flate"

	"edge/internal/wsframe"
)

// Compressed fan-out: permessage-deflate (RFC 7692) on routes with
// compression: true, always without context takeover in both directions.
// Without context takeover a message is compressed on its own, so a
// compressed frame is valid on every connection that negotiated the
// extension: the fan-out compresses each message once (message.deflated)
// and queues the same bytes to all of them, and a connection keeps no
// compressor or decompressor of its own (a flate writer is hundreds of KiB,
// the hub's idle connection about 6 KiB). The only per-connection state is
// client.deflate. Control messages (welcome, replies, gap notices) go
// uncompressed, as RFC 7692 allows per message, and so do frames under
// compression_min_size or that deflate does not make smaller.
//
// gorilla/websocket does the negotiation (Upgrader.EnableCompression
// answers "permessage-deflate; server_no_context_takeover;
// client_no_context_takeover" to any offer naming permessage-deflate, and
// refuses an application's own Sec-WebSocket-Extensions answer). Its check
// ignores the offer's parameters, so negotiateDeflate decides first and
// leaves gorilla a request header that names the extension exactly when
// the hub will use it: what the hub stores is then what was answered.

// rsv1 is the "compressed" bit of a message's first frame (RFC 7692 §6).
const rsv1 = 0x40

// deflateTail ends a compressed message for the inflater: the 00 00 ff ff
// the sender removed (RFC 7692 §7.2.2), then an empty final stored block so
// that the inflater meets a clean end of stream rather than running out of
// input mid-stream.
const deflateTail = "\x00\x00\xff\xff\x01\x00\x00\xff\xff"

// negotiateDeflate reports whether the connection upgraded from r uses
// permessage-deflate: the route has compression on and r offers the
// extension with parameters the hub can honour. It rewrites r's
// Sec-WebSocket-Extensions so that gorilla's negotiation agrees: the bare
// extension name when accepted, nothing otherwise.
func negotiateDeflate(r *http.Request, on bool) bool {
	ok := on && deflateOffered(r.Header)
	if ok {
		r.Header.Set("Sec-WebSocket-Extensions", "permessage-deflate")
	} else {
		r.Header.Del("Sec-WebSocket-Extensions")
	}
	return ok
}

// deflateOffered reports whether h holds a permessage-deflate offer the
// hub accepts with gorilla's fixed answer. RFC 7692 §7.1: the offer may
// ask for no context takeover (granted anyway) and may say the client
// accepts client_max_window_bits (with or without a value: the hub's
// inflater takes any window, so it leaves the parameter out of its
// answer). An offer with server_max_window_bits is declined: accepting it
// means answering the parameter, and the compressor always uses a 32 KiB
// window. Unknown, repeated or malformed parameters decline the offer too.
func deflateOffered(h http.Header) bool {
	for _, line := range h.Values("Sec-WebSocket-Extensions") {
		for _, offer := range splitUnquoted(line, ',') {
			if acceptableDeflateOffer(offer) {
				return true
			}
		}
	}
	return false
}

func acceptableDeflateOffer(offer string) bool {
	parts := splitUnquoted(offer, ';')
	if strings.TrimSpace(parts[0]) != "permessage-deflate" {
		return false
	}
	seen := map[string]bool{}
	for _, p := range parts[1:] {
		k, v, hasValue := strings.Cut(p, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if seen[k] {
			return false
		}
		seen[k] = true
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		switch k {
		case "server_no_context_takeover", "client_no_context_takeover":
			if hasValue {
				return false
			}
		case "client_max_window_bits":
			if hasValue && !validWindowBits(v) {
				return false
			}
		default: // server_max_window_bits and anything unknown
			return false
		}
	}
	return true
}

// validWindowBits reports whether v is a window size RFC 7692 §7.1.2
// allows: 8 to 15, without leading zeros.
func validWindowBits(v string) bool {
	switch v {
	case "8", "9", "10", "11", "12", "13", "14", "15":
		return true
	}
	return false
}

// splitUnquoted splits s at sep outside double quotes (a quoted-string
// may hold a separator).
func splitUnquoted(s string, sep byte) []string {
	var out []string
	quoted, esc, start := false, false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case esc:
			esc = false
		case quoted && c == '\\':
			esc = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// deflater is a pooled compressor and its output buffer.
type deflater struct {
	w   *flate.Writer
	buf bytes.Buffer
}

var deflaters = sync.Pool{New: func() any {
	w, _ := flate.NewWriter(nil, flate.BestSpeed) // the level is valid
	return &deflater{w: w}
}}

// deflateFrame returns the compressed form of f, an unmasked final data
// frame built by the hub: the same opcode with RSV1 set and the deflated
// payload without its trailing 00 00 ff ff (RFC 7692 §7.2.1). It returns
// nil when that is not smaller than f.
func deflateFrame(f []byte) []byte {
	h, n := wsframe.ParseHeader(f)
	p := f[n:]
	d := deflaters.Get().(*deflater)
	defer func() {
		if d.buf.Cap() > 64<<10 {
			d.buf = bytes.Buffer{} // a large message does not pin its buffer
		}
		deflaters.Put(d)
	}()
	d.buf.Reset()
	d.w.Reset(&d.buf)
	if _, err := d.w.Write(p); err != nil {
		return nil
	}
	if err := d.w.Flush(); err != nil {
		return nil
	}
	z := bytes.TrimSuffix(d.buf.Bytes(), []byte{0, 0, 0xff, 0xff})
	if wsframe.HeaderLen(len(z))+len(z) >= len(f) {
		return nil
	}
	b := make([]byte, 0, wsframe.HeaderLen(len(z))+len(z))
	b = wsframe.AppendHeader(b, h.Op, len(z))
	b[0] |= rsv1
	return append(b, z...)
}

// deflated returns the compressed frame of m for a client on a raw route
// or not (src is m's frame of that kind), compressing it at most once
// while m is in the history: a replay reuses it, and the history counts
// its bytes. A message outside the history is compressed once per publish
// by channel.publish's own cache. When compression does not make the
// frame smaller, src itself is the answer. Called with the channel's lock
// held.
func (m *message) deflated(n *Node, raw bool, src []byte) []byte {
	p := &m.zframe
	if raw {
		p = &m.zraw
	}
	if *p != nil {
		return *p
	}
	z := deflateFrame(src)
	if z == nil {
		z = src
	} else {
		n.stats.compressed.Add(1)
		n.stats.compressedSaved.Add(uint64(len(src) - len(z)))
	}
	if m.held.Load() {
		*p = z
		if len(z) != len(src) {
			m.size += int64(len(z))
			n.hist.bytes.Add(int64(len(z)))
		}
	}
	return z
}

// wantsDeflate reports whether f goes compressed to c.
func (c *client) wantsDeflate(f []byte) bool {
	return c.deflate && len(f) >= int(c.deflateMin)
}

// inflater is a pooled decompressor and its input.
type inflater struct {
	fr  io.ReadCloser // implements flate.Resetter
	src bytes.Reader
}

var inflaters = sync.Pool{New: func() any {
	in := &inflater{}
	in.fr = flate.NewReader(&in.src)
	return in
}}

// inflate decompresses the payload of a compressed client message, held
// in msg, into a new pooled buffer, refusing more than limit bytes: a small
// frame that inflates past max_message_size (a compression bomb) closes
// with 1009 once limit is passed, having allocated about limit at most.
// Data that is not a valid deflate stream closes with 1002: RFC 7692 §8.2
// makes it a failure of the extension's framing, not of the message's
// content (Chromium closes with 1002 as well). msg stays the caller's.
func inflate(msg *[]byte, limit int) (*[]byte, error) {
	*msg = append(*msg, deflateTail...)
	in := inflaters.Get().(*inflater)
	defer inflaters.Put(in)
	in.src.Reset(*msg)
	if err := in.fr.(flate.Resetter).Reset(&in.src, nil); err != nil {
		return nil, protocolError("invalid compressed data")
	}
	defer in.src.Reset(nil)
	out := getReadBuf()
	*out = (*out)[:0]
	for {
		size := len(*out)
		if size > limit {
			putReadBuf(out)
			return nil, &wsframe.CloseError{Code: wsframe.CloseTooBig, Reason: "message too big once inflated"}
		}
		if size == cap(*out) {
			*out = slices.Grow(*out, min(max(readBufSize, size), limit+1-size))
		}
		k, err := in.fr.Read((*out)[size:min(cap(*out), limit+1)])
		*out = (*out)[:size+k]
		if errors.Is(err, io.EOF) {
			if len(*out) > limit {
				continue // the check above closes with 1009
			}
			return out, nil
		}
		if err != nil {
			putReadBuf(out)
			return nil, protocolError("invalid compressed data")
		}
	}
}

// deflatedOnce is message.deflated for channel.publish, with the
// publish's own cache (zframe, zraw): the message may have left the
// history already (size 0, or trimmed at once), and is then not cached in
// m, yet is still compressed once for all its subscribers.
func deflatedOnce(n *Node, m *message, raw bool, src []byte, zframe, zraw *[]byte) []byte {
	p := zframe
	if raw {
		p = zraw
	}
	if *p == nil {
		*p = m.deflated(n, raw, src)
	}
	return *p
}
