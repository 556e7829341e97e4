package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"edge/config"
)

// The application in the loop (PROTOCOL.md §3 "publish" and "subscribe"):
// with publish_proxy a client's publish is POSTed to the application
// before it is broadcast, and with subscribe_proxy a subscription to a
// matching channel needs the application's 2xx. Both run on the client's
// reader goroutine, so a client's messages are handled one after another:
// its publishes reach the channel in the order it sent them, however slow
// the application.

// Error codes of refusals by the application.
const (
	// errPublishRefused: the application answered 4xx; the message is its
	// reason.
	errPublishRefused = "publish_refused"
	// errUnavailable: the application could not be asked (unreachable,
	// timeout, 5xx) or answered something that is not the protocol.
	errUnavailable = "unavailable"
)

// backendBody is what the application receives.
type backendBody struct {
	Channel string          `json:"channel"`
	Data    json.RawMessage `json:"data,omitempty"`
	Sub     string          `json:"sub,omitempty"`
	// Claims are the token's claims (jwt auth), verbatim.
	Claims json.RawMessage `json:"claims,omitempty"`
	// Client is the client's address, by the one client identity
	// (server.trusted_proxies).
	Client    string `json:"client"`
	Conn      string `json:"conn,omitempty"`
	RequestID string `json:"request_id"`
}

// backend is one application endpoint of a route.
type backend struct {
	url     string
	timeout time.Duration
	client  *http.Client
	log     func(msg string, args ...any)
	// warned is set once a misbehaving answer was logged: a broken
	// application logs once per configuration, not once per message.
	warned atomic.Bool
}

func newBackend(url string, timeout time.Duration, tr http.RoundTripper, n *Node) *backend {
	return &backend{url: url, timeout: timeout, log: n.log.Warn, client: &http.Client{
		Transport: tr,
		Timeout:   timeout,
		// The answer is the verdict: a redirect is not followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// verdict is the application's answer, reduced.
type verdict struct {
	status int    // the HTTP status; 0 when there is none
	body   []byte // at most the limit asked for (plus one byte)
	err    error  // transport failure or timeout
}

// ask POSTs body and reads at most limit bytes of the answer.
func (b *backend) ask(body *backendBody, limit int) verdict {
	p, _ := json.Marshal(body) // strings and raw JSON checked before
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.url, bytes.NewReader(p))
	if err != nil {
		return verdict{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", body.RequestID)
	if body.Client != "" {
		req.Header.Set("X-Forwarded-For", body.Client)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return verdict{err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return verdict{status: resp.StatusCode, err: err}
	}
	return verdict{status: resp.StatusCode, body: data}
}

// warnOnce logs a misbehaving answer the first time only.
func (b *backend) warnOnce(msg string, args ...any) {
	if b.warned.CompareAndSwap(false, true) {
		b.log(msg, append(args, "url", b.url, "note", "logged once per configuration")...)
	}
}

// reason returns the one-line reason of a refusal: the answer's "reason"
// or "error" member when it is JSON, else its first line, at most 120
// bytes of printable UTF-8; the status text when empty.
func reason(v verdict) string {
	body := bytes.TrimSpace(v.body)
	var obj struct{ Reason, Error string }
	if json.Unmarshal(body, &obj) == nil {
		body = []byte(obj.Reason)
		if obj.Reason == "" {
			body = []byte(obj.Error)
		}
	}
	line, _, _ := bytes.Cut(body, []byte("\n"))
	s := strings.TrimSpace(strings.ToValidUTF8(string(line), ""))
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 120 {
		s = s[:120]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
	}
	if s == "" {
		s = strings.ToLower(http.StatusText(v.status))
	}
	return s
}

// publishOutcome is what a publish proxy decided.
type publishOutcome struct {
	data      []byte // the payload to broadcast
	broadcast bool   // false: accepted, not broadcast (a command)
	code, msg string // an error reply when code is set
}

// publish asks the application about a client's publish.
func (b *backend) publish(g *grant, ip, conn, channel string, data []byte, maxMessage int) publishOutcome {
	v := b.ask(&backendBody{Channel: channel, Data: data, Sub: g.sub, Claims: g.claims,
		Client: ip, Conn: conn, RequestID: randomHex(8)}, maxMessage+4096)
	switch {
	case v.err != nil && v.status == 0:
		if errors.Is(v.err, context.DeadlineExceeded) || strings.Contains(v.err.Error(), "Client.Timeout") {
			return publishOutcome{code: errUnavailable, msg: "publish backend timed out"}
		}
		return publishOutcome{code: errUnavailable, msg: "publish backend unavailable"}
	case v.status >= 400 && v.status < 500:
		return publishOutcome{code: errPublishRefused, msg: reason(v)}
	case v.status < 200 || v.status > 299 || v.err != nil:
		return publishOutcome{code: errUnavailable, msg: "publish backend unavailable"}
	}
	if len(v.body) > maxMessage+4096 {
		b.warnOnce("hub publish_proxy answer too large: refused", "limit", maxMessage)
		return publishOutcome{code: errUnavailable, msg: "publish backend answer too large"}
	}
	body := bytes.TrimSpace(v.body)
	if len(body) == 0 {
		return publishOutcome{data: data, broadcast: true}
	}
	var ans struct {
		Data      json.RawMessage `json:"data"`
		Broadcast *bool           `json:"broadcast"`
	}
	if body[0] != '{' || json.Unmarshal(body, &ans) != nil {
		b.warnOnce("hub publish_proxy answered 2xx with a body that is not a JSON object: refused", "body", truncate(body, 80))
		return publishOutcome{code: errUnavailable, msg: "publish backend answered invalid JSON"}
	}
	out := publishOutcome{data: data, broadcast: ans.Broadcast == nil || *ans.Broadcast}
	if len(ans.Data) > 0 && string(ans.Data) != "null" {
		out.data = ans.Data
	}
	if len(out.data) > maxMessage {
		b.warnOnce("hub publish_proxy replacement is larger than max_message_size: refused", "size", len(out.data), "limit", maxMessage)
		return publishOutcome{code: errUnavailable, msg: "publish backend answer too large"}
	}
	return out
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return string(b)
}

// subscribeProxy asks the application about subscriptions, with a cache
// of its answers per user and channel.
type subscribeProxy struct {
	*backend
	channels []string // patterns asked about; nil: every channel
	ttl      time.Duration

	mu    sync.Mutex
	cache map[string]cachedAnswer // guarded by mu
}

type cachedAnswer struct {
	refusal string // "" when allowed
	until   time.Time
}

// maxCachedAnswers bounds the cache: past it, expired answers are dropped,
// and if none were, all of them.
const maxCachedAnswers = 10000

func newSubscribeProxy(p *config.HubSubscribeProxy, tr http.RoundTripper, n *Node) *subscribeProxy {
	return &subscribeProxy{backend: newBackend(p.URL, p.Timeout, tr, n), channels: p.Channels, ttl: p.Cache,
		cache: map[string]cachedAnswer{}}
}

// check returns "" when g may subscribe to channel, else the error code
// (errForbidden or errUnavailable) and the reason.
func (sp *subscribeProxy) check(g *grant, ip, conn, channel string) (code, msg string) {
	if sp == nil || (len(sp.channels) > 0 && !matchAny(sp.channels, channel, g.sub)) {
		return "", ""
	}
	// Answers are cached per user; without a sub there is no user to
	// key them by.
	key := ""
	if sp.ttl > 0 && g.sub != "" {
		key = g.sub + "\x00" + channel
		sp.mu.Lock()
		a, ok := sp.cache[key]
		sp.mu.Unlock()
		if ok && time.Now().Before(a.until) {
			if a.refusal != "" {
				return errForbidden, a.refusal
			}
			return "", ""
		}
	}
	v := sp.ask(&backendBody{Channel: channel, Sub: g.sub, Claims: g.claims, Client: ip, Conn: conn,
		RequestID: randomHex(8)}, 4096)
	switch {
	case v.status >= 200 && v.status <= 299 && v.err == nil:
		sp.remember(key, "")
		return "", ""
	case v.status >= 400 && v.status < 500:
		r := reason(v)
		sp.remember(key, r)
		return errForbidden, r
	}
	return errUnavailable, "subscribe backend unavailable"
}

func (sp *subscribeProxy) remember(key, refusal string) {
	if key == "" {
		return
	}
	now := time.Now()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.cache) >= maxCachedAnswers {
		for k, a := range sp.cache {
			if now.After(a.until) {
				delete(sp.cache, k)
			}
		}
		if len(sp.cache) >= maxCachedAnswers {
			clear(sp.cache)
		}
	}
	sp.cache[key] = cachedAnswer{refusal: refusal, until: now.Add(sp.ttl)}
}
