package hub

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"edge/config"
	"edge/internal/clientip"
)

// grant is what an authorised connection may do. Immutable.
type grant struct {
	sub string
	exp int64 // unix seconds; 0: no expiry
	// channels restricts subscriptions to these patterns; nil: only the
	// route's channels apply.
	channels []string
	// publishAll allows publishing wherever subscribing is allowed;
	// otherwise publish lists the patterns one may publish to (nil: none).
	publishAll bool
	publish    []string
	// claims is the JWT's payload, for the application's publish and
	// subscribe proxies; nil without them.
	claims json.RawMessage
}

func (g *grant) mayPublish(channel string) bool {
	return g.publishAll || matchAny(g.publish, channel, g.sub)
}

// refusal is an authorisation failure: the HTTP status and a one-line
// reason the client sees.
type refusal struct {
	status int
	reason string
}

func (r *refusal) Error() string { return r.reason }

func refuse401(reason string) *refusal { return &refusal{http.StatusUnauthorized, reason} }
func refuse403(reason string) *refusal { return &refusal{http.StatusForbidden, reason} }

// authenticator decides, before the upgrade, whether a request may
// connect and what it may do.
type authenticator interface {
	authenticate(r *http.Request) (*grant, *refusal)
}

// newAuthenticator builds the authenticator of a route's auth settings,
// reading key files now so that a bad file fails the build, not a client.
// Request mode sends its requests through tr, the node's one auth
// transport.
func newAuthenticator(a *config.HubAuth, tr *http.Transport) (authenticator, error) {
	switch a.Mode {
	case "none":
		return noAuth{}, nil
	case "jwt":
		return newJWTAuth(a)
	case "request":
		return newRequestAuth(a, tr), nil
	}
	return nil, fmt.Errorf("unknown auth mode %q", a.Mode)
}

type noAuth struct{}

func (noAuth) authenticate(*http.Request) (*grant, *refusal) {
	return &grant{publishAll: true}, nil
}

// bearerProtocol prefixes a token offered as a WebSocket subprotocol
// ("bearer.<token>"): browsers cannot set headers on a WebSocket, but they
// can offer subprotocols. The server never echoes it; it selects "edge.v1".
const bearerProtocol = "bearer."

// tokenOf finds the client's token: query parameter, Authorization
// bearer, Sec-WebSocket-Protocol, then cookie.
func tokenOf(r *http.Request, a *config.HubAuth) string {
	if t := r.URL.Query().Get(a.QueryParam); t != "" {
		return t
	}
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	for _, p := range websocketProtocols(r) {
		if t, ok := strings.CutPrefix(p, bearerProtocol); ok && t != "" {
			return t
		}
	}
	if ck, err := r.Cookie(a.Cookie); err == nil && ck.Value != "" {
		return ck.Value
	}
	return ""
}

func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// jwtAuth verifies HS256, RS256 or ES256 tokens.
type jwtAuth struct {
	cfg    *config.HubAuth
	key    any
	method string
}

// claims are the token claims the hub reads besides the registered ones.
type claims struct {
	jwt.RegisteredClaims
	// Channels are the patterns the holder may subscribe to.
	Channels []string `json:"channels"`
	// Publish is true (publish wherever subscribing is allowed) or a list
	// of channel patterns.
	Publish json.RawMessage `json:"publish"`
}

func newJWTAuth(a *config.HubAuth) (*jwtAuth, error) {
	j := &jwtAuth{cfg: a}
	if a.SecretFile != "" {
		secret, err := os.ReadFile(a.SecretFile)
		if err != nil {
			return nil, fmt.Errorf("jwt secret: %w", err)
		}
		secret = bytes.TrimSpace(secret)
		if len(secret) == 0 {
			return nil, fmt.Errorf("jwt secret file %s is empty", a.SecretFile)
		}
		j.key, j.method = secret, "HS256"
		return j, nil
	}
	key, method, err := loadJWTPublicKey(a.PublicKeyFile)
	if err != nil {
		return nil, err
	}
	j.key, j.method = key, method
	return j, nil
}

// loadJWTPublicKey reads a PEM public key (or certificate) and returns it
// with the JWT algorithm it verifies: RS256 for RSA, ES256 for ECDSA P-256.
func loadJWTPublicKey(file string) (any, string, error) {
	pemData, err := os.ReadFile(file)
	if err != nil {
		return nil, "", fmt.Errorf("jwt public key: %w", err)
	}
	if k, err := jwt.ParseRSAPublicKeyFromPEM(pemData); err == nil {
		return k, "RS256", nil
	}
	k, err := jwt.ParseECPublicKeyFromPEM(pemData)
	if err != nil {
		return nil, "", fmt.Errorf("jwt public key %s: not a PEM RSA or ECDSA public key", file)
	}
	if k.Curve != elliptic.P256() {
		return nil, "", fmt.Errorf("jwt public key %s: ES256 needs a P-256 key", file)
	}
	return k, "ES256", nil
}

func (j *jwtAuth) authenticate(r *http.Request) (*grant, *refusal) {
	tok := tokenOf(r, j.cfg)
	if tok == "" {
		return nil, refuse401("missing token")
	}
	var cl claims
	_, err := jwt.ParseWithClaims(tok, &cl, func(*jwt.Token) (any, error) { return j.key, nil },
		jwt.WithValidMethods([]string{j.method}), jwt.WithLeeway(5*time.Second))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return nil, refuse401("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return nil, refuse401("token not valid yet")
	case err != nil:
		return nil, refuse401("invalid token")
	}
	// A token without a channels claim is restricted by the route only;
	// "channels": [] allows nothing.
	g := &grant{sub: cl.Subject, channels: cl.Channels, claims: payloadOf(tok)}
	if cl.ExpiresAt != nil {
		g.exp = cl.ExpiresAt.Unix()
	}
	switch p := bytes.TrimSpace(cl.Publish); {
	case len(p) == 0 || string(p) == "false" || string(p) == "null":
	case string(p) == "true":
		g.publishAll = true
	default:
		if err := json.Unmarshal(p, &g.publish); err != nil {
			return nil, refuse401("invalid token: publish must be true or a list of channel patterns")
		}
	}
	return g, nil
}

// payloadOf returns a verified JWT's payload: its claims as JSON.
func payloadOf(tok string) json.RawMessage {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil
	}
	p, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil || !json.Valid(p) {
		return nil
	}
	return p
}

// requestAuth asks a backend, as nginx auth_request does: a GET carrying
// the upgrade's cookies and Authorization; 2xx allows.
type requestAuth struct {
	cfg    *config.HubAuth
	client *http.Client
}

// Headers of the auth backend's answer (request mode).
const (
	// HeaderSub names the subject (user id) of the connection, for
	// presence.
	HeaderSub = "X-Edge-Sub"
	// HeaderPublish, when "true", "1" or "yes" (any case, spaces
	// trimmed), lets the connection publish (with allow_publish on the
	// route).
	HeaderPublish = "X-Edge-Publish"
)

// newAuthTransport returns the transport of request-mode auth. It is the
// node's, not a route's: one built per route configuration would be built
// again at every reload, and the old one's idle connections would stay
// open until its idle timeout. Timeouts are the route's auth.timeout, on
// each request's context.
func newAuthTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{}).DialContext,
		MaxIdleConnsPerHost: 32,
		IdleConnTimeout:     90 * time.Second,
	}
}

func newRequestAuth(a *config.HubAuth, tr *http.Transport) *requestAuth {
	return &requestAuth{cfg: a, client: &http.Client{
		Transport: tr,
		Timeout:   a.Timeout,
		// The backend's answer is the verdict; a redirect (to a login page)
		// is a refusal, not something to follow.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (q *requestAuth) authenticate(r *http.Request) (*grant, *refusal) {
	ctx, cancel := context.WithTimeout(r.Context(), q.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, q.cfg.URL, nil)
	if err != nil {
		return nil, &refusal{http.StatusServiceUnavailable, "auth backend unavailable"}
	}
	for _, k := range []string{"Cookie", "Authorization", "User-Agent", "Origin"} {
		if v := r.Header.Values(k); len(v) > 0 {
			req.Header[k] = v
		}
	}
	if req.Header.Get("Authorization") == "" {
		// A browser cannot send Authorization on a WebSocket: pass a token
		// given in the query or a subprotocol on as a bearer.
		if t := tokenOf(r, q.cfg); t != "" {
			req.Header.Set("Authorization", "Bearer "+t)
		}
	}
	req.Header.Set("X-Original-URI", r.URL.RequestURI())
	req.Header.Set("X-Original-Method", r.Method)
	req.Header.Set("X-Forwarded-Host", r.Host)
	// The client as server.trusted_proxies resolve it, not a load
	// balancer in front of edge.
	if a := clientip.Of(r); a.IsValid() {
		req.Header.Set("X-Forwarded-For", a.String())
		req.Header.Set("X-Real-IP", a.String())
	}
	resp, err := q.client.Do(req)
	if err != nil {
		return nil, &refusal{http.StatusServiceUnavailable, "auth backend unavailable"}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, refuse401("unauthorized")
	case resp.StatusCode >= 500:
		return nil, &refusal{http.StatusServiceUnavailable, "auth backend unavailable"}
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, refuse403("forbidden")
	}
	g := &grant{sub: resp.Header.Get(HeaderSub)}
	if vs, ok := resp.Header[http.CanonicalHeaderKey(q.cfg.ChannelsHeader)]; ok {
		g.channels = []string{}
		for _, v := range vs {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					g.channels = append(g.channels, p)
				}
			}
		}
	}
	switch strings.ToLower(strings.TrimSpace(resp.Header.Get(HeaderPublish))) {
	case "1", "true", "yes":
		g.publishAll = true
	}
	return g, nil
}
