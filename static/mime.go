package static

import (
	"mime"
	"path"
	"strings"
)

// builtinTypes maps the extensions of web assets to their media types. It
// comes first so that the answer does not depend on the machine's
// /etc/mime.types (Debian's maps .js to application/javascript, some
// systems lack .mjs, .wasm or .woff2 entirely, and a wrong type for a module
// script or a wasm file breaks the page).
var builtinTypes = map[string]string{
	".html":        "text/html; charset=utf-8",
	".htm":         "text/html; charset=utf-8",
	".xhtml":       "application/xhtml+xml",
	".css":         "text/css; charset=utf-8",
	".js":          "text/javascript; charset=utf-8", // RFC 9239
	".mjs":         "text/javascript; charset=utf-8",
	".cjs":         "text/javascript; charset=utf-8",
	".json":        "application/json",
	".map":         "application/json",
	".jsonld":      "application/ld+json",
	".webmanifest": "application/manifest+json",
	".xml":         "application/xml",
	".rss":         "application/rss+xml",
	".atom":        "application/atom+xml",
	".txt":         "text/plain; charset=utf-8",
	".md":          "text/markdown; charset=utf-8",
	".csv":         "text/csv; charset=utf-8",
	".ics":         "text/calendar; charset=utf-8",
	".vtt":         "text/vtt; charset=utf-8",
	".yaml":        "application/yaml",
	".yml":         "application/yaml",
	".wasm":        "application/wasm",
	".svg":         "image/svg+xml",
	".png":         "image/png",
	".apng":        "image/apng",
	".jpg":         "image/jpeg",
	".jpeg":        "image/jpeg",
	".gif":         "image/gif",
	".webp":        "image/webp",
	".avif":        "image/avif",
	".ico":         "image/x-icon",
	".bmp":         "image/bmp",
	".woff":        "font/woff",
	".woff2":       "font/woff2",
	".ttf":         "font/ttf",
	".otf":         "font/otf",
	".eot":         "application/vnd.ms-fontobject",
	".pdf":         "application/pdf",
	".zip":         "application/zip",
	".gz":          "application/gzip",
	".zst":         "application/zstd",
	".tar":         "application/x-tar",
	".mp4":         "video/mp4",
	".m4v":         "video/mp4",
	".webm":        "video/webm",
	".ogv":         "video/ogg",
	".mov":         "video/quicktime",
	".mp3":         "audio/mpeg",
	".m4a":         "audio/mp4",
	".ogg":         "audio/ogg",
	".opus":        "audio/ogg",
	".wav":         "audio/wav",
	".flac":        "audio/flac",
}

// contentType returns the media type for a file name by its extension:
// the built-in table, then the system's table, then
// application/octet-stream. It never sniffs the content: a file without a
// known extension must not become text/html because it starts with "<".
func contentType(name string) string {
	ext := strings.ToLower(path.Ext(name))
	if t, ok := builtinTypes[ext]; ok {
		return t
	}
	if t := mime.TypeByExtension(ext); ext != "" && t != "" {
		return t
	}
	return "application/octet-stream"
}
