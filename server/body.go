package server

import (
	"io"
	"net/http"
	"time"
)

// timedBody enforces server.client_body_timeout: before each Read it moves
// the connection's (HTTP/2: the stream's) read deadline to d from now, so
// a client may pause at most d between two pieces of its body. A stalled
// body then fails the Read with a timeout error, which handlers answer
// with 408 (httperr.BodyError). Owned by the handler reading the body.
type timedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	d       time.Duration
	cleared bool // the deadline was lifted at the end of the body
}

func newTimedBody(w http.ResponseWriter, body io.ReadCloser, d time.Duration) *timedBody {
	return &timedBody{ReadCloser: body, rc: http.NewResponseController(w), d: d}
}

func (b *timedBody) Read(p []byte) (int, error) {
	if b.cleared {
		return b.ReadCloser.Read(p)
	}
	// An error means the writer cannot set deadlines (a test recorder):
	// the body is then read without a timeout, as before.
	_ = b.rc.SetReadDeadline(time.Now().Add(b.d))
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		// Lift the deadline: net/http's HTTP/1 background read, which
		// starts at the end of the body, would otherwise time out while
		// a long handler still runs and cancel its context.
		b.cleared = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}
