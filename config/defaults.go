package config

import (
	"time"
)

// Defaults are written once, in this package and nowhere else: the
// top-level and server ones here, each block's own in its file's defaults
// method (Static.defaults, Proxy.defaults, Hub.defaults, TLS.defaults),
// all applied by applyDefaults. Handler packages take a defaulted
// configuration and refuse one that is not. Field comments and
// config.example.yaml name the same values.
const (
	DefaultHTTP              = ":80"
	DefaultHTTPS             = ":443"
	DefaultAdmin             = "127.0.0.1:9180"
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 75 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodySize       = 1 << 20
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultClientBodyTimeout = 60 * time.Second
	// DefaultProxyProtocolTimeout bounds the wait for a PROXY header.
	DefaultProxyProtocolTimeout = 5 * time.Second
	// DefaultMaxRequestsPerConnection is nginx's keepalive_requests.
	DefaultMaxRequestsPerConnection = 1000
	DefaultCacheControl             = "public, max-age=3600"
	ImmutableCacheControl           = "public, max-age=31536000, immutable"
)

// written reports whether the key path appears in the file.
func (c *Config) written(path string) bool {
	_, ok := c.pos[path]
	return ok
}

func (c *Config) applyDefaults() {
	if !c.written("listen.http") {
		c.Listen.HTTP = DefaultHTTP
	}
	if !c.written("listen.https") && c.needsHTTPS() {
		c.Listen.HTTPS = DefaultHTTPS
	}
	if pp := c.Listen.ProxyProtocol; pp != nil {
		setDur(&pp.Timeout, DefaultProxyProtocolTimeout)
		setBool(&pp.Required, true)
	}
	if !c.written("admin") {
		c.Admin = DefaultAdmin
	}
	c.AdminKeyFile = c.resolve(c.AdminKeyFile)
	s := &c.Server
	setDur(&s.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDur(&s.IdleTimeout, DefaultIdleTimeout)
	setSize(&s.MaxHeaderBytes, DefaultMaxHeaderBytes)
	if !c.written("server.max_body_size") {
		s.MaxBodySize = DefaultMaxBodySize
	}
	setDur(&s.ShutdownTimeout, DefaultShutdownTimeout)
	setDur(&s.ClientBodyTimeout, DefaultClientBodyTimeout)
	if !c.written("server.max_requests_per_connection") {
		s.MaxRequestsPerConnection = DefaultMaxRequestsPerConnection
	}
	setStr(&c.Log.Level, "info")
	setStr(&c.Log.Format, "text")
	c.TLS.defaults(c)
	if c.Redis != nil && c.Redis.Sentinel != nil {
		c.Redis.Sentinel.PasswordFile = c.resolve(c.Redis.Sentinel.PasswordFile)
	}
	if c.Redis != nil && !c.written("redis.prefix") {
		c.Redis.Prefix = "edge:"
	}
	for i := range c.Sites {
		site := &c.Sites[i]
		if site.TLS != nil {
			site.TLS.Cert, site.TLS.Key = c.resolve(site.TLS.Cert), c.resolve(site.TLS.Key)
		}
		if site.AccessLog != nil {
			setStr(&site.AccessLog.Format, "combined")
			if site.AccessLog.File != "stderr" {
				site.AccessLog.File = c.resolve(site.AccessLog.File)
			}
		}
		if site.BasicAuth != nil {
			site.BasicAuth.defaults(c)
		}
		for j := range site.Routes {
			r := &site.Routes[j]
			if r.BasicAuth != nil {
				r.BasicAuth.defaults(c)
			}
			if r.Limit != nil {
				r.Limit.defaults()
			}
			if r.MaxBodySize == nil {
				r.MaxBodySize = &s.MaxBodySize
			}
			if r.Static != nil {
				r.Static.defaults(c)
			}
			if r.Proxy != nil {
				r.Proxy.defaults(c)
			}
			if r.Hub != nil {
				r.Hub.defaults(c)
			}
			if r.FastCGI != nil {
				r.FastCGI.defaults(c)
			}
			if r.Redirect != nil {
				r.Redirect.defaults()
			}
			if r.Respond != nil {
				r.Respond.defaults()
			}
		}
	}
}

// needsHTTPS reports whether anything in the file asks for TLS.
func (c *Config) needsHTTPS() bool {
	if c.TLS.CA == "internal" || c.TLS.OnDemand != nil {
		return true
	}
	for _, s := range c.Sites {
		if s.TLS != nil {
			return true
		}
		for _, h := range s.Hosts {
			if isPublicName(h) {
				return true
			}
		}
	}
	return false
}

func setDur(d *time.Duration, v time.Duration) {
	if *d == 0 {
		*d = v
	}
}

func setSize(b *ByteSize, v ByteSize) {
	if *b == 0 {
		*b = v
	}
}

func setStr(s *string, v string) {
	if *s == "" {
		*s = v
	}
}

func setBool(b **bool, v bool) {
	if *b == nil {
		*b = &v
	}
}

func setInt(i **int, v int) {
	if *i == nil {
		*i = &v
	}
}
