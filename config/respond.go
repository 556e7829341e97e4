package config

import (
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
)

// Redirect answers every request of its route with a redirect: nginx's
// `return 301 https://$host$request_uri`.
type Redirect struct {
	// To is where to: an absolute URL or a path. {host} (the request's
	// host, without port), {path} (its path, escaped as received),
	// {query} (its query, without "?") and {uri} (path and query) are
	// replaced. Required.
	To string `yaml:"to"`
	// Status is 301, 302, 303, 307 or 308. Default 308 (permanent, method
	// kept); 307 is the temporary one.
	Status int `yaml:"status"`
}

// Respond answers every request of its route with a fixed response:
// nginx's `return 200 "ok"` or `return 404`.
type Respond struct {
	// Status is the response status, 200–599. Default 200.
	Status int `yaml:"status"`
	// Body is sent as it is; empty sends none.
	Body string `yaml:"body"`
	// ContentType of Body. Default "text/plain; charset=utf-8".
	ContentType string `yaml:"content_type"`
}

// RedirectPlaceholders are the names Redirect.To may use in braces.
var RedirectPlaceholders = []string{"host", "path", "query", "uri"}

var placeholderRE = regexp.MustCompile(`\{([^{}]*)\}`)

// nginxVarRE finds nginx variables in a redirect target; nginxVars names
// the placeholder for the common ones.
var (
	nginxVarRE = regexp.MustCompile(`\$[a-z_]+`)
	nginxVars  = map[string]string{
		"$host": "{host}", "$server_name": "{host}", "$http_host": "{host}",
		"$request_uri": "{uri}", "$uri": "{path}", "$document_uri": "{path}",
		"$args": "{query}", "$query_string": "{query}",
	}
)

func (r *Redirect) defaults() {
	if r.Status == 0 {
		r.Status = http.StatusPermanentRedirect
	}
}

func (r *Respond) defaults() {
	if r.Status == 0 {
		r.Status = http.StatusOK
	}
	if r.ContentType == "" {
		r.ContentType = "text/plain; charset=utf-8"
	}
}

func (v *validator) redirect(p string, r *Redirect) {
	switch r.Status {
	case 0, 301, 302, 303, 307, 308:
	default:
		v.errf(p+".status", "redirect status %d: want 301, 302, 303, 307 or 308", r.Status)
	}
	if r.To == "" {
		v.errf(p+".to", "a redirect needs a target")
		return
	}
	// An nginx target pasted as it is would redirect to "$host" literally.
	if m := nginxVarRE.FindString(r.To); m != "" {
		hint := "use {host}, {path}, {query} or {uri}"
		if alt, ok := nginxVars[m]; ok {
			hint = "use " + alt
		}
		v.errf(p+".to", "nginx variable %s is not expanded here: %s", m, hint)
		return
	}
	// The target with every placeholder filled must be a URL.
	example := placeholderRE.ReplaceAllStringFunc(r.To, func(m string) string {
		name := m[1 : len(m)-1]
		for _, ok := range RedirectPlaceholders {
			if name == ok {
				return "x"
			}
		}
		v.errf(p+".to", "unknown placeholder %s: want {%s}", m, strings.Join(RedirectPlaceholders, "}, {"))
		return "x"
	})
	u, err := url.Parse(example)
	switch {
	case strings.ContainsAny(r.To, "\r\n"):
		v.errf(p+".to", "target must not contain line breaks")
	case err != nil:
		v.errf(p+".to", "invalid target %q: %v", r.To, err)
	case u.Scheme == "" && !strings.HasPrefix(example, "/"):
		v.errf(p+".to", "target %q: want an absolute URL (https://…) or a path starting with /", r.To)
	case u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https":
		v.errf(p+".to", "target %q: scheme %q, want http or https", r.To, u.Scheme)
	}
}

func (v *validator) respond(p string, r *Respond) {
	if r.Status != 0 && (r.Status < 200 || r.Status > 599) {
		v.errf(p+".status", "status %d: want 200–599", r.Status)
	}
	if r.Body != "" && (r.Status == 204 || r.Status == 304) {
		v.errf(p+".body", "status %d has no body", r.Status)
	}
	if r.ContentType != "" {
		if _, _, err := mime.ParseMediaType(r.ContentType); err != nil {
			v.errf(p+".content_type", "invalid media type %q: %v", r.ContentType, err)
		}
	}
}
