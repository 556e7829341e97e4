package server

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"edge/config"
)

// rewriteRule is a compiled config.Rewrite.
type rewriteRule struct {
	re       *regexp.Regexp
	to       string
	redirect int
}

func compileRewrites(rs []config.Rewrite) []rewriteRule {
	var out []rewriteRule
	for i := range rs {
		if re := rs[i].Compiled(); re != nil { // config.Parse checked it
			out = append(out, rewriteRule{re: re, to: rs[i].To, redirect: rs[i].Redirect})
		}
	}
	return out
}

// rewrite applies the first rule that matches path p. It returns the new
// path and query (query merged as nginx does: the rule's, then the
// request's, unless the rule's target ends with "?"), the redirect status
// (0: internal), and whether a rule matched.
func rewrite(rules []rewriteRule, p, query string) (newPath, newQuery string, redirect int, ok bool) {
	for _, rule := range rules {
		m := rule.re.FindStringSubmatchIndex(p)
		if m == nil {
			continue
		}
		target := string(rule.re.ExpandString(nil, rule.to, p, m))
		newPath, newQuery = target, query
		if before, after, has := strings.Cut(target, "?"); has {
			newPath = before
			switch {
			case after == "" || query == "":
				newQuery = after
			default:
				newQuery = after + "&" + query
			}
		}
		return newPath, newQuery, rule.redirect, true
	}
	return "", "", 0, false
}

// rewriteRedirect answers a rewrite rule's redirect.
type rewriteRedirect struct {
	target, query string
	code          int
}

func (rr rewriteRedirect) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	loc := rr.target
	if strings.HasPrefix(loc, "/") {
		loc = (&url.URL{Path: loc}).EscapedPath()
	}
	if rr.query != "" {
		loc += "?" + rr.query
	}
	h := w.Header()
	h.Set("Location", strings.NewReplacer("\r", "", "\n", "").Replace(loc))
	h.Set("Content-Length", "0")
	w.WriteHeader(rr.code)
}
