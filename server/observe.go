package server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/config"
	"edge/internal/httperr"
	"edge/internal/prom"
)

// Metrics counts requests per site, route and status, and owns the
// access log files. One Metrics lives as long as the process; reloads keep
// it, so the counters and open log files survive. Safe for concurrent use.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge
	refused  *prometheus.CounterVec // by reason

	logs logFiles
}

// Reasons of edge_http_refused_total: requests (or connections) that the
// listener refuses before any site sees them, so that no site's access
// log can hold them.
const (
	// RefusedFraming: an HTTP/1 request with ambiguous framing
	// (Content-Length and Transfer-Encoding, ...), answered 400, and the
	// connection closed.
	RefusedFraming = "framing"
	// RefusedResetBudget: an HTTP/2 connection closed for cancelling more
	// than ResetBudget requests a second (rapid reset).
	RefusedResetBudget = "reset_budget"
	// RefusedPlainHTTP: a plain HTTP request on an HTTPS listener, answered
	// 400 as net/http does.
	RefusedPlainHTTP = "plain_http"
	// RefusedProxyUntrusted: a connection closed for starting with a
	// PROXY protocol header from a peer outside listen.proxy_protocol.trusted.
	RefusedProxyUntrusted = "proxy_untrusted"
	// RefusedProxyHeader: a trusted peer's connection closed for a
	// missing, malformed or late PROXY protocol header.
	RefusedProxyHeader = "proxy_header"
)

// NewMetrics registers the request metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_http_requests_total",
			Help: "HTTP requests by site, route and status code (101 for upgrades).",
		}, []string{"site", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "edge_http_request_duration_seconds",
			Help:    "Time to the end of the response, by site and route (upgrades excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"site", "route"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "edge_http_requests_in_flight",
			Help: "Requests being served now (upgraded connections excluded).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_http_refused_total",
			Help: "Requests and connections refused before reaching a site, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{RefusedFraming, RefusedResetBudget, RefusedPlainHTTP, RefusedProxyUntrusted, RefusedProxyHeader} {
		m.refused.WithLabelValues(r) // listed at 0
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inflight, m.refused)
	}
	return m
}

// refuse counts a refusal; m may be nil.
func (m *Metrics) refuse(reason string) {
	if m != nil {
		m.refused.WithLabelValues(reason).Inc()
	}
}

// ReopenLogs reopens every access log file (after logrotate moved them).
func (m *Metrics) ReopenLogs() { m.logs.reopen() }

// Close closes the access log files.
func (m *Metrics) Close() { m.logs.close() }

// observer instruments one route: its metrics and its site's access log.
// Static after construction.
type observer struct {
	m        *Metrics
	log      *accessLog // nil: no access log
	hold     *logHold   // the router's, when log is set
	duration prometheus.Observer
	requests *prom.Counters[int] // by status code
}

// observer instruments route of site, holding the site's access log in
// hold.
func (m *Metrics) observer(site *config.Site, route string, hold *logHold) (*observer, error) {
	name := site.Name() // the label every package uses for the site
	o := &observer{m: m, duration: m.duration.WithLabelValues(name, route)}
	o.requests = prom.NewCounters(m.requests, func(code int) []string {
		return []string{name, route, strconv.Itoa(code)}
	})
	if al := site.AccessLog; al != nil {
		var err error
		if o.log, err = hold.open(al); err != nil {
			return nil, err
		}
		o.hold = hold
	}
	return o, nil
}

// observe serves the request with h, recorded by o; without o (no
// Metrics), h alone.
func (o *observer) observe(h http.Handler, w http.ResponseWriter, r *http.Request) {
	if o == nil {
		h.ServeHTTP(w, r)
		return
	}
	o.serve(h, w, r)
}

// serve runs h and records the request. The record is written in a
// deferred call so that it also happens while a handler's panic unwinds
// (httperr.Abandon: logged with the noted status, 499); the panic then
// goes on to net/http, which resets the connection or stream.
func (o *observer) serve(h http.Handler, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	o.m.inflight.Inc()
	if o.log != nil {
		o.hold.enter()
	}
	defer func() {
		o.m.inflight.Dec()
		code := rec.status
		if code == 0 {
			code = http.StatusOK
		}
		if rec.hijacked && code == http.StatusOK {
			code = http.StatusSwitchingProtocols
		}
		o.requests.Get(code).Inc()
		elapsed := time.Since(start)
		if !rec.hijacked {
			o.duration.Observe(elapsed.Seconds())
		}
		if o.log != nil {
			o.log.write(&entry{r: r, code: code, bytes: rec.bytes, upstream: rec.upstream,
				upgrade: rec.hijacked, start: start, elapsed: elapsed})
			o.hold.exit()
		}
	}()
	h.ServeHTTP(rec, r)
}

// recorder notes the status and size of a response. It keeps the optional
// interfaces handlers rely on: Flusher (SSE), Hijacker (WebSockets; gorilla
// asserts it directly), ReaderFrom (sendfile) and Unwrap for
// http.ResponseController; as an httperr.StatusNoter it takes the status
// of a request a handler abandoned without writing one (499), as an
// httperr.UpstreamNoter the upstream that served it (the access log's
// upstream, nginx's $upstream_addr). Owned by the request's handler.
type recorder struct {
	http.ResponseWriter
	status   int
	bytes    int64
	hijacked bool
	upstream string
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 || r.status < 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := io.Copy(r.ResponseWriter, src)
	r.bytes += n
	return n, err
}

func (r *recorder) Flush() {
	http.NewResponseController(r.ResponseWriter).Flush()
}

func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(r.ResponseWriter).Hijack()
	if err == nil {
		r.hijacked = true
	}
	return c, brw, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// NoteStatus records code as the request's status without writing it
// (httperr.Note, httperr.Abandon). It wins over a status written before:
// the handler that notes knows how the request ended.
func (r *recorder) NoteStatus(code int) { r.status = code }

// NoteUpstream records addr as the upstream that served the request
// (httperr.NoteUpstream), the last one noted when a retry moved on. It
// passes addr on down the writer chain: a recorder can wrap another (a
// route's response header edits wrap the observer's).
func (r *recorder) NoteUpstream(addr string) {
	r.upstream = addr
	httperr.NoteUpstream(r.ResponseWriter, addr)
}

var (
	_ httperr.StatusNoter   = (*recorder)(nil)
	_ httperr.UpstreamNoter = (*recorder)(nil)
)
