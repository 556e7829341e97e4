package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"edge/config"
	"edge/internal/clientip"
	"edge/internal/httperr"
	"edge/internal/prom"
)

// Metrics counts requests per site, route and status and writes access
// logs. One Metrics lives as long as the process; reloads keep it, so the
// counters and open log files survive. Safe for concurrent use.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inflight prometheus.Gauge

	mu    sync.Mutex
	files map[string]*logFile // by path; guarded by mu
}

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
		files: map[string]*logFile{},
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.inflight)
	}
	return m
}

// logFile is an access log destination, reopened on SIGUSR1 for logrotate.
type logFile struct {
	path string
	mu   sync.Mutex
	w    io.Writer // guarded by mu
	f    *os.File  // nil for stderr
}

func (m *Metrics) openLog(path string) (*logFile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if lf, ok := m.files[path]; ok {
		return lf, nil
	}
	lf := &logFile{path: path, w: os.Stderr}
	if path != "" && path != "stderr" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return nil, fmt.Errorf("access log: %w", err)
		}
		lf.w, lf.f = f, f
	}
	m.files[path] = lf
	return lf, nil
}

// ReopenLogs reopens every access log file (after logrotate moved them).
func (m *Metrics) ReopenLogs() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, lf := range m.files {
		if lf.f == nil {
			continue
		}
		f, err := os.OpenFile(lf.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			continue // keep writing to the old file rather than nowhere
		}
		lf.mu.Lock()
		old := lf.f
		lf.w, lf.f = f, f
		lf.mu.Unlock()
		old.Close()
	}
}

// Close closes the access log files.
func (m *Metrics) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, lf := range m.files {
		if lf.f != nil {
			lf.mu.Lock()
			lf.f.Close()
			lf.mu.Unlock()
		}
	}
	m.files = map[string]*logFile{}
}

func (lf *logFile) write(b []byte) {
	lf.mu.Lock()
	lf.w.Write(b)
	lf.mu.Unlock()
}

// observer instruments one route.
type observer struct {
	m        *Metrics
	site     string
	route    string
	log      *logFile // nil: no access log
	json     bool
	duration prometheus.Observer
	requests *prom.Counters[int] // by status code
}

func (m *Metrics) observer(site *config.Site, route string) (*observer, error) {
	name := "default"
	if len(site.Hosts) > 0 {
		name = site.Hosts[0]
	}
	o := &observer{m: m, site: name, route: route, duration: m.duration.WithLabelValues(name, route)}
	o.requests = prom.NewCounters(m.requests, func(code int) []string {
		return []string{name, route, strconv.Itoa(code)}
	})
	if al := site.AccessLog; al != nil {
		lf, err := m.openLog(al.File)
		if err != nil {
			return nil, err
		}
		o.log, o.json = lf, al.Format == "json"
	}
	return o, nil
}

// serve runs h and records the request. The record is written in a
// deferred call so that it also happens while a handler's panic unwinds
// (httperr.Abandon: logged with the noted status, 499); the panic then
// goes on to net/http, which resets the connection or stream.
func (o *observer) serve(h http.Handler, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	o.m.inflight.Inc()
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
			o.log.write(o.format(r, code, rec, start, elapsed))
		}
	}()
	h.ServeHTTP(rec, r)
}

func (o *observer) format(r *http.Request, code int, rec *recorder, start time.Time, elapsed time.Duration) []byte {
	host := clientip.String(r)
	uri := redactedURI(r.URL)
	if o.json {
		b, _ := json.Marshal(struct {
			Time     string  `json:"time"`
			Remote   string  `json:"remote"`
			Host     string  `json:"host"`
			Method   string  `json:"method"`
			Path     string  `json:"path"`
			Proto    string  `json:"proto"`
			Status   int     `json:"status"`
			Bytes    int64   `json:"bytes"`
			Duration float64 `json:"duration"`
			Upstream string  `json:"upstream,omitempty"`
			Upgrade  string  `json:"upgrade,omitempty"`
			Referer  string  `json:"referer,omitempty"`
			Agent    string  `json:"user_agent,omitempty"`
		}{start.UTC().Format(time.RFC3339Nano), host, r.Host, r.Method, uri, r.Proto,
			code, rec.bytes, elapsed.Seconds(), rec.Header().Get("X-Edge-Upstream"), upgradeOf(r, rec),
			r.Referer(), r.UserAgent()})
		return append(b, '\n')
	}
	// nginx/Apache "combined", plus the request time in seconds.
	return fmt.Appendf(nil, "%s - - [%s] %q %d %d %q %q %.3f\n",
		host, start.Format("02/Jan/2006:15:04:05 -0700"),
		r.Method+" "+uri+" "+r.Proto, code, rec.bytes,
		r.Referer(), r.UserAgent(), elapsed.Seconds())
}

func upgradeOf(r *http.Request, rec *recorder) string {
	if rec.hijacked {
		return r.Header.Get("Upgrade")
	}
	return ""
}

// recorder notes the status and size of a response. It keeps the optional
// interfaces handlers rely on: Flusher (SSE), Hijacker (WebSockets; gorilla
// asserts it directly), ReaderFrom (sendfile) and Unwrap for
// http.ResponseController; as an httperr.StatusNoter it takes the status
// of a request a handler abandoned without writing one (499).
type recorder struct {
	http.ResponseWriter
	status   int
	bytes    int64
	hijacked bool
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

var _ httperr.StatusNoter = (*recorder)(nil)

// redactedURI is u's request URI with the values of the token and
// access_token query parameters replaced by REDACTED, so that bearer
// tokens (the hub's ?token= JWTs) never reach access logs.
func redactedURI(u *url.URL) string {
	q := u.RawQuery
	if !strings.Contains(q, "token") && !strings.Contains(q, "%") {
		return u.RequestURI() // the common case: nothing to redact
	}
	parts := strings.Split(q, "&")
	changed := false
	for i, part := range parts {
		key, _, _ := strings.Cut(part, "=")
		if k, err := url.QueryUnescape(key); err == nil {
			key = k
		}
		if key == "token" || key == "access_token" {
			parts[i] = key + "=REDACTED"
			changed = true
		}
	}
	if !changed {
		return u.RequestURI()
	}
	v := *u
	v.RawQuery = strings.Join(parts, "&")
	return v.RequestURI()
}
