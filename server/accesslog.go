package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"edge/config"
	"edge/internal/clientip"
)

// accessLog is one site's access log: a line per request, in nginx's
// combined format or as JSON. Static after construction.
type accessLog struct {
	file *logFile
	json bool
}

// entry is what the access log records of one request.
type entry struct {
	r        *http.Request
	code     int
	bytes    int64
	upstream string // the upstream that served it; "" for none
	upgrade  bool   // hijacked: the connection was upgraded
	start    time.Time
	elapsed  time.Duration
}

func (l *accessLog) write(e *entry) { l.file.write(l.format(e)) }

func (l *accessLog) format(e *entry) []byte {
	r := e.r
	host := clientip.String(r)
	uri := redactedURI(r.URL)
	if l.json {
		upgrade := ""
		if e.upgrade {
			upgrade = r.Header.Get("Upgrade")
		}
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
		}{e.start.UTC().Format(time.RFC3339Nano), host, r.Host, r.Method, uri, r.Proto,
			e.code, e.bytes, e.elapsed.Seconds(), e.upstream, upgrade,
			r.Referer(), r.UserAgent()})
		return append(b, '\n')
	}
	// nginx/Apache "combined", plus the request time in seconds.
	return fmt.Appendf(nil, "%s - - [%s] %q %d %d %q %q %.3f\n",
		host, e.start.Format("02/Jan/2006:15:04:05 -0700"),
		r.Method+" "+uri+" "+r.Proto, e.code, e.bytes,
		r.Referer(), r.UserAgent(), e.elapsed.Seconds())
}

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

// logFiles are the open access-log destinations of the process, one per
// path, shared by every site and every router that names the path. A file
// stays open while a router holds it (logHold) and is closed when the last
// one lets go. Safe for concurrent use.
type logFiles struct {
	mu    sync.Mutex
	files map[string]*logFile // by path; guarded by mu
}

// logFile is an access log destination, reopened on SIGUSR1 for logrotate.
type logFile struct {
	path string
	refs int // guarded by logFiles.mu: opens not yet released
	mu   sync.Mutex
	w    io.Writer // guarded by mu
	f    *os.File  // guarded by mu; nil for stderr
}

// open returns the access log al describes, its destination opened or
// shared; the caller releases it.
func (fs *logFiles) open(al *config.AccessLog) (*accessLog, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	lf, ok := fs.files[al.File]
	if !ok {
		lf = &logFile{path: al.File, w: os.Stderr}
		if al.File != "" && al.File != "stderr" {
			f, err := os.OpenFile(al.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
			if err != nil {
				return nil, fmt.Errorf("access log: %w", err)
			}
			lf.w, lf.f = f, f
		}
		if fs.files == nil {
			fs.files = map[string]*logFile{}
		}
		fs.files[al.File] = lf
	}
	lf.refs++
	return &accessLog{file: lf, json: al.Format == "json"}, nil
}

// release undoes one open of lf, closing the file after the last.
func (fs *logFiles) release(lf *logFile) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if lf.refs--; lf.refs > 0 || fs.files[lf.path] != lf {
		return // still used, or closed already (Metrics.Close)
	}
	delete(fs.files, lf.path)
	lf.close()
}

// logHold is one router's hold on the access-log files its sites write.
// Close lets go of them once the router's last logged request is done,
// so that a file no router uses any more (a path a reload dropped, the
// files of a reload that failed) is closed. A request that enters a
// router after its files were released writes nowhere; a retired router
// gets none but those that loaded it just before the swap.
type logHold struct {
	files  *logFiles
	held   []*logFile   // static after NewRouter
	active atomic.Int64 // logged requests in flight
	closed atomic.Bool
	once   sync.Once
}

// open opens al for the router and holds it.
func (h *logHold) open(al *config.AccessLog) (*accessLog, error) {
	l, err := h.files.open(al)
	if err != nil {
		return nil, err
	}
	h.held = append(h.held, l.file)
	return l, nil
}

// enter and exit bracket a logged request.
func (h *logHold) enter() { h.active.Add(1) }

func (h *logHold) exit() {
	if h.active.Add(-1) == 0 && h.closed.Load() {
		h.release()
	}
}

// close releases the files once no request is in flight.
func (h *logHold) close() {
	h.closed.Store(true)
	if h.active.Load() == 0 {
		h.release()
	}
}

func (h *logHold) release() {
	h.once.Do(func() {
		for _, lf := range h.held {
			h.files.release(lf)
		}
	})
}

// reopen reopens every access log file (after logrotate moved them).
func (fs *logFiles) reopen() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, lf := range fs.files {
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

// close closes every access log file.
func (fs *logFiles) close() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, lf := range fs.files {
		lf.close()
	}
	fs.files = nil
}

// close closes the file; later writes are dropped.
func (lf *logFile) close() {
	lf.mu.Lock()
	defer lf.mu.Unlock()
	if lf.f != nil {
		lf.f.Close()
		lf.f = nil
		lf.w = io.Discard
	}
}

func (lf *logFile) write(b []byte) {
	lf.mu.Lock()
	lf.w.Write(b)
	lf.mu.Unlock()
}
