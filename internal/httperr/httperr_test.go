package httperr

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// A handler that had started a response (length, encoding, validators of
// the file it meant to send) and then fails must not send those headers
// with the error page: a cache or browser would take the page for the file.
func TestErrorPageDropsTheFailedResponsesHeaders(t *testing.T) {
	w := httptest.NewRecorder()
	h := w.Header()
	h.Set("Content-Length", "99999")
	h.Set("Content-Encoding", "br")
	h.Set("ETag", `"abc"`)
	h.Set("Last-Modified", "Mon, 07 Dec 2026 10:00:00 GMT")
	Text(w, http.StatusBadGateway, "upstream said:\nsecret")

	res := w.Result()
	if res.StatusCode != 502 {
		t.Fatalf("status %d", res.StatusCode)
	}
	for _, k := range []string{"Content-Length", "Content-Encoding", "ETag", "Last-Modified"} {
		if v := res.Header.Get(k); v != "" {
			t.Errorf("%s: %q survived into the error page", k, v)
		}
	}
	want := map[string]string{
		"Content-Type":           "text/plain; charset=utf-8",
		"X-Content-Type-Options": "nosniff",
		"Cache-Control":          "no-store",
	}
	for k, v := range want {
		if got := res.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if body := w.Body.String(); body != "upstream said: secret\n" {
		t.Errorf("body %q: the text must be one line", body)
	}
}

func TestErrorWritesStatusText(t *testing.T) {
	w := httptest.NewRecorder()
	Error(w, http.StatusRequestTimeout)
	if w.Code != 408 || w.Body.String() != "408 Request Timeout\n" {
		t.Fatalf("got %d %q", w.Code, w.Body.String())
	}
}

// noter stands in for the server's observer at the bottom of a chain of
// wrapping response writers.
type noter struct {
	http.ResponseWriter
	status   int
	upstream string
}

func (n *noter) NoteStatus(code int)      { n.status = code }
func (n *noter) NoteUpstream(addr string) { n.upstream = addr }

type wrapper struct{ http.ResponseWriter }

func (w wrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func TestAbandonNotesThroughWrappersAndWritesNothing(t *testing.T) {
	rec := httptest.NewRecorder()
	n := &noter{ResponseWriter: rec}
	w := wrapper{wrapper{n}}
	func() {
		defer func() {
			if p := recover(); p != http.ErrAbortHandler {
				t.Fatalf("Abandon panicked with %v, want http.ErrAbortHandler (net/http resets quietly only for that)", p)
			}
		}()
		Abandon(w, StatusClientClosed)
	}()
	if n.status != 499 {
		t.Errorf("noted status %d, want 499", n.status)
	}
	if rec.Body.Len() != 0 || rec.Code != 200 || len(rec.Header()) != 0 {
		t.Errorf("Abandon wrote to the client: %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	NoteUpstream(w, "10.0.0.7:8080")
	if n.upstream != "10.0.0.7:8080" {
		t.Errorf("upstream %q not noted through the wrappers", n.upstream)
	}
}

// readBody reads a request body the way a handler does, from a real
// request parsed by net/http, and returns the error BodyReader gives.
func readBody(t *testing.T, raw string, wrap func(io.ReadCloser) io.ReadCloser) error {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	body := req.Body
	if wrap != nil {
		body = wrap(body)
	}
	_, err = io.Copy(io.Discard, BodyReader(body))
	return err
}

// Each failure a client can cause maps to the answer nginx would give, and
// none is confused with an upstream failure.
func TestBodyErrorStatus(t *testing.T) {
	post := "POST / HTTP/1.1\r\nHost: a\r\n"
	cases := []struct {
		name string
		raw  string
		wrap func(io.ReadCloser) io.ReadCloser
		want int
	}{
		{"bare LF chunk line", post + "Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n", nil, 400},
		{"bad chunk size", post + "Transfer-Encoding: chunked\r\n\r\nZZ\r\n", nil, 400},
		{"body ends early", post + "Content-Length: 10\r\n\r\nabc", nil, StatusClientClosed},
		{"over the size limit", post + "Content-Length: 10\r\n\r\n0123456789", func(b io.ReadCloser) io.ReadCloser {
			return http.MaxBytesReader(httptest.NewRecorder(), b, 4)
		}, 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := readBody(t, tc.raw, tc.wrap)
			var be *BodyError
			if !errors.As(err, &be) {
				t.Fatalf("error %v is not a *BodyError", err)
			}
			if got := be.Status(); got != tc.want {
				t.Fatalf("Status() = %d for %v, want %d", got, err, tc.want)
			}
		})
	}

	// A stalled body: a real connection whose read deadline passes.
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	_, err := BodyReader(a).Read(make([]byte, 1))
	var be *BodyError
	if !errors.As(err, &be) || be.Status() != http.StatusRequestTimeout {
		t.Fatalf("stalled read: %v, want a BodyError with 408", err)
	}
}

// A clean end of body is io.EOF, untouched: readers stop on it by identity.
func TestBodyReaderKeepsEOF(t *testing.T) {
	if err := readBody(t, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc", nil); err != nil {
		t.Fatalf("clean body gave %v", err)
	}
	if BodyReader(http.NoBody) != http.NoBody {
		t.Fatal("NoBody must stay NoBody (net/http and the Transport compare it)")
	}
}
