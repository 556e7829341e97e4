package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"edge/internal/clientip"
	"edge/internal/wsframe"
)

// The SSE transport (PROTOCOL.md §8): GET <route>sse?channel=… streams the
// same messages as a WebSocket connection, as Server-Sent Events, for
// networks whose proxies break upgrades; POST <route>publish takes an SSE
// client's publishes.
//
// An SSE client is a hub client like any other: it is admitted by the same
// checks, registered, counted in stats, presence and per-IP limits, fed by
// the same fan-out, dropped when slow, and reached by control orders. Only
// its connection differs: sseConn turns the WebSocket frames the hub
// writes into events, and reads nothing (an SSE client cannot send).

// sseConn is the net.Conn of an SSE client: Write takes whole WebSocket
// frames (the hub writes frames whole) and writes them as events to the
// response; Read blocks until the stream ends.
type sseConn struct {
	w     http.ResponseWriter
	rc    *http.ResponseController
	epoch string
	addr  net.Addr

	mu     sync.Mutex
	closed bool
	out    []byte        // scratch for events, guarded by mu
	eof    chan struct{} // closed when the stream ends: Read returns
	gone   <-chan struct{}
	closeD chan struct{} // closed by Close: the handler may return
	once   sync.Once
}

var errSSEClosed = errors.New("hub: sse stream closed")

func newSSEConn(w http.ResponseWriter, r *http.Request, epoch string) *sseConn {
	return &sseConn{w: w, rc: http.NewResponseController(w), epoch: epoch, addr: sseAddr(r.RemoteAddr),
		eof: make(chan struct{}), gone: r.Context().Done(), closeD: make(chan struct{})}
}

// Read waits until the stream ends (the server closed it, or the client
// went away) and reports EOF: the client's reader then finishes it.
func (s *sseConn) Read([]byte) (int, error) {
	select {
	case <-s.eof:
	case <-s.gone:
	}
	return 0, io.EOF
}

// Write turns frames into events and flushes them.
func (s *sseConn) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errSSEClosed
	}
	out := s.out[:0]
	end := false
	for p := b; len(p) > 0; {
		h, n := wsframe.ParseHeader(p)
		if n > len(p) || uint64(len(p)-n) < h.Len {
			break // not a whole frame: the hub never writes one
		}
		payload := p[n : n+int(h.Len)]
		p = p[n+int(h.Len):]
		switch h.Op {
		case wsframe.OpText:
			out = s.event(out, payload)
		case wsframe.OpPing:
			// Keeps proxies from timing the stream out, and lets client.js
			// see that the server is alive.
			out = append(out, "event: ping\ndata: {}\n\n"...)
		case wsframe.OpClose:
			out = append(out, "event: close\ndata: "...)
			out = append(out, closeJSON(payload)...)
			out = append(out, "\n\n"...)
			end = true
		}
	}
	s.out = out[:0]
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	if err := s.rc.Flush(); err != nil {
		return 0, err
	}
	if end {
		s.once.Do(func() { close(s.eof) })
	}
	return len(b), nil
}

// event appends a text frame's message as an event: data messages with
// id "channel:seq@epoch" (Last-Event-ID), control messages without.
func (s *sseConn) event(out, msg []byte) []byte {
	if ch, seq, ok := dataPosition(msg); ok {
		out = append(out, "id: "...)
		out = append(out, ch...)
		out = append(out, ':')
		out = strconv.AppendUint(out, seq, 10)
		out = append(out, '@')
		out = append(out, s.epoch...)
		out = append(out, '\n')
	}
	// A published JSON payload may hold newlines (between tokens, never
	// inside strings): each line is a data line, which EventSource joins
	// with "\n" again.
	for {
		line, rest, more := bytes.Cut(msg, []byte("\n"))
		out = append(out, "data: "...)
		out = append(out, bytes.TrimSuffix(line, []byte("\r"))...)
		out = append(out, '\n')
		if !more {
			break
		}
		msg = rest
	}
	return append(out, '\n')
}

// dataPosition reads channel and seq from a data message as messageFrame
// builds it: {"channel":"NAME","seq":N,…}.
func dataPosition(msg []byte) (string, uint64, bool) {
	rest, ok := bytes.CutPrefix(msg, []byte(`{"channel":"`))
	if !ok {
		return "", 0, false
	}
	name, rest, ok := bytes.Cut(rest, []byte(`","seq":`))
	if !ok {
		return "", 0, false
	}
	i := bytes.IndexByte(rest, ',')
	if i < 0 {
		return "", 0, false
	}
	seq, err := strconv.ParseUint(string(rest[:i]), 10, 64)
	return string(name), seq, err == nil
}

// closeJSON describes a close frame's payload as {"code":…,"reason":…}.
func closeJSON(p []byte) []byte {
	v := struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	}{Code: wsframe.CloseNoStatus}
	if len(p) >= 2 {
		v.Code = int(p[0])<<8 | int(p[1])
		v.Reason = string(p[2:])
	}
	b, _ := json.Marshal(v)
	return b
}

func (s *sseConn) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		s.once.Do(func() { close(s.eof) })
		close(s.closeD)
	}
	return nil
}

func (s *sseConn) LocalAddr() net.Addr  { return s.addr }
func (s *sseConn) RemoteAddr() net.Addr { return s.addr }

// SetDeadline and SetReadDeadline do nothing: an SSE client sends nothing,
// so there is no idle timeout to keep; a client that went away ends the
// request (net/http notices, and keepalive probes find dead peers).
func (s *sseConn) SetDeadline(time.Time) error     { return nil }
func (s *sseConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline bounds the writes of a slow or closing client.
func (s *sseConn) SetWriteDeadline(t time.Time) error {
	s.rc.SetWriteDeadline(t)
	return nil
}

type sseAddr string

func (a sseAddr) Network() string { return "sse" }
func (a sseAddr) String() string  { return string(a) }

// serveSSE serves GET <route>sse.
func (rt *route) serveSSE(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		rt.refuse(w, refuseBadRequest, http.StatusMethodNotAllowed, "the SSE stream takes GET")
		return
	}
	if cfg := rt.config(); cfg != nil && cfg.hub.Raw {
		rt.refuse(w, refuseBadRequest, http.StatusBadRequest, "SSE needs the hub protocol: this route is raw")
		return
	}
	from, ok := lastEventID(r)
	if !ok {
		rt.refuse(w, refuseBadRequest, http.StatusBadRequest, "invalid Last-Event-ID: want channel:seq@epoch")
		return
	}
	a := rt.admitConn(w, r)
	if a == nil {
		return
	}
	defer a.done()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx in front: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	sc := newSSEConn(w, r, rt.n.Epoch())
	// Events go out as soon as written; a browser retries after 2 s
	// (EventSource's default is 3 s).
	sc.w.Write([]byte("retry: 2000\n\n"))
	sc.rc.Flush()
	c := a.client(sc)
	if !rt.register(c) {
		sc.Write(goingAwayFrame)
		return
	}
	a.admitted = true
	c.start(a.cfg, a.channels, from)
	<-sc.closeD // the client's reader finished it: the response may end
}

// lastEventID returns the position a reconnecting EventSource sends
// (Last-Event-ID header, or the last_event_id parameter for a new one),
// "channel:seq@epoch"; nil without one.
func lastEventID(r *http.Request) (*resume, bool) {
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		id = r.URL.Query().Get("last_event_id")
	}
	if id == "" {
		return nil, true
	}
	pos, epoch, ok := strings.Cut(id, "@")
	i := strings.LastIndexByte(pos, ':')
	if !ok || i < 0 {
		return nil, false
	}
	seq, err := strconv.ParseUint(pos[i+1:], 10, 64)
	if err != nil {
		return nil, false
	}
	return &resume{since: seq, epoch: epoch}, true
}

// maxSSEPublishBody bounds a POST <route>publish body beyond the route's
// max_message_size (the JSON around the data).
const maxSSEPublishBody = 4 << 10

// servePublish serves POST <route>publish: {"channel":…,"data":…,"id":…}
// with the same authentication, origin check, permissions, rate and
// publish proxy as a connection's publish message. It answers with the
// message a connection would get: published (200) or error.
func (rt *route) servePublish(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		rt.refuse(w, refuseBadRequest, http.StatusMethodNotAllowed, "publish takes POST")
		return
	}
	cfg := rt.config()
	if cfg == nil || rt.n.isClosed() || rt.isRetired() {
		rt.refuse(w, refuseUnavailable, http.StatusServiceUnavailable, "hub shutting down")
		return
	}
	if !cfg.origins.allow(r) {
		rt.refuse(w, refuseOrigin, http.StatusForbidden, "origin not allowed")
		return
	}
	g, ref := cfg.auth.authenticate(r)
	if ref != nil {
		rt.refuse(w, refuseAuth, ref.status, ref.reason)
		return
	}
	var m inbound
	body := http.MaxBytesReader(w, r.Body, int64(cfg.hub.MaxMessageSize)+maxSSEPublishBody)
	if err := json.NewDecoder(body).Decode(&m); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeReply(w, http.StatusRequestEntityTooLarge, replyMsg{Type: "error", Code: errBadRequest, Message: "data larger than max_message_size"})
			return
		}
		writeReply(w, http.StatusBadRequest, replyMsg{Type: "error", Code: errInvalidJSON, Message: "body must be a JSON object {channel, data}"})
		return
	}
	if len(m.Data) > int(cfg.hub.MaxMessageSize) {
		writeReply(w, http.StatusRequestEntityTooLarge, replyMsg{Type: "error", Code: errBadRequest, Message: "data larger than max_message_size", ID: m.ID})
		return
	}
	ip := clientip.String(r)
	seq, code, msg := rt.n.publishAs(cfg, g, ip, "", m.Channel, m.Data, rt.postLimiter(ip, cfg))
	if code != "" {
		writeReply(w, publishStatus[code], replyMsg{Type: "error", Channel: m.Channel, Code: code, Message: msg, ID: m.ID})
		return
	}
	writeReply(w, http.StatusOK, replyMsg{Type: "published", Channel: m.Channel, Seq: seq, ID: m.ID})
}

// publishStatus is the HTTP status of each error code of a POST publish.
var publishStatus = map[string]int{
	errInvalidChannel:   http.StatusBadRequest,
	errBadRequest:       http.StatusBadRequest,
	errPublishForbidden: http.StatusForbidden,
	errPublishRefused:   http.StatusForbidden,
	errRateLimited:      http.StatusTooManyRequests,
	errUnavailable:      http.StatusServiceUnavailable,
	errPublishFailed:    http.StatusServiceUnavailable,
}

func writeReply(w http.ResponseWriter, status int, m replyMsg) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(m)
}

// maxPostLimiters bounds the per-address publish limiters of POST
// publish; past it they start over (a burst more for everyone, once).
const maxPostLimiters = 10000

// postLimiter returns the publish rate limiter of an address, for SSE
// clients' publishes: they have no connection to hang one on.
func (rt *route) postLimiter(ip string, cfg *routeConfig) *rate.Limiter {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if l := rt.postLimits[ip]; l != nil {
		return l
	}
	if rt.postLimits == nil || len(rt.postLimits) >= maxPostLimiters {
		rt.postLimits = map[string]*rate.Limiter{}
	}
	l := rate.NewLimiter(rate.Limit(cfg.hub.PublishRate), max(1, int(cfg.hub.PublishRate)))
	rt.postLimits[ip] = l
	return l
}
