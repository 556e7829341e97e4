package fastcgi

import (
	"context"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"edge/config"
	"edge/internal/clientip"
)

// script is what a request runs: the script's URL path (SCRIPT_NAME),
// the rest of the path (PATH_INFO) and the file (SCRIPT_FILENAME).
type script struct {
	name, pathInfo, file string
}

type scriptKey struct{}

// resolve finds the script of the URL path p under the root (see
// config.FastCGI): the path up to the first segment ending in split_path,
// else the directory's index, else the root's index (a front controller).
// Only an existing regular file whose name ends in split_path is ever
// returned, so "/uploads/evil.jpg/x.php" finds no script (evil.jpg is not
// a directory) instead of running the picture, nginx's cgi.fix_pathinfo
// hole. The path is cleaned first: ".." cannot leave the root. ok is false
// when no script exists.
func resolve(cfg *config.FastCGI, p string) (s script, ok bool) {
	p = cleanPath(p)
	ext := cfg.SplitPath
	for i := 0; ; {
		j := strings.Index(p[i:], ext)
		if j < 0 {
			break
		}
		end := i + j + len(ext)
		if end == len(p) || p[end] == '/' {
			if end-len(ext) > 0 && p[end-len(ext)-1] != '/' { // a name before the extension
				s = script{name: p[:end], pathInfo: p[end:]}
				return s.at(cfg.Root)
			}
		}
		i = end
	}
	if strings.HasSuffix(p, "/") {
		if s, ok := (script{name: p + cfg.Index}).at(cfg.Root); ok {
			return s, true
		}
	}
	return script{name: "/" + cfg.Index}.at(cfg.Root)
}

// at sets the file of s under root and reports whether it is a regular
// file.
func (s script) at(root string) (script, bool) {
	s.file = filepath.Join(root, filepath.FromSlash(s.name))
	fi, err := os.Stat(s.file)
	return s, err == nil && fi.Mode().IsRegular()
}

// cleanPath is p made absolute and without "." and ".." segments or
// repeated slashes, keeping a trailing slash.
func cleanPath(p string) string {
	c := path.Clean("/" + p)
	if strings.HasSuffix(p, "/") && c != "/" {
		c += "/"
	}
	return c
}

// params appends the CGI/1.1 variables (RFC 3875 section 4.1) of req
// running s, then the request headers as HTTP_*, then env, as
// name-value pairs.
func params(b []byte, req *http.Request, s script, root string, env map[string]string) []byte {
	add := func(k, v string) { b = appendPair(b, k, v) }
	add("GATEWAY_INTERFACE", "CGI/1.1")
	add("SERVER_SOFTWARE", "edge")
	add("SERVER_PROTOCOL", protocol(req))
	add("REQUEST_METHOD", req.Method)
	uri := req.RequestURI
	if uri == "" || uri[0] != '/' {
		uri = req.URL.RequestURI()
	}
	add("REQUEST_URI", uri)
	add("QUERY_STRING", req.URL.RawQuery)
	add("DOCUMENT_ROOT", root)
	add("DOCUMENT_URI", s.name+s.pathInfo)
	add("SCRIPT_NAME", s.name)
	add("SCRIPT_FILENAME", s.file)
	add("PATH_INFO", s.pathInfo)
	if s.pathInfo != "" {
		add("PATH_TRANSLATED", filepath.Join(root, filepath.FromSlash(s.pathInfo)))
	}
	if req.ContentLength > 0 || req.Body != nil && req.Body != http.NoBody {
		add("CONTENT_LENGTH", strconv.FormatInt(max(req.ContentLength, 0), 10))
	} else {
		add("CONTENT_LENGTH", "")
	}
	add("CONTENT_TYPE", req.Header.Get("Content-Type"))

	host, port := req.Host, ""
	if h, p, err := net.SplitHostPort(req.Host); err == nil {
		host, port = h, p
	}
	if la, ok := req.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if _, p, err := net.SplitHostPort(la.String()); err == nil {
			port = p
		}
	}
	add("SERVER_NAME", host)
	add("SERVER_PORT", port)
	if la, ok := req.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if h, _, err := net.SplitHostPort(la.String()); err == nil {
			add("SERVER_ADDR", h)
		}
	}
	info := clientip.InfoOf(req)
	if info.Client.IsValid() {
		add("REMOTE_ADDR", info.Client.String())
		// The port belongs to the connection's peer: only when that peer
		// is the client.
		if info.Client == info.Peer {
			if _, p, err := net.SplitHostPort(req.RemoteAddr); err == nil {
				add("REMOTE_PORT", p)
			}
		}
	}
	if req.TLS != nil {
		add("HTTPS", "on")
		add("REQUEST_SCHEME", "https")
	} else {
		add("REQUEST_SCHEME", "http")
	}
	for k, vs := range req.Header {
		name, ok := headerParam(k)
		if !ok {
			continue
		}
		sep := ", "
		if k == "Cookie" {
			sep = "; "
		}
		v := strings.Join(vs, sep)
		if pairLen(name, v) > maxContentLen {
			continue // php-fpm reads pairs record by record: one that does not fit is dropped
		}
		add(name, v)
	}
	for k, v := range env {
		add(k, v)
	}
	return b
}

// headerParam is the CGI variable of a request header: HTTP_ and the name
// upper-cased with "-" as "_". Content-Type and Content-Length have their
// own variables. Proxy is never passed: HTTP_PROXY is what CGI programs
// read as their outgoing proxy (httpoxy, CVE-2016-5385). A name with "_"
// is dropped, as nginx does by default: X-Real_IP would otherwise reach
// the script as the same variable as X-Real-IP.
func headerParam(k string) (string, bool) {
	switch k {
	case "Content-Type", "Content-Length", "Proxy":
		return "", false
	}
	if strings.IndexByte(k, '_') >= 0 {
		return "", false
	}
	b := make([]byte, 0, 5+len(k))
	b = append(b, "HTTP_"...)
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '-':
			c = '_'
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		}
		b = append(b, c)
	}
	return string(b), true
}

func protocol(req *http.Request) string {
	if req.Proto == "" {
		return "HTTP/1.1"
	}
	return req.Proto
}

// withScript stores the resolved script in ctx for the Transport.
func withScript(ctx context.Context, s script) context.Context {
	return context.WithValue(ctx, scriptKey{}, s)
}

func scriptFrom(ctx context.Context) (script, bool) {
	s, ok := ctx.Value(scriptKey{}).(script)
	return s, ok
}
