package server

import (
	"strings"
	"testing"
)

// TestFramingSplits feeds request streams to framing in pieces of every
// size and checks the verdict does not depend on where reads split.
func TestFramingSplits(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tc := range []struct {
		name     string
		stream   string
		requests int64 // finished requests followed
		bad      int64 // badAt
		blind    int64 // blindAt
	}{
		{"clean pipeline", "GET /" + long + " HTTP/1.1\r\nHost: x\r\nCookie: " + long + "\r\n\r\n" +
			"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc" +
			"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;" + long + "\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n" +
			"PUT / HTTP/1.0\nContent-Length: 2\n\nok" +
			"OPTIONS * HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n", 5, 0, 0},
		{"CL+TE third", "GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n" +
			"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 2, 3, 0},
		{"HTTP/1.0 TE", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 1, 0},
		{"two TE", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 1, 0},
		{"TE gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 0, 1, 0},
		{"CL differ", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 0, 1, 0},
		{"CL sign", "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\n", 0, 1, 0},
		{"obs-fold", "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 0, 1, 0},
		{"chunk bare LF", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 0, 1, 0},
		{"chunk bad size", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 0, 1, 0},
		{"chunk no CRLF after data", "GET / HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", 1, 2, 0},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0, 1, 0},
		{"upgrade", "GET / HTTP/1.1\r\n\r\nGET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x81\x05hello", 1, 0, 2},
		{"connect", "CONNECT a:443 HTTP/1.1\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 0, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for size := 1; size <= len(tc.stream); size++ {
				st := &connState{}
				f := &framing{st: st}
				for i := 0; i < len(tc.stream); i += size {
					f.feed([]byte(tc.stream[i:min(i+size, len(tc.stream))]))
				}
				if f.index != tc.requests || st.badAt.Load() != tc.bad || st.blindAt.Load() != tc.blind {
					t.Fatalf("reads of %d bytes: followed %d requests, badAt %d, blindAt %d; want %d, %d, %d",
						size, f.index, st.badAt.Load(), st.blindAt.Load(), tc.requests, tc.bad, tc.blind)
				}
			}
		})
	}
}

// FuzzFraming checks that framing never panics and that its verdict does
// not depend on how the bytes were split into reads.
func FuzzFraming(f *testing.F) {
	f.Add("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 5)
	f.Add("GET / HTTP/1.0\r\nContent-Length: 2\r\n\r\nokGET / HTTP/1.1\r\n\r\n", 3)
	f.Fuzz(func(t *testing.T, stream string, size int) {
		if size <= 0 {
			size = 1
		}
		whole := &framing{st: &connState{}}
		whole.feed([]byte(stream))
		split := &framing{st: &connState{}}
		for i := 0; i < len(stream); i += size {
			split.feed([]byte(stream[i:min(i+size, len(stream))]))
		}
		if whole.index != split.index || whole.st.badAt.Load() != split.st.badAt.Load() || whole.st.blindAt.Load() != split.st.blindAt.Load() {
			t.Errorf("whole: %d %d %d; in %d-byte reads: %d %d %d", whole.index, whole.st.badAt.Load(), whole.st.blindAt.Load(),
				size, split.index, split.st.badAt.Load(), split.st.blindAt.Load())
		}
	})
}
