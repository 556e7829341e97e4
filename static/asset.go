package static

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"edge/internal/compress"
)

// stamp identifies one version of a file: revalidation compares stamps, and
// validators are made from them.
type stamp struct {
	size  int64 // -1: the file does not exist
	mtime int64 // Unix nanoseconds
}

var absent = stamp{size: -1}

func stampOf(fi fs.FileInfo) stamp {
	return stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

// etag formats a strong entity tag from the modification time in
// nanoseconds and the size (nginx does the same with seconds), plus the
// coding, so that every representation of a file has its own tag.
func (s stamp) etag(enc compress.Encoding) string {
	b := make([]byte, 0, 48)
	b = append(b, '"')
	b = strconv.AppendInt(b, s.mtime, 16)
	b = append(b, '-')
	b = strconv.AppendInt(b, s.size, 16)
	if enc != compress.Identity {
		b = append(b, '-')
		b = append(b, enc.String()...)
	}
	b = append(b, '"')
	return string(b)
}

// variant is one representation of an asset: the identity file, a
// precompressed sidecar, or the identity compressed by edge.
type variant struct {
	enc     compress.Encoding
	etag    string
	modTime time.Time

	body     []byte   // cached assets: the bytes to send
	f        *os.File // streamed assets: the open file to send
	onTheFly bool     // streamed assets: compress the identity file while sending

	// Header values formatted once; shared read-only between responses.
	// hLength is nil when the length is unknown (compressed while sent).
	hETag, hLastMod, hLength []string
}

func newVariant(enc compress.Encoding, st stamp, length int64) *variant {
	v := &variant{enc: enc, etag: st.etag(enc), modTime: time.Unix(0, st.mtime)}
	v.hETag = []string{v.etag}
	v.hLastMod = []string{v.modTime.UTC().Format(http.TimeFormat)}
	if length >= 0 {
		v.hLength = []string{strconv.FormatInt(length, 10)}
	}
	return v
}

// asset is a regular file resolved for a request, with the variants it can
// be sent as. A cached asset holds bytes and is shared, read-only apart
// from its atomics, between requests; a streamed asset holds open files and
// belongs to one request, which closes it.
type asset struct {
	name     string   // root-relative name of the identity file
	rd       *rootDir // the opening of the directory it was read from
	ctype    []string // Content-Type value
	vary     bool     // the response depends on Accept-Encoding
	order    []compress.Encoding
	variants [compress.NumEncodings]*variant // [compress.Identity] is always set

	// Cached assets only.
	stamps  [compress.NumEncodings]stamp // identity and sidecar files, as read
	mem     int64                        // bytes held
	checked atomic.Int64                 // tick of the last revalidation
	used    atomic.Bool                  // hit since the last eviction sweep
}

func (h *Handler) newAsset(rd *rootDir, name string, size int64) *asset {
	ct := contentType(name)
	return &asset{
		name:  name,
		rd:    rd,
		ctype: []string{ct},
		vary:  h.precompressed || h.comp.Eligible(ct, size),
	}
}

// add records v; codings are preferred in the order they are added.
func (a *asset) add(v *variant) {
	a.variants[v.enc] = v
	if v.enc != compress.Identity {
		a.order = append(a.order, v.enc)
	}
}

// close closes the files of a streamed asset.
func (a *asset) close() {
	for _, v := range a.variants {
		if v != nil && v.f != nil {
			v.f.Close()
		}
	}
}

// errTooLarge says a sidecar is too large for the cache although its
// identity file is not; the asset is streamed instead.
var errTooLarge = errors.New("precompressed file too large to cache")

// entryOverhead approximates the memory of an asset beside its bodies.
const entryOverhead = 1 << 10

// loadCached reads the identity file f (name, fi), its sidecars and the
// variants edge compresses itself into a new cached asset. f stays open
// and, on errTooLarge, unread.
func (h *Handler) loadCached(rd *rootDir, name string, f *os.File, fi fs.FileInfo) (*asset, error) {
	a := h.newAsset(rd, name, fi.Size())
	id := stampOf(fi)
	a.stamps = [compress.NumEncodings]stamp{id, absent, absent, absent}
	a.mem = entryOverhead + 2*int64(len(name))
	if h.precompressed {
		for _, e := range sidecarOrder {
			sf, sfi, ok := h.openRegular(rd, name+encSuffix[e])
			if !ok {
				continue
			}
			if !h.cache.fits(sfi.Size()) {
				sf.Close()
				return nil, errTooLarge
			}
			body, err := readAll(sf, sfi.Size())
			sf.Close()
			if err != nil {
				continue // changing under us: the next revalidation reloads
			}
			st := stampOf(sfi)
			a.stamps[e] = st
			a.addBody(newVariant(e, st, int64(len(body))), body)
		}
	}
	body, err := readAll(f, fi.Size())
	if err != nil {
		return nil, err
	}
	a.addBody(newVariant(compress.Identity, id, int64(len(body))), body)
	if h.comp.Eligible(a.ctype[0], fi.Size()) {
		for _, e := range h.comp.Order() {
			if a.variants[e] != nil {
				continue // a precompressed file wins
			}
			if c := h.comp.CompressBytes(e, body); c != nil {
				a.addBody(newVariant(e, id, int64(len(c))), c)
			}
		}
	}
	a.checked.Store(h.tick())
	return a, nil
}

func (a *asset) addBody(v *variant, body []byte) {
	v.body = body
	a.mem += int64(len(body))
	a.add(v)
}

// openStreamed builds a streamed asset around the open identity file f:
// it opens the sidecars of codings the client accepts and offers
// on-the-fly compression for the rest when the type qualifies. The caller
// closes the asset.
func (h *Handler) openStreamed(rd *rootDir, name string, f *os.File, fi fs.FileInfo, q *compress.AcceptQ) *asset {
	a := h.newAsset(rd, name, fi.Size())
	id := stampOf(fi)
	v := newVariant(compress.Identity, id, fi.Size())
	v.f = f
	a.add(v)
	if h.precompressed {
		for _, e := range sidecarOrder {
			if q[e] <= 0 {
				continue
			}
			if sf, sfi, ok := h.openRegular(rd, name+encSuffix[e]); ok {
				sv := newVariant(e, stampOf(sfi), sfi.Size())
				sv.f = sf
				a.add(sv)
			}
		}
	}
	if h.comp.Eligible(a.ctype[0], fi.Size()) {
		for _, e := range h.comp.Order() {
			if q[e] > 0 && a.variants[e] == nil {
				cv := newVariant(e, id, -1)
				cv.onTheFly = true
				a.add(cv)
			}
		}
	}
	return a
}

// unchanged stats the files a cached asset was read from and reports
// whether they are as they were (same size and modification time, sidecars
// neither added nor removed).
func (h *Handler) unchanged(a *asset) bool {
	rd := h.dir()
	if rd != a.rd {
		return false
	}
	for e := range compress.NumEncodings {
		if e != compress.Identity && !h.precompressed {
			break
		}
		st := absent
		if fi, err := h.stat(rd, a.name+encSuffix[e]); err == nil && fi.Mode().IsRegular() {
			st = stampOf(fi)
		}
		if st != a.stamps[e] {
			return false
		}
	}
	return true
}
