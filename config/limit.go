package config

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
)

// Limit is a request rate and concurrency limit per key: nginx's
// limit_req and limit_conn. Requests over it get Status with Retry-After.
type Limit struct {
	// Rate is "N/s" or "N/m": the sustained requests per key. Empty: no
	// rate limit (connections only).
	Rate string `yaml:"rate"`
	// Burst is how many requests above the rate a key may send at once
	// (a token bucket of Burst+1). Default 0, as nginx without burst=.
	Burst int `yaml:"burst"`
	// Key is client_ip (default: the one client identity, trusted proxies
	// applied) or header:NAME (a request header's value; requests without
	// it share the empty key).
	Key string `yaml:"key"`
	// Status answers a refused request. Default 429.
	Status int `yaml:"status"`
	// Connections caps the requests a key has in progress at once (nginx
	// limit_conn); a proxied WebSocket counts until its upgrade is
	// answered. 0: no cap.
	Connections int `yaml:"connections"`
	// MaxKeys bounds memory: the least recently seen keys are forgotten
	// beyond it (about 200 bytes each). Default 100000.
	MaxKeys int `yaml:"max_keys"`
}

// DefaultLimitMaxKeys is Limit.MaxKeys's default.
const DefaultLimitMaxKeys = 100000

// PerSecond parses Rate; 0 when empty.
func (l *Limit) PerSecond() float64 {
	n, per, ok := strings.Cut(l.Rate, "/")
	if !ok {
		return 0
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(n), 64)
	if err != nil {
		return 0
	}
	switch strings.TrimSpace(per) {
	case "s":
		return v
	case "m":
		return v / 60
	}
	return 0
}

func (l *Limit) defaults() {
	setStr(&l.Key, "client_ip")
	if l.Status == 0 {
		l.Status = http.StatusTooManyRequests
	}
	if l.MaxKeys == 0 {
		l.MaxKeys = DefaultLimitMaxKeys
	}
}

func (v *validator) limit(p string, l *Limit) {
	if l.Rate != "" && l.PerSecond() <= 0 {
		v.errf(p+".rate", "rate %q: want N/s or N/m with N above 0, e.g. 10/s", l.Rate)
	}
	if l.Rate == "" && l.Connections == 0 {
		v.errf(p, "a limit needs a rate, connections or both")
	}
	if l.Burst < 0 {
		v.errf(p+".burst", "must not be negative")
	}
	if l.Connections < 0 {
		v.errf(p+".connections", "must not be negative")
	}
	if l.MaxKeys < 0 {
		v.errf(p+".max_keys", "must not be negative")
	}
	if l.Status != 0 && (l.Status < 400 || l.Status > 599) {
		v.errf(p+".status", "status %d: want 400–599 (429 or 503)", l.Status)
	}
	switch name, hasName := strings.CutPrefix(l.Key, "header:"); {
	case l.Key == "" || l.Key == "client_ip":
	case hasName && name != "":
	default:
		v.errf(p+".key", "%s", fmt.Sprintf("key %q: want client_ip or header:NAME", l.Key))
	}
}
