package server

import (
	"io"
	"net/http"

	"edge/config"
)

// pages answers a site's error statuses with files of its static routes
// (config error_pages): httperr finds pageWriter in the writer chain
// whenever edge itself writes an error page.
type pages struct {
	byCode map[int]pageRoute
}

type pageRoute struct {
	path string
	rt   *route // the static route that serves path
}

// newPages maps each configured status to its page's route; nil when the
// site has none. config.Parse has checked that a static route serves each.
func newPages(cs *config.Site, routes []*route) *pages {
	if len(cs.ErrorPages) == 0 {
		return nil
	}
	p := &pages{byCode: map[int]pageRoute{}}
	for code, path := range cs.ErrorPagesByCode() {
		want := cs.RouteFor(path)
		for _, rt := range routes {
			if want != nil && rt.path == want.Path {
				p.byCode[code] = pageRoute{path: path, rt: rt}
			}
		}
	}
	return p
}

// pageWriter carries a request's site pages down to httperr.
type pageWriter struct {
	http.ResponseWriter
	p       *pages
	r       *http.Request
	serving bool // a page is being served: its own errors get edge's page
}

func (pw *pageWriter) Unwrap() http.ResponseWriter { return pw.ResponseWriter }

// ServeErrorPage serves the page for code through w (the writer httperr
// was given, so that metrics and the access log see it) with code as its
// status: a GET of the page's path on its static route, without the
// original request's conditions, ranges or body.
func (pw *pageWriter) ServeErrorPage(w http.ResponseWriter, code int) bool {
	pr, ok := pw.p.byCode[code]
	if !ok || pw.serving {
		return false
	}
	pw.serving = true
	r := pw.r.Clone(pw.r.Context())
	if r.Method != http.MethodHead {
		r.Method = http.MethodGet
	}
	u := *r.URL
	u.Path, u.RawPath, u.RawQuery = pr.path, "", ""
	r.URL, r.RequestURI = &u, pr.path
	r.Body, r.ContentLength = http.NoBody, 0
	for _, k := range []string{"If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since", "If-Range", "Range"} {
		r.Header.Del(k)
	}
	pr.rt.handler.ServeHTTP(&pageStatus{w: w, code: code}, r)
	return true
}

// pageStatus gives a page the status of the error it stands for, and
// keeps it out of caches. It has no Unwrap: a page that fails (its file
// is gone) gets edge's own error text, still with the original status.
type pageStatus struct {
	w           http.ResponseWriter
	code        int
	wroteHeader bool
}

func (ps *pageStatus) Header() http.Header { return ps.w.Header() }

func (ps *pageStatus) WriteHeader(int) {
	if ps.wroteHeader {
		return
	}
	ps.wroteHeader = true
	h := ps.w.Header()
	for _, k := range []string{"Etag", "Last-Modified", "Accept-Ranges", "Content-Range"} {
		delete(h, k)
	}
	h.Set("Cache-Control", "no-store")
	ps.w.WriteHeader(ps.code)
}

func (ps *pageStatus) Write(b []byte) (int, error) {
	ps.WriteHeader(http.StatusOK)
	return ps.w.Write(b)
}

// ReadFrom keeps sendfile(2) for static files on sites with error pages.
func (pw *pageWriter) ReadFrom(src io.Reader) (int64, error) {
	return io.Copy(pw.ResponseWriter, src)
}
