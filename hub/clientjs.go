package hub

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

// clientSource is the browser client. It is a classic script that defines
// globalThis.EdgeHub (and so also works when imported as a module for its
// side effect); client.mjs is the same code with ES module exports.
//
//go:embed client.js
var clientSource []byte

var (
	clientJS  = newAsset(clientSource)
	clientMJS = newAsset(append(bytes.Clone(clientSource),
		"\nconst EdgeHub = globalThis.EdgeHub;\nexport { EdgeHub };\nexport default EdgeHub;\n"...))
)

type asset struct {
	body []byte
	etag string
}

func newAsset(b []byte) asset {
	sum := sha256.Sum256(b)
	return asset{body: b, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
}

// serveClientJS serves an embedded script with a strong ETag; clients
// revalidate (no-cache) so a new edge version is picked up at once.
func serveClientJS(w http.ResponseWriter, r *http.Request, a asset) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeRefusal(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", "public, max-age=0, must-revalidate")
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "client.js", time.Time{}, bytes.NewReader(a.body))
}
