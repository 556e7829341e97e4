package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Rewrite changes a request's path before its route handles it: nginx's
// `rewrite REGEX REPLACEMENT [last|permanent|redirect]`. The first rule of
// a route whose Match matches the path applies.
type Rewrite struct {
	// Match is an RE2 regular expression on the path (normalised, not
	// decoded further), e.g. '^/old/(.*)$'.
	Match string `yaml:"match"`
	// To replaces the path: $1, ${name}… are Match's groups. It may carry
	// a query ("/item.php?id=$1"); the request's own query is kept after
	// it, as nginx does.
	To string `yaml:"to"`
	// Redirect, when set (301, 302, 303, 307 or 308), answers with a
	// redirect to To instead. Without it the rewrite is internal: the
	// request continues with the new path through route matching once
	// (nginx's `last`); the route it lands on applies no rewrites of its
	// own, so rules cannot loop.
	Redirect int `yaml:"redirect"`
}

// Compiled returns Match compiled; config.Parse has checked it.
func (r *Rewrite) Compiled() *regexp.Regexp {
	re, _ := regexp.Compile(r.Match)
	return re
}

var groupRefRE = regexp.MustCompile(`\$(\d+|\{\w+\})`)

func (v *validator) rewrites(p string, rs []Rewrite) {
	for i := range rs {
		r := &rs[i]
		rp := fmt.Sprintf("%s[%d]", p, i)
		re, err := regexp.Compile(r.Match)
		if err != nil {
			v.errf(rp+".match", "invalid regular expression %q: %v", r.Match, err)
			continue
		}
		switch r.Redirect {
		case 0:
			if !strings.HasPrefix(r.To, "/") {
				v.errf(rp+".to", "an internal rewrite needs a path starting with / (got %q); set redirect for a URL", r.To)
			}
		case 301, 302, 303, 307, 308:
			if r.To == "" {
				v.errf(rp+".to", "a redirect needs a target")
			}
		default:
			v.errf(rp+".redirect", "redirect %d: want 301, 302, 303, 307 or 308", r.Redirect)
		}
		for _, m := range groupRefRE.FindAllStringSubmatch(r.To, -1) {
			ref := strings.Trim(m[1], "{}")
			var n int
			if _, err := fmt.Sscanf(ref, "%d", &n); err == nil && ref[0] >= '0' && ref[0] <= '9' {
				if n > re.NumSubexp() {
					v.errf(rp+".to", "$%d: match has %d groups", n, re.NumSubexp())
				}
			} else if re.SubexpIndex(ref) < 0 {
				v.errf(rp+".to", "${%s}: match has no group of that name", ref)
			}
		}
	}
}
