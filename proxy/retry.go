package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
	"time"

	"edge/internal/httperr"
)

// retryTransport is the RoundTripper ReverseProxy uses: it picks a server per
// attempt and retries on another server when connecting failed, so that
// nothing was sent. It also keeps passive health. Each attempt goes through
// the lean client when it takes the request, else through the Transport;
// both report connect failures as connectErrors.
type retryTransport struct {
	h         *Handler
	transport RoundTripper
	lean      *lean // nil: everything goes through transport
	retries   int
}

var (
	errNoUpstream = errors.New("no upstream server available")
)

func (b *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	h := b.h
	st := stateFrom(req.Context())
	var body *trackedBody
	if req.Body != nil {
		// Transport closes the body when it fails; another attempt still
		// needs it. ReverseProxy closes the original when it is done.
		body = &trackedBody{rc: httperr.BodyReader(req.Body)}
	}
	useLean := b.lean.takes(req)
	var tried []*upstream
	for attempt := 0; ; attempt++ {
		s := h.upstreams.pick(st.client, tried)
		if s == nil {
			if attempt == 0 {
				return nil, errNoUpstream
			}
			return nil, st.err
		}
		s.active.Add(1)
		st.upstream = s
		httperr.NoteUpstream(st.w, s.name) // the access log's upstream field
		out := req
		if attempt == 0 {
			// req is ReverseProxy's own copy of the client's request, with
			// its own URL, made for this RoundTrip: the first attempt may
			// change it rather than copy it.
			req.URL.Scheme, req.URL.Host = s.scheme, s.host
		} else {
			// A failed attempt may still be referenced by the Transport.
			o := *req
			u := *req.URL
			u.Scheme, u.Host = s.scheme, s.host
			o.URL = &u
			out = &o
		}
		if body != nil {
			out.Body = body
		}
		var res *http.Response
		var err error
		if useLean {
			res, err = b.lean.roundTrip(out, s)
		} else {
			res, err = b.transportTrip(out)
		}
		if err == nil {
			return res, nil
		}
		s.active.Add(-1)
		err = body.cause(err)
		st.upstream, st.failed, st.err = nil, s, err
		if clientFault(req, err) {
			return nil, err // the client's doing, not the server's
		}
		var ce *connectError
		retry := errors.As(err, &ce) && (body == nil || !body.read.Load()) && attempt < b.retries
		h.upstreamFailed(req, s, err, retry)
		if !retry {
			return nil, err
		}
		tried = append(tried, s)
	}
}

// transportTrip sends req through the Transport. Unless it is an upgrade
// (whose tunnel outlives the request), the upstream exchange gets
// abandonGrace beyond the client's going away, as the lean client's: a
// response that comes in time is drained (up to drainLimit) so that the
// Transport keeps the connection, where cancelling at once would close it;
// otherwise clients resetting requests en masse (HTTP/2 rapid reset, with
// POST) would cost the backend a connection each.
func (b *retryTransport) transportTrip(req *http.Request) (*http.Response, error) {
	if upgradeType(req.Header) != "" {
		// The tunnel parks on the connection's socket while idle.
		st := stateFrom(req.Context())
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { st.upConn = i.Conn }}
		return b.transport.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	}
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		return nil, err // the client has gone already: nothing to send
	}
	uctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(abandonGrace, cancel) })
	end := func() { stop(); cancel() }
	res, err := b.transport.RoundTrip(req.WithContext(uctx))
	switch {
	case err != nil:
		end()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	case ctx.Err() != nil:
		// The client went away while the upstream answered.
		drained(res.Body)
		res.Body.Close()
		end()
		return nil, ctx.Err()
	}
	res.Body = &graceBody{ReadCloser: res.Body, ctx: ctx, end: end}
	return res, nil
}

// graceBody is a Transport response body whose exchange may outlive the
// client by abandonGrace: closed early after the client went away, a
// short rest is drained so that the connection is kept. Read and Close are
// called by one goroutine, ReverseProxy's.
type graceBody struct {
	io.ReadCloser
	ctx context.Context // the client's
	end func()          // ends the upstream exchange's context
}

func (b *graceBody) Close() error {
	if b.ctx.Err() != nil {
		drained(b.ReadCloser)
	}
	err := b.ReadCloser.Close()
	b.end()
	return err
}

// trackedBody passes a request body to one attempt after another: Close
// does nothing, read records whether any attempt took bytes from it, and
// failed the client's body error, if any. The Transport reports a body
// that failed by timeout as the request's cancellation (net/http cancels
// the request's context when a read from the client connection fails);
// failed keeps the cause.
type trackedBody struct {
	rc     io.ReadCloser
	read   atomic.Bool
	failed atomic.Pointer[httperr.BodyError]
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	n, err := b.rc.Read(p)
	var be *httperr.BodyError
	if err != nil && errors.As(err, &be) {
		b.failed.CompareAndSwap(nil, be)
	}
	return n, err
}

// cause returns the client's body error, else err.
func (b *trackedBody) cause(err error) error {
	if b == nil {
		return err
	}
	if be := b.failed.Load(); be != nil {
		return be
	}
	return err
}

func (b *trackedBody) Close() error { return nil }
