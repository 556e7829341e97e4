package static

import (
	"bytes"
	"errors"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
)

// maxListing bounds the entries shown for one directory.
const maxListing = 10000

// listingPage is rendered by html/template, which escapes names in text
// and in the href attribute; the Content-Security-Policy forbids scripts
// in case anything ever slipped through.
var listingPage = template.Must(template.New("listing").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Index of {{.Path}}</title>
<style>body{font:14px/1.5 system-ui,sans-serif;margin:2em}td{padding:0 2em 0 0}td.n{text-align:right}</style>
</head><body><h1>Index of {{.Path}}</h1>
<table>
{{- if .Parent}}
<tr><td><a href="../">../</a></td><td></td><td></td></tr>
{{- end}}
{{- range .Entries}}
<tr><td><a href="{{.Href}}">{{.Name}}</a></td><td class="n">{{.Size}}</td><td>{{.Mod}}</td></tr>
{{- end}}
</table>
{{- if .More}}
<p>Only the first {{.Limit}} entries are shown.</p>
{{- end}}
</body></html>
`))

type listingEntry struct {
	Name, Href, Size, Mod string
	dir                   bool
}

// serveListing answers a directory request without an index file when
// browse is on. dir is the open directory and key its cache key. Dotfiles
// are left out, and so are symlinks that lead outside the root.
func (h *Handler) serveListing(w http.ResponseWriter, r *http.Request, rd *rootDir, dir *os.File, key string) {
	des, err := dir.ReadDir(maxListing + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		h.failed(w, r, key, err, false)
		return
	}
	more := len(des) > maxListing
	if more {
		des = des[:maxListing]
	}
	entries := make([]listingEntry, 0, len(des))
	for _, de := range des {
		if strings.HasPrefix(de.Name(), ".") {
			continue
		}
		fi, err := de.Info()
		if err == nil && fi.Mode()&fs.ModeSymlink != 0 {
			fi, err = h.stat(rd, key+de.Name()) // follow it, inside the root only
		}
		if err != nil {
			continue
		}
		e := listingEntry{Name: de.Name(), Href: "./" + url.PathEscape(de.Name()), dir: fi.IsDir()}
		e.Mod = fi.ModTime().UTC().Format("2006-01-02 15:04")
		if e.dir {
			e.Name += "/"
			e.Href += "/"
			e.Size = "-"
		} else {
			e.Size = strconv.FormatInt(fi.Size(), 10)
		}
		entries = append(entries, e)
	}
	slices.SortFunc(entries, func(a, b listingEntry) int {
		if a.dir != b.dir {
			if a.dir {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})

	var buf bytes.Buffer
	err = listingPage.Execute(&buf, map[string]any{
		"Path":    r.URL.Path,
		"Parent":  strings.TrimSuffix(r.URL.Path, "/") != h.prefix,
		"Entries": entries,
		"More":    more,
		"Limit":   maxListing,
	})
	if err != nil {
		h.log.Warn("directory listing", "path", key, "err", err)
		h.error(w, http.StatusInternalServerError)
		return
	}
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/html; charset=utf-8"}
	hdr["X-Content-Type-Options"] = hNosniff
	hdr["Cache-Control"] = hNoCache
	hdr["Content-Security-Policy"] = []string{"default-src 'none'; style-src 'unsafe-inline'"}
	hdr["Content-Length"] = []string{strconv.Itoa(buf.Len())}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(buf.Bytes())
	}
}
