package hub

import (
	"encoding/json"
	"net/http"
	"time"

	"edge/internal/wsframe"
)

// Token refresh (PROTOCOL.md §3 refresh): a long-lived connection sends a
// new token before its token's exp, and keeps going. The new token is
// checked by the route's current auth settings, exactly as at connect, and
// must name the same sub: a connection never changes hands.

// errRefreshFailed is the error code of a refresh whose token is refused
// (invalid, expired, or the auth backend said no); the connection keeps
// its current token and closes at its exp.
const errRefreshFailed = "refresh_failed"

// refreshedMsg confirms a refresh.
type refreshedMsg struct {
	Type string          `json:"type"`
	Exp  int64           `json:"exp,omitempty"`
	ID   json.RawMessage `json:"id,omitempty"`
}

// refreshMsg handles {"type":"refresh","token":…}, on the reader
// goroutine.
func (c *client) refreshMsg(m *inbound) {
	cfg := c.route.config()
	if _, none := cfg.auth.(noAuth); none {
		c.replyError(m.ID, "", errBadRequest, "this route does not use tokens")
		return
	}
	if m.Token == "" {
		c.replyError(m.ID, "", errBadRequest, "refresh needs a token")
		return
	}
	// The token goes through the same authenticator as an upgrade's,
	// as a bearer token: what it accepts at connect it accepts here.
	r, _ := http.NewRequest(http.MethodGet, c.route.path, nil) // constant method, clean path: cannot fail
	r.Header.Set("Authorization", "Bearer "+m.Token)
	g, ref := cfg.auth.authenticate(r)
	if ref != nil {
		c.replyError(m.ID, "", errRefreshFailed, ref.reason)
		return
	}
	if g.sub != c.grant.sub {
		c.closeWith(wsframe.ClosePolicy, "refresh token for another sub")
		return
	}
	g = cfg.keep(g)
	// Swap the grant, and leave what the new token no longer allows (the
	// subscribe proxy is asked again; when it cannot answer, the
	// subscription stays: an outage of the application is not a refusal).
	c.subsMu.Lock()
	names := make([]string, len(c.subs))
	for i, ch := range c.subs {
		names[i] = ch.name
	}
	c.subsMu.Unlock()
	refused := map[string]bool{}
	for _, name := range names {
		if code, _ := cfg.subProxy.check(g, c.ip, c.n.connID(c), name); code == errForbidden {
			refused[name] = true
		}
	}
	var lost []string
	c.subsMu.Lock()
	c.grant = g
	kept := c.subs[:0]
	for _, ch := range c.subs {
		if cfg.allowed(g, ch.name) && !refused[ch.name] {
			kept = append(kept, ch)
			continue
		}
		ch.unsubscribe(c)
		lost = append(lost, ch.name)
	}
	clear(c.subs[len(kept):])
	c.subs = kept
	c.subsMu.Unlock()
	for _, name := range lost {
		c.send(controlFrame(unsubscribedMsg{Type: "unsubscribed", Channel: name, Reason: "forbidden"}), true)
	}

	c.mu.Lock()
	if c.state == stateOpen {
		if c.expiry != nil {
			c.expiry.Stop()
			c.expiry = nil
		}
		if g.exp != 0 {
			c.expiry = time.AfterFunc(time.Until(time.Unix(g.exp, 0)), c.onExpiry)
		}
	}
	c.mu.Unlock()
	c.send(controlFrame(refreshedMsg{Type: "refreshed", Exp: g.exp, ID: m.ID}), true)
}
