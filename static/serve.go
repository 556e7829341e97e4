package static

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"time"

	"edge/internal/compress"
)

// Header values shared by every response; never modified.
var (
	hNosniff   = []string{"nosniff"}
	hBytes     = []string{"bytes"}
	hVary      = []string{"Accept-Encoding"}
	hNoCache   = []string{"no-cache"}
	hTextPlain = []string{"text/plain; charset=utf-8"}
	hEncoding  = [compress.NumEncodings][]string{nil, {"br"}, {"zstd"}, {"gzip"}}
)

// serveAsset answers a GET or HEAD for a resolved file: it picks the
// variant, sets the headers, evaluates the conditional headers and sends
// the full body, a 304, or (from the identity file only) the ranges.
func (h *Handler) serveAsset(w http.ResponseWriter, r *http.Request, a *asset, cacheControl []string) {
	ranged := len(r.Header["Range"]) > 0
	v := a.variants[compress.Identity]
	if !ranged && len(a.order) > 0 {
		q := compress.ParseAccept(headerValue(r, "Accept-Encoding"))
		v = a.variants[q.Choose(a.order)]
	}

	hdr := w.Header()
	hdr["X-Content-Type-Options"] = hNosniff
	hdr["Content-Type"] = a.ctype
	hdr["Etag"] = v.hETag
	hdr["Last-Modified"] = v.hLastMod
	hdr["Cache-Control"] = cacheControl
	hdr["Accept-Ranges"] = hBytes
	if a.vary {
		hdr["Vary"] = hVary
	}

	switch checkConditions(r, v.etag, v.modTime) {
	case http.StatusNotModified:
		// RFC 9110 §15.4.5: keep the validators, Cache-Control and Vary.
		delete(hdr, "Content-Type")
		delete(hdr, "Accept-Ranges")
		w.WriteHeader(http.StatusNotModified)
		return
	case http.StatusPreconditionFailed:
		h.error(w, http.StatusPreconditionFailed)
		return
	}

	if ranged {
		// http.ServeContent handles If-Range, single and multipart ranges
		// and 416. Our headers are already set, so it neither sniffs nor
		// guesses; the conditions it re-checks have just passed.
		var content io.ReadSeeker = v.f
		if v.body != nil {
			content = bytes.NewReader(v.body)
		}
		http.ServeContent(w, r, "", v.modTime, content)
		return
	}

	if v.enc != compress.Identity {
		hdr["Content-Encoding"] = hEncoding[v.enc]
	}
	if v.hLength != nil {
		hdr["Content-Length"] = v.hLength
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	switch {
	case v.body != nil:
		w.Write(v.body)
	case v.onTheFly:
		h.comp.Stream(v.enc, w, a.variants[compress.Identity].f)
	default:
		// w is the server's own ResponseWriter: io.Copy reaches its
		// ReadFrom, which hands the *os.File to sendfile(2).
		io.Copy(w, v.f)
	}
}

// headerValue returns the first value of a canonical header key without
// the canonicalisation that Header.Get does.
func headerValue(r *http.Request, key string) string {
	if v := r.Header[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// checkConditions evaluates the preconditions of RFC 9110 §13.2.2 for a
// GET or HEAD: If-Match, else If-Unmodified-Since (412 when false), then
// If-None-Match, else If-Modified-Since (304 when false). It returns 200
// when the request should proceed.
func checkConditions(r *http.Request, etag string, modTime time.Time) int {
	if im := headerValue(r, "If-Match"); im != "" {
		if !etagListMatch(im, etag, true) {
			return http.StatusPreconditionFailed
		}
	} else if ius := headerValue(r, "If-Unmodified-Since"); ius != "" {
		if t, err := http.ParseTime(ius); err == nil && modTime.Truncate(time.Second).After(t) {
			return http.StatusPreconditionFailed
		}
	}
	if inm := headerValue(r, "If-None-Match"); inm != "" {
		if etagListMatch(inm, etag, false) {
			return http.StatusNotModified
		}
	} else if ims := headerValue(r, "If-Modified-Since"); ims != "" {
		if t, err := http.ParseTime(ims); err == nil && !modTime.Truncate(time.Second).After(t) {
			return http.StatusNotModified
		}
	}
	return http.StatusOK
}

// etagListMatch reports whether the strong tag etag is in the
// comma-separated list (or the list is "*"). If-Match compares strongly,
// so a weak tag in the list never matches; If-None-Match compares weakly,
// ignoring W/.
func etagListMatch(list, etag string, strong bool) bool {
	if strings.TrimSpace(list) == "*" {
		return true
	}
	for list != "" {
		var t string
		t, list, _ = strings.Cut(list, ",")
		t = strings.TrimSpace(t)
		if weak, ok := strings.CutPrefix(t, "W/"); ok {
			if strong {
				continue
			}
			t = weak
		}
		if t == etag {
			return true
		}
	}
	return false
}
