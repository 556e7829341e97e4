// Package access guards routes as nginx's allow/deny and auth_basic do:
// rules on the client's address (the one client identity, trusted proxies
// applied) answer 403, and an htpasswd user list (bcrypt only) answers 401.
package access

import (
	"crypto/sha256"
	"net/http"
	"sync"

	"golang.org/x/crypto/bcrypt"

	"edge/config"
	"edge/internal/clientip"
	"edge/internal/httperr"
)

// Guard wraps h with the route's access rules and basic auth, or the
// site's where the route has none of its own. It returns h when there is
// nothing to check. Both come from config.Parse (rules checked, users
// read).
func Guard(h http.Handler, site *config.Site, r *config.Route) http.Handler {
	rules, auth := r.Access, r.BasicAuth
	if len(rules) == 0 {
		rules = site.Access
	}
	if auth == nil {
		auth = site.BasicAuth
	}
	if len(rules) == 0 && auth == nil {
		return h
	}
	g := &guard{next: h, rules: rules.Rules()}
	if auth != nil {
		g.users = auth.Users
		g.challenge = []string{`Basic realm="` + auth.Realm + `", charset="UTF-8"`}
		g.verified = map[[32]byte]struct{}{}
	}
	return g
}

type guard struct {
	next  http.Handler
	rules []config.AccessRule

	users     map[string][]byte // nil: no basic auth
	challenge []string          // WWW-Authenticate
	mu        sync.Mutex
	verified  map[[32]byte]struct{} // digests of user and password pairs bcrypt accepted
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !g.allowed(r) {
		httperr.Error(w, http.StatusForbidden)
		return
	}
	if g.users != nil && !g.authorized(r) {
		w.Header()["Www-Authenticate"] = g.challenge
		httperr.Error(w, http.StatusUnauthorized)
		return
	}
	g.next.ServeHTTP(w, r)
}

// allowed applies the first rule that matches the client; none: allowed.
func (g *guard) allowed(r *http.Request) bool {
	if len(g.rules) == 0 {
		return true
	}
	a := clientip.Of(r)
	for _, rule := range g.rules {
		if rule.Matches(a) {
			return rule.Allow
		}
	}
	return true
}

// maxVerified bounds the cache of accepted credentials; it is emptied when
// full.
const maxVerified = 1024

// dummyHash is compared against when the user is unknown, so that unknown
// and known users take the same time (bcrypt cost 10, as htpasswd -B).
// Made at first use: it costs a bcrypt hash.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("edge: no such user"), 10)
	return h
})

// authorized checks the request's basic credentials. A pair bcrypt
// accepted once is remembered (by digest), so that a logged-in browser
// does not cost a bcrypt comparison (tens of milliseconds) per request.
func (g *guard) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return false
	}
	hash, known := g.users[user]
	if !known {
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(pass))
		return false
	}
	key := sha256.Sum256([]byte(user + "\x00" + pass + "\x00" + string(hash)))
	g.mu.Lock()
	_, seen := g.verified[key]
	g.mu.Unlock()
	if seen {
		return true
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(pass)) != nil {
		return false
	}
	g.mu.Lock()
	if len(g.verified) >= maxVerified {
		clear(g.verified)
	}
	g.verified[key] = struct{}{}
	g.mu.Unlock()
	return true
}
