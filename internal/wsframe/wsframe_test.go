package wsframe

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseHeader(t *testing.T) {
	key := [4]byte{1, 2, 3, 4}
	tests := []struct {
		name  string
		in    []byte
		want  Header
		wantN int
	}{
		{"empty", nil, Header{}, 2},
		{"one byte", []byte{0x81}, Header{}, 2},
		{"text 5", []byte{0x81, 5}, Header{Fin: true, Op: OpText, Len: 5}, 2},
		{"fragment", []byte{0x01, 0}, Header{Op: OpText}, 2},
		{"rsv", []byte{0xf2, 0}, Header{Fin: true, RSV: 0x70, Op: OpBinary}, 2},
		{"masked short", []byte{0x89, 0x82, 1, 2}, Header{Fin: true, Op: OpPing, Masked: true, Len: 2}, 6},
		{"masked", []byte{0x89, 0x82, 1, 2, 3, 4}, Header{Fin: true, Op: OpPing, Masked: true, Len: 2, Key: key}, 6},
		{"16-bit short", []byte{0x82, 126, 1}, Header{Fin: true, Op: OpBinary}, 4},
		{"16-bit", []byte{0x82, 126, 1, 0}, Header{Fin: true, Op: OpBinary, Len: 256}, 4},
		{"64-bit masked", []byte{0x81, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4}, Header{Fin: true, Op: OpText, Masked: true, Len: 1 << 32, Key: key}, 14},
		{"64-bit top bit", []byte{0x81, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}, Header{Fin: true, Op: OpText, Len: 1 << 63}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n := ParseHeader(tt.in)
			if h != tt.want || n != tt.wantN {
				t.Errorf("ParseHeader(%x) = %+v, %d, want %+v, %d", tt.in, h, n, tt.want, tt.wantN)
			}
		})
	}
}

func TestFramesRoundTrip(t *testing.T) {
	key := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	for _, size := range []int{0, 1, 7, 8, 9, 125, 126, 127, 0xffff, 0x10000, 70000} {
		payload := bytes.Repeat([]byte("abcdefg"), size/7+1)[:size]
		for _, masked := range []bool{false, true} {
			var f []byte
			if masked {
				f = MaskedFrame(OpBinary, payload, key)
			} else {
				f = Frame(OpBinary, payload)
			}
			h, n := ParseHeader(f)
			if h.Masked != masked || !h.Fin || h.Op != OpBinary || h.Len != uint64(size) || len(f) != n+size {
				t.Fatalf("size %d masked %v: header %+v, n %d, frame %d bytes", size, masked, h, n, len(f))
			}
			if !masked && n != HeaderLen(size) {
				t.Errorf("HeaderLen(%d) = %d, header is %d", size, HeaderLen(size), n)
			}
			got := bytes.Clone(f[n:])
			if masked {
				if h.Key != key || (size > 0 && bytes.Equal(got, payload)) {
					t.Fatalf("size %d: key %x or payload not masked", size, h.Key)
				}
				Mask(h.Key, got)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("size %d masked %v: payload differs", size, masked)
			}
		}
	}
}

func TestClosePayload(t *testing.T) {
	tests := []struct {
		name, reason, want string
	}{
		{"empty", "", ""},
		{"short", "going away", "going away"},
		{"cut", strings.Repeat("r", 200), strings.Repeat("r", 123)},
		// "é" is two bytes: one starting at byte 122 would be cut in half.
		{"cut between characters", strings.Repeat("r", 122) + "éé", strings.Repeat("r", 122)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ClosePayload(CloseTryLater, tt.reason)
			code, reason, err := ParseClose(p)
			if err != nil || code != CloseTryLater || string(reason) != tt.want {
				t.Errorf("ParseClose(ClosePayload(1013, %q)) = %d, %q, %v, want 1013, %q", tt.reason, code, reason, err, tt.want)
			}
			if len(p) > MaxControlPayload {
				t.Errorf("close payload of %d bytes", len(p))
			}
		})
	}
}

func TestParseClose(t *testing.T) {
	tests := []struct {
		name     string
		in       []byte
		wantCode int // code returned, or the CloseError's code
		wantErr  bool
	}{
		{"empty", nil, CloseNoStatus, false},
		{"one byte", []byte{3}, CloseProtocolError, true},
		{"1000", []byte{0x03, 0xe8}, CloseNormal, false},
		{"4000 with reason", append([]byte{0x0f, 0xa0}, "bye"...), 4000, false},
		{"999", []byte{0x03, 0xe7}, CloseProtocolError, true},
		{"1005 sent", []byte{0x03, 0xed}, CloseProtocolError, true},
		{"1015", []byte{0x03, 0xf7}, CloseProtocolError, true},
		{"5000", []byte{0x13, 0x88}, CloseProtocolError, true},
		{"reason not UTF-8", []byte{0x03, 0xe8, 0xff}, CloseInvalidData, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, err := ParseClose(tt.in)
			var ce *CloseError
			if tt.wantErr {
				if !errors.As(err, &ce) || ce.Code != tt.wantCode {
					t.Errorf("ParseClose(%x) = %d, %v, want a CloseError with %d", tt.in, code, err, tt.wantCode)
				}
				return
			}
			if err != nil || code != tt.wantCode {
				t.Errorf("ParseClose(%x) = %d, %v, want %d", tt.in, code, err, tt.wantCode)
			}
		})
	}
}

// FuzzParseHeader checks that any bytes parse without panicking, that a
// complete header re-encodes to the same bytes, and that Mask undoes
// itself.
func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x81, 5, 'h', 'e', 'l', 'l', 'o'})
	f.Add(MaskedFrame(OpText, []byte("hello, world"), [4]byte{9, 8, 7, 6}))
	f.Add(Frame(OpBinary, make([]byte, 300)))
	f.Add([]byte{0x81, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(CloseFrame(CloseGoingAway, "going away"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n := ParseHeader(b)
		if n < 2 || n > MaxHeaderLen {
			t.Fatalf("header length %d", n)
		}
		if len(b) >= n {
			// Re-encode: a minimal-length header comes back as it was.
			if h.Fin && h.RSV == 0 && h.Len <= 1<<32 && HeaderLen(int(h.Len))+boolInt(h.Masked)*4 == n {
				got := AppendHeader(nil, h.Op, int(h.Len))
				if h.Masked {
					got[1] |= 0x80
					got = append(got, h.Key[:]...)
				}
				if !bytes.Equal(got, b[:n]) {
					t.Fatalf("ParseHeader(%x) = %+v; re-encoded as %x", b[:n], h, got)
				}
			}
			p := bytes.Clone(b[n:])
			Mask(h.Key, p)
			Mask(h.Key, p)
			if !bytes.Equal(p, b[n:]) {
				t.Fatal("Mask twice changed the payload")
			}
		}
		if code, reason, err := ParseClose(b); err == nil && (!utf8.Valid(reason) || (len(b) >= 2 && !ValidCloseCode(code))) {
			t.Fatalf("ParseClose(%x) accepted %d %q", b, code, reason)
		}
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
