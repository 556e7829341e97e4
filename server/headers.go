package server

import (
	"io"
	"net/http"
	"strings"

	"edge/config"
)

// withHeaders applies a route's header edits: request edits before the
// handler runs, response edits just before the status line is written.
func withHeaders(h http.Handler, ops *config.Headers) http.Handler {
	if ops == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hasOps(ops.Request) {
			r = r.Clone(r.Context())
			applyOps(r.Header, ops.Request)
		}
		if hasOps(ops.Response) {
			w = &headerWriter{recorder: recorder{ResponseWriter: w}, ops: ops.Response}
		}
		h.ServeHTTP(w, r)
	})
}

func hasOps(o config.HeaderOps) bool {
	return len(o.Set) > 0 || len(o.Add) > 0 || len(o.Remove) > 0
}

func applyOps(h http.Header, o config.HeaderOps) {
	for _, k := range o.Remove {
		h.Del(k)
	}
	for k, v := range o.Set {
		h.Set(k, v)
	}
	for k, v := range o.Add {
		h.Add(k, v)
	}
	unlistConnection(h, o)
}

// unlistConnection drops the fields o sets or adds from h's Connection
// list. A client may name any field there as hop-by-hop (RFC 9110 section
// 7.6.1), and a proxy removes the fields named before forwarding: left in
// the list, "Connection: keep-alive, X-Edge-Verified" would strip the
// route's own X-Edge-Verified on its way to the upstream.
func unlistConnection(h http.Header, o config.HeaderOps) {
	list := h["Connection"]
	if len(list) == 0 || len(o.Set)+len(o.Add) == 0 {
		return
	}
	var keep []string
	for _, v := range list {
		for _, tok := range strings.Split(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !edited(o, tok) {
				keep = append(keep, tok)
			}
		}
	}
	if len(keep) == 0 {
		delete(h, "Connection")
		return
	}
	h["Connection"] = []string{strings.Join(keep, ", ")}
}

// edited reports whether o sets or adds the field name.
func edited(o config.HeaderOps, name string) bool {
	for k := range o.Set {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	for k := range o.Add {
		if strings.EqualFold(k, name) {
			return true
		}
	}
	return false
}

// headerWriter edits response headers once, when the header is written. It
// embeds recorder for the optional interfaces (Flusher, Hijacker, ...).
type headerWriter struct {
	recorder
	ops  config.HeaderOps
	done bool
}

func (w *headerWriter) edit() {
	if !w.done {
		w.done = true
		applyOps(w.Header(), w.ops)
	}
}

func (w *headerWriter) WriteHeader(code int) {
	if code >= 200 {
		w.edit()
	}
	w.recorder.WriteHeader(code)
}

func (w *headerWriter) Write(b []byte) (int, error) {
	w.edit()
	return w.recorder.Write(b)
}

func (w *headerWriter) ReadFrom(src io.Reader) (int64, error) {
	w.edit()
	return w.recorder.ReadFrom(src)
}
