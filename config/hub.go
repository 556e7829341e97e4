package config

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Hub is the embedded broadcast hub on a route (protocol v1).
type Hub struct {
	// Channels restricts which channel names clients may subscribe to, as
	// patterns with "*" (matching any run of characters). Default: any.
	Channels []string `yaml:"channels"`
	// Origins allowed to connect ("https://dash.example.com"; "*" for any).
	// Default: the site's own hosts over http and https.
	Origins []string `yaml:"origins"`
	// Auth decides who may connect, before the upgrade.
	Auth HubAuth `yaml:"auth"`
	// Raw sends bare payloads instead of {"channel","seq","data"}.
	Raw bool `yaml:"raw"`
	// RawHeartbeat answers a raw route's literal text ping (what page
	// scripts written for hand-made Swoole servers send every few seconds)
	// with a literal pong. Only with raw: true.
	RawHeartbeat *RawHeartbeat `yaml:"raw_heartbeat"`
	// PingInterval is how often the server sends ping frames. Default 25s.
	PingInterval time.Duration `yaml:"ping_interval"`
	// IdleTimeout closes a connection that sent no frame and no pong for
	// this long. Default 60s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxMessageSize is the largest client message; larger closes with 1009.
	// Default 64KiB.
	MaxMessageSize ByteSize `yaml:"max_message_size"`
	// QueueSize is the number of messages queued per client before the
	// client is dropped as slow (close 1013). Default 256.
	QueueSize int `yaml:"queue_size"`
	// MaxSubscriptions per connection. Default 64.
	MaxSubscriptions int `yaml:"max_subscriptions"`
	// PublishRate is how many publish messages per second one client may
	// send (burst of the same size). Default 10; 0 after setting
	// allow_publish means the default.
	PublishRate float64 `yaml:"publish_rate"`
	// AllowPublish lets clients publish (when their token also allows it).
	// Default false.
	AllowPublish bool `yaml:"allow_publish"`
	// MaxConnectionsPerIP caps hub connections per client address. 0: no cap.
	MaxConnectionsPerIP int `yaml:"max_connections_per_ip"`
	// History keeps recent messages per channel for recovery with since.
	History HubHistory `yaml:"history"`
	// PresenceSubs lists connected subjects (token sub) per channel in
	// presence. Default false.
	PresenceSubs bool `yaml:"presence_subs"`
	// PublishProxy puts the application in the loop of client publishes:
	// each one is POSTed to it first, and it lets it through, replaces its
	// data, keeps it from the channel or refuses it (hub/PROTOCOL.md).
	PublishProxy *HubProxy `yaml:"publish_proxy"`
	// SubscribeProxy asks the application before a client subscribes to a
	// channel matching its channels: 2xx allows.
	SubscribeProxy *HubSubscribeProxy `yaml:"subscribe_proxy"`
}

// HubProxy is an application endpoint the hub asks.
type HubProxy struct {
	// URL receives a POST with a JSON body.
	URL string `yaml:"url"`
	// Timeout bounds each request; past it the client's request is
	// refused as unavailable. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
}

// HubSubscribeProxy is the application endpoint that allows
// subscriptions.
type HubSubscribeProxy struct {
	// URL receives a POST with a JSON body.
	URL string `yaml:"url"`
	// Timeout bounds each request; past it the subscription is refused as
	// unavailable. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// Channels are the patterns whose subscriptions are asked about (with
	// {sub} and *). Default: every channel.
	Channels []string `yaml:"channels"`
	// Cache keeps each answer (allowed or refused; not failures) for this
	// long per user and channel. Default 0: ask every time.
	Cache time.Duration `yaml:"cache"`
}

// HubAuth selects how hub clients are authorised.
type HubAuth struct {
	// Mode is none (default), jwt or request.
	Mode string `yaml:"mode"`
	// SecretFile holds the HS256 secret (jwt mode).
	SecretFile string `yaml:"secret_file"`
	// PublicKeyFile holds a PEM RS256 or ES256 public key (jwt mode).
	PublicKeyFile string `yaml:"public_key_file"`
	// URL receives the upgrade's cookies and Authorization (request mode),
	// as nginx auth_request: 2xx allows, 401 refuses with 401, other
	// statuses with 403, and an unreachable or failing (5xx) backend gives
	// 503. The answer may carry X-Edge-Sub (the user, for presence) and
	// X-Edge-Publish: true (may publish, with allow_publish).
	URL string `yaml:"url"`
	// ChannelsHeader is a response header of the auth URL listing allowed
	// channels, comma-separated. Default "X-Edge-Channels".
	ChannelsHeader string `yaml:"channels_header"`
	// Timeout of the auth request. Default 5s.
	Timeout time.Duration `yaml:"timeout"`
	// QueryParam carrying the token. Default "token".
	QueryParam string `yaml:"query_param"`
	// Cookie carrying the token. Default "edge_token".
	Cookie string `yaml:"cookie"`
}

// HubHistory bounds the per-channel history.
type HubHistory struct {
	// Size is the number of messages kept per channel. Default 100; 0 keeps
	// none (then since always yields a gap when something was missed).
	Size *int `yaml:"size"`
	// TTL drops messages older than this. Default 5m.
	TTL time.Duration `yaml:"ttl"`
	// MaxBytes bounds the history of every channel of the node together
	// (payloads and their frames): past it the oldest messages across
	// channels are dropped first, and a client asking since one of them
	// gets a gap. It is node-wide: the node keeps the largest value of its
	// hub routes. Default 64MiB (DefaultHubHistoryMaxBytes); 0 means the
	// default.
	MaxBytes ByteSize `yaml:"max_bytes"`
}

// DefaultHubHistoryMaxBytes is hub.history.max_bytes when not set: 600
// channels of 100 messages of 1 KiB fit, 600 × 60 KB (92 MB) do not.
const DefaultHubHistoryMaxBytes = 64 << 20

// MaxChannelLen is the longest hub channel name or pattern.
const MaxChannelLen = 128

// ValidChannel reports whether name is a valid hub channel name: 1 to
// MaxChannelLen characters among letters, digits and _ . : / -
// (hub/PROTOCOL.md §1, "Channel names"). The hub checks names with it,
// and channel patterns here follow the same rule plus "*".
func ValidChannel(name string) bool { return validChannelChars(name, false) }

// ValidChannelPattern reports whether p is a valid channel pattern: a
// channel name that may also contain "*" and "{sub}" (the connection's
// token subject: "user:{sub}" is one channel per user, allowed to that
// user only).
func ValidChannelPattern(p string) bool {
	return validChannelChars(strings.ReplaceAll(p, SubPlaceholder, "s"), true)
}

// SubPlaceholder stands for the token's sub in a channel pattern.
const SubPlaceholder = "{sub}"

func validChannelChars(s string, star bool) bool {
	if len(s) == 0 || len(s) > MaxChannelLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '_' || c == '.' || c == ':' || c == '/' || c == '-' || star && c == '*'
		if !ok {
			return false
		}
	}
	return true
}

// RawHeartbeat is a text heartbeat for legacy raw clients.
type RawHeartbeat struct {
	// Ping is the client's message, compared exactly. Default "ping".
	Ping string `yaml:"ping"`
	// Pong is the answer. Default "pong".
	Pong string `yaml:"pong"`
}

func (v *validator) hub(hp string, h *Hub) {
	if h.RawHeartbeat != nil && !h.Raw {
		v.errf(hp+".raw_heartbeat", "raw_heartbeat needs raw: true (protocol clients send {\"type\":\"ping\"})")
	}
	for i, ch := range h.Channels {
		if !ValidChannelPattern(ch) {
			v.errf(fmt.Sprintf("%s.channels[%d]", hp, i), "invalid channel pattern %q (letters, digits, _ . : / - and *)", ch)
		}
	}
	for i, o := range h.Origins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || (u.Path != "" && u.Path != "/") {
			v.errf(fmt.Sprintf("%s.origins[%d]", hp, i), "invalid origin %q: want scheme://host[:port] or *", o)
		}
	}
	a := &h.Auth
	switch a.Mode {
	case "none":
	case "jwt":
		switch {
		case (a.SecretFile == "") == (a.PublicKeyFile == ""):
			v.errf(hp+".auth", "jwt needs exactly one of secret_file or public_key_file")
		case a.SecretFile != "":
			v.jwtSecret(hp+".auth.secret_file", a.SecretFile)
		default:
			v.jwtPublicKey(hp+".auth.public_key_file", a.PublicKeyFile)
		}
	case "request":
		if a.URL == "" {
			v.errf(hp+".auth.url", "request auth needs a url")
		} else {
			v.httpURL(hp+".auth.url", a.URL)
		}
	default:
		v.errf(hp+".auth.mode", "%q is not one of none, jwt, request", a.Mode)
	}
	if h.MaxMessageSize < 128 {
		v.errf(hp+".max_message_size", "must be at least 128 bytes")
	}
	if h.QueueSize < 1 {
		v.errf(hp+".queue_size", "must be at least 1")
	}
	if h.MaxSubscriptions < 1 {
		v.errf(hp+".max_subscriptions", "must be at least 1")
	}
	if h.PublishRate < 0 {
		v.errf(hp+".publish_rate", "must not be negative")
	}
	if h.MaxConnectionsPerIP < 0 {
		v.errf(hp+".max_connections_per_ip", "must not be negative")
	}
	if a.Mode == "request" && a.ChannelsHeader != "" && !httpguts.ValidHeaderFieldName(a.ChannelsHeader) {
		v.errf(hp+".auth.channels_header", "invalid header name %q", a.ChannelsHeader)
	}
	if h.PingInterval >= h.IdleTimeout {
		v.errf(hp+".ping_interval", "ping_interval %s must be shorter than idle_timeout %s", h.PingInterval, h.IdleTimeout)
	}
	if *h.History.Size < 0 {
		v.errf(hp+".history.size", "must not be negative")
	}
	if p := h.PublishProxy; p != nil {
		v.hubProxy(hp+".publish_proxy", p)
		if !h.AllowPublish {
			v.warnf(hp+".publish_proxy", "has no effect without allow_publish: true")
		}
	}
	if p := h.SubscribeProxy; p != nil {
		v.hubProxy(hp+".subscribe_proxy", &HubProxy{URL: p.URL, Timeout: p.Timeout})
		for i, ch := range p.Channels {
			if !ValidChannelPattern(ch) {
				v.errf(fmt.Sprintf("%s.subscribe_proxy.channels[%d]", hp, i), "invalid channel pattern %q (letters, digits, _ . : / - and *)", ch)
			}
		}
		if p.Cache < 0 {
			v.errf(hp+".subscribe_proxy.cache", "must not be negative")
		}
	}
}

func (v *validator) hubProxy(path string, p *HubProxy) {
	if p.URL == "" {
		v.errf(path+".url", "a url is required")
	} else {
		v.httpURL(path+".url", p.URL)
	}
	if p.Timeout < 0 {
		v.errf(path+".timeout", "must not be negative")
	}
}

func (h *Hub) defaults(c *Config) {
	if h.RawHeartbeat != nil {
		setStr(&h.RawHeartbeat.Ping, "ping")
		setStr(&h.RawHeartbeat.Pong, "pong")
	}
	setDur(&h.PingInterval, 25*time.Second)
	setDur(&h.IdleTimeout, 60*time.Second)
	setSize(&h.MaxMessageSize, 64<<10)
	if h.QueueSize == 0 {
		h.QueueSize = 256
	}
	if h.MaxSubscriptions == 0 {
		h.MaxSubscriptions = 64
	}
	if h.PublishRate == 0 {
		h.PublishRate = 10
	}
	a := &h.Auth
	setStr(&a.Mode, "none")
	a.SecretFile, a.PublicKeyFile = c.resolve(a.SecretFile), c.resolve(a.PublicKeyFile)
	setStr(&a.ChannelsHeader, "X-Edge-Channels")
	setDur(&a.Timeout, 5*time.Second)
	setStr(&a.QueryParam, "token")
	setStr(&a.Cookie, "edge_token")
	if h.PublishProxy != nil {
		setDur(&h.PublishProxy.Timeout, 5*time.Second)
	}
	if h.SubscribeProxy != nil {
		setDur(&h.SubscribeProxy.Timeout, 5*time.Second)
	}
	setInt(&h.History.Size, 100)
	setDur(&h.History.TTL, 5*time.Minute)
	setSize(&h.History.MaxBytes, DefaultHubHistoryMaxBytes)
}

// jwtSecret checks an HS256 secret file: readable and not empty; a short
// secret is a warning (RFC 7518 §3.2 wants at least 256 bits).
func (v *validator) jwtSecret(path, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		v.errf(path, "cannot read %s: %v", file, unwrapPathErr(err))
		return
	}
	switch n := len(bytes.TrimSpace(data)); {
	case n == 0:
		v.errf(path, "%s is empty", file)
	case n < 32:
		v.warnf(path, "the secret in %s is %d bytes; HS256 wants at least 32", file, n)
	}
}

// jwtPublicKey checks that file holds a PEM RSA public key (RS256) or
// ECDSA P-256 public key (ES256), bare or in a certificate.
func (v *validator) jwtPublicKey(path, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		v.errf(path, "cannot read %s: %v", file, unwrapPathErr(err))
		return
	}
	block, _ := pem.Decode(data)
	if block == nil {
		v.errf(path, "%s holds no PEM block", file)
		return
	}
	var pub any
	switch block.Type {
	case "CERTIFICATE":
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			pub = cert.PublicKey
		}
	case "RSA PUBLIC KEY":
		if k, err := x509.ParsePKCS1PublicKey(block.Bytes); err == nil {
			pub = k
		}
	default:
		pub, _ = x509.ParsePKIXPublicKey(block.Bytes)
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			v.errf(path, "%s: ES256 needs a P-256 key", file)
		}
	default:
		v.errf(path, "%s is not a PEM RSA or ECDSA public key (a %q block)", file, block.Type)
	}
}
