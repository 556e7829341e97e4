package config

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// parseProxy parses a one-site configuration with one proxy route whose
// "proxy:" value is body (YAML lines indented for it). "DIR" is replaced
// by a temporary directory. Line 7 of the file is the first line of body.
func parseProxy(t *testing.T, body string) (*Config, error) {
	t.Helper()
	dir := t.TempDir()
	body = strings.TrimPrefix(strings.ReplaceAll(body, "DIR", dir), "\n")
	y := "listen: {http: \"127.0.0.1:8080\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: /\n        proxy:\n" + body
	return Parse(filepath.Join(dir, "edge.yaml"), []byte(y))
}

func TestProxyDefaults(t *testing.T) {
	c, err := parseProxy(t, `
          upstreams: [http://127.0.0.1:9000, "https://app.internal:8443"]
`)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Sites[0].Routes[0].Proxy
	if p.Balance != "round_robin" || *p.MaxFails != 1 || p.FailTimeout != 10*time.Second {
		t.Errorf("balance %q max_fails %d fail_timeout %s", p.Balance, *p.MaxFails, p.FailTimeout)
	}
	if p.DialTimeout != 5*time.Second || p.TLSHandshakeTimeout != 5*time.Second || p.ResponseHeaderTimeout != 60*time.Second {
		t.Errorf("timeouts %s %s %s", p.DialTimeout, p.TLSHandshakeTimeout, p.ResponseHeaderTimeout)
	}
	if *p.TunnelIdleTimeout != time.Hour || *p.KeepAlive != 64 || *p.Retries != 1 || p.FlushInterval != 0 {
		t.Errorf("tunnel_idle_timeout %s keepalive %d retries %d flush_interval %s", *p.TunnelIdleTimeout, *p.KeepAlive, *p.Retries, p.FlushInterval)
	}
	if p.Host != "" || p.Forwarded || p.TLS != nil || p.HealthCheck != nil || p.AllowTrace {
		t.Errorf("host, forwarded, tls, health_check and allow_trace must be off by default")
	}
	if *p.RequestBuffering != 64<<10 || p.MaxConcurrentDials != 8 {
		t.Errorf("request_buffering %s max_concurrent_dials %d, want 64KiB 8", *p.RequestBuffering, p.MaxConcurrentDials)
	}
	for i, u := range p.Upstreams {
		if u.Weight != 1 || u.Backup || *u.MaxFails != 1 || u.FailTimeout != 10*time.Second {
			t.Errorf("upstreams[%d] = %+v", i, u)
		}
	}
}

// TestProxyCompressDefaults: proxy.compress has static's semantics: off
// without the block, on with static's defaults with an empty one, off
// with enabled: false.
func TestProxyCompressDefaults(t *testing.T) {
	c, err := parseProxy(t, `
          upstreams: [http://127.0.0.1:9000]
`)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Sites[0].Routes[0].Proxy; p.Compress != nil {
		t.Errorf("compress = %+v without a block, want nil (off)", p.Compress)
	}
	c, err = parseProxy(t, `
          upstreams: [http://127.0.0.1:9000]
          compress: {}
`)
	if err != nil {
		t.Fatal(err)
	}
	cp := c.Sites[0].Routes[0].Proxy.Compress
	if cp == nil || !*cp.Enabled || cp.MinSize != 1<<10 {
		t.Fatalf("compress {} = %+v, want enabled with min_size 1KiB", cp)
	}
	if strings.Join(cp.Encodings, ",") != "zstd,br,gzip" || cp.Types[0] != "text/*" || !slices.Contains(cp.Types, "application/json") {
		t.Errorf("compress encodings %q types %q", cp.Encodings, cp.Types)
	}
	c, err = parseProxy(t, `
          upstreams: [http://127.0.0.1:9000]
          compress: {enabled: false, min_size: 1MiB, types: [application/json], encodings: [gzip]}
`)
	if err != nil {
		t.Fatal(err)
	}
	cp = c.Sites[0].Routes[0].Proxy.Compress
	if *cp.Enabled || cp.MinSize != 1<<20 || len(cp.Types) != 1 || len(cp.Encodings) != 1 {
		t.Errorf("explicit compress = %+v", cp)
	}
}

func TestProxyExplicitValues(t *testing.T) {
	c, err := parseProxy(t, `
          upstreams:
            - http://10.0.0.1:9000
            - {url: "http://10.0.0.2:9000", weight: 3, max_fails: 0}
            - url: unix:/run/app.sock
              backup: true
              fail_timeout: 1m
          balance: ip_hash
          max_fails: 3
          fail_timeout: 30s
          health_check: {path: /healthz}
          tunnel_idle_timeout: "0"
          keepalive: 0
          retries: 0
          host: app.internal:8080
          forwarded: true
          flush_interval: 100ms
          request_buffering: 0
          allow_trace: true
          max_concurrent_dials: 2
`)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Sites[0].Routes[0].Proxy
	if p.Balance != "ip_hash" || *p.TunnelIdleTimeout != 0 || *p.KeepAlive != 0 || *p.Retries != 0 {
		t.Errorf("balance %q tunnel_idle_timeout %s keepalive %d retries %d", p.Balance, *p.TunnelIdleTimeout, *p.KeepAlive, *p.Retries)
	}
	if p.Host != "app.internal:8080" || !p.Forwarded || p.FlushInterval != 100*time.Millisecond {
		t.Errorf("host %q forwarded %v flush_interval %s", p.Host, p.Forwarded, p.FlushInterval)
	}
	if *p.RequestBuffering != 0 || !p.AllowTrace || p.MaxConcurrentDials != 2 {
		t.Errorf("request_buffering %s allow_trace %v max_concurrent_dials %d", *p.RequestBuffering, p.AllowTrace, p.MaxConcurrentDials)
	}
	u := p.Upstreams
	if u[0].Weight != 1 || *u[0].MaxFails != 3 || u[0].FailTimeout != 30*time.Second {
		t.Errorf("upstreams[0] inherits: %+v", u[0])
	}
	if u[1].Weight != 3 || *u[1].MaxFails != 0 {
		t.Errorf("upstreams[1] = %+v", u[1])
	}
	if !u[2].Backup || u[2].FailTimeout != time.Minute {
		t.Errorf("upstreams[2] = %+v", u[2])
	}
	hc := p.HealthCheck
	if hc.Path != "/healthz" || hc.Interval != 10*time.Second || hc.Timeout != 2*time.Second || hc.Status != 0 || hc.Fails != 1 || hc.Passes != 1 {
		t.Errorf("health_check = %+v", hc)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].String(), "socket /run/app.sock does not exist yet") {
		t.Errorf("warnings = %v", c.Warnings)
	}
}

func TestProxyUnixSocket(t *testing.T) {
	for _, tc := range []struct{ in, sock string }{
		{"unix:/run/app.sock", "/run/app.sock"},
		{"unix:///run/app.sock", "/run/app.sock"},
		{"unix:", ""},
	} {
		if sock, ok := UnixSocket(tc.in); !ok || sock != tc.sock {
			t.Errorf("UnixSocket(%q) = %q, %v; want %q", tc.in, sock, ok, tc.sock)
		}
	}
	if _, ok := UnixSocket("http://x"); ok {
		t.Error("UnixSocket(http://x) is a socket")
	}
}

func TestProxyErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       string // FILE:LINE:COL prefix is checked separately
		line       int
	}{
		{"unknown scheme", `
          upstreams: [ftp://127.0.0.1:21]`, `sites[0].routes[0].proxy.upstreams[0]: unknown scheme "ftp" in "ftp://127.0.0.1:21": want http://, https:// or unix:/path`, 7},
		{"missing socket path", `
          upstreams: ["unix:"]`, `sites[0].routes[0].proxy.upstreams[0]: unix upstream "unix:" needs an absolute socket path`, 7},
		{"relative socket path", `
          upstreams: ["unix:run/app.sock"]`, `needs an absolute socket path`, 7},
		{"socket path too long", `
          upstreams: ["unix:/` + strings.Repeat("s", 120) + `"]`, `is longer than 107 bytes`, 7},
		{"not a socket", `
          upstreams: ["unix:DIR"]`, `is not a socket`, 7},
		{"empty list", `
          upstreams: []`, `sites[0].routes[0].proxy.upstreams: no upstreams: add at least one URL`, 7},
		{"no upstreams key", `
          balance: first`, `sites[0].routes[0].proxy.upstreams: no upstreams`, 6},
		{"missing host", `
          upstreams: ["http://"]`, `missing host in "http://"`, 7},
		{"path", `
          upstreams: [http://127.0.0.1:9000/app]`, `must not have a path or query`, 7},
		{"credentials", `
          upstreams: ["http://u:p@127.0.0.1:9000"]`, `must not hold credentials`, 7},
		{"duplicate", `
          upstreams:
            - http://127.0.0.1:9000
            - http://127.0.0.1:9000`, `sites[0].routes[0].proxy.upstreams[1]: upstream "http://127.0.0.1:9000" is also sites[0].routes[0].proxy.upstreams[0]`, 9},
		{"negative weight", `
          upstreams: [{url: "http://127.0.0.1:9000", weight: -1}]`, `upstreams[0].weight: must not be negative`, 7},
		{"negative upstream max_fails", `
          upstreams: [{url: "http://127.0.0.1:9000", max_fails: -2}]`, `upstreams[0].max_fails: must not be negative`, 7},
		{"bad balance", `
          upstreams: [http://127.0.0.1:9000]
          balance: random`, `proxy.balance: "random" is not one of round_robin, least_conn, ip_hash, first`, 8},
		{"negative retries", `
          upstreams: [http://127.0.0.1:9000]
          retries: -1`, `proxy.retries: must not be negative`, 8},
		{"negative request_buffering", `
          upstreams: [http://127.0.0.1:9000]
          request_buffering: -1`, `proxy.request_buffering: invalid size "-1"`, 8},
		{"negative max_concurrent_dials", `
          upstreams: [http://127.0.0.1:9000]
          max_concurrent_dials: -1`, `proxy.max_concurrent_dials: must not be negative`, 8},
		{"bad host", `
          upstreams: [http://127.0.0.1:9000]
          host: "a b/c"`, `proxy.host: invalid host "a b/c"`, 8},
		{"health timeout", `
          upstreams: [http://127.0.0.1:9000]
          health_check: {interval: 1s, timeout: 2s}`, `proxy.health_check.timeout: timeout 2s is longer than interval 1s`, 8},
		{"health status", `
          upstreams: [http://127.0.0.1:9000]
          health_check: {status: 999}`, `proxy.health_check.status: invalid HTTP status 999`, 8},
		{"health path", `
          upstreams: [http://127.0.0.1:9000]
          health_check: {path: healthz}`, `proxy.health_check.path: path "healthz" must start with /`, 8},
		{"missing ca", `
          upstreams: [https://127.0.0.1:9443]
          tls: {ca: DIR/none.pem}`, `proxy.tls.ca: cannot read`, 8},
		{"typo", `
          upstream: [http://127.0.0.1:9000]`, `proxy.upstream: unknown key "upstream" (did you mean "upstreams"?)`, 7},
		{"compress unknown encoding", `
          upstreams: [http://127.0.0.1:9000]
          compress:
            encodings: [gzip, deflate]`, `proxy.compress.encodings[1]: "deflate" is not one of zstd, br, gzip`, 9},
		{"compress bad type", `
          upstreams: [http://127.0.0.1:9000]
          compress: {types: [text/html, "json"]}`, `proxy.compress.types[1]: "json" is not a media type such as text/css or text/*`, 8},
		{"compress type with parameters", `
          upstreams: [http://127.0.0.1:9000]
          compress: {types: ["text/html; charset=utf-8"]}`, `proxy.compress.types[0]: "text/html; charset=utf-8" is not a media type`, 8},
		{"compress min_size too large", `
          upstreams: [http://127.0.0.1:9000]
          compress: {min_size: 2MiB}`, `proxy.compress.min_size: 2MiB is more than 1MiB`, 8},
		{"compress typo", `
          upstreams: [http://127.0.0.1:9000]
          compress: {min_sise: 2KiB}`, `proxy.compress.min_sise: unknown key "min_sise"`, 8},
		{"bare duration", `
          upstreams: [http://127.0.0.1:9000]
          dial_timeout: 5`, `proxy.dial_timeout: duration "5" needs a unit, such as 5s`, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseProxy(t, tc.body)
			var ps Problems
			if !errors.As(err, &ps) {
				t.Fatalf("err = %v, want Problems", err)
			}
			for _, p := range ps {
				if strings.Contains(p.String(), tc.want) {
					if p.Line != tc.line || filepath.Base(p.File) != "edge.yaml" {
						t.Errorf("%s: at %s:%d, want edge.yaml:%d", p, filepath.Base(p.File), p.Line, tc.line)
					}
					return
				}
			}
			t.Errorf("problems:\n%v\nwant one containing %q", err, tc.want)
		})
	}
}

func TestTrustedProxiesErrors(t *testing.T) {
	y := "listen: {http: \"127.0.0.1:8080\"}\nadmin: \"\"\nserver:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33, nonsense, 192.168.1.1]\n" +
		"sites:\n  - routes:\n      - path: /\n        proxy: {upstreams: [http://127.0.0.1:9000]}\n"
	_, err := Parse("edge.yaml", []byte(y))
	if err == nil {
		t.Fatal("invalid CIDRs accepted")
	}
	got := err.Error()
	for _, want := range []string{
		`edge.yaml:4:`, `server.trusted_proxies[1]: invalid CIDR "10.0.0.0/33"`, `server.trusted_proxies[2]: invalid CIDR "nonsense"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "[0]") || strings.Contains(got, "[3]") {
		t.Errorf("valid entries reported: %s", got)
	}
}

func TestProxySocketExists(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	// A regular file where a socket belongs is an error; no file is a
	// warning (the backend may start later).
	os.WriteFile(sock, nil, 0o600)
	y := "listen: {http: \"127.0.0.1:8080\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: /\n        proxy: {upstreams: [\"unix:" + sock + "\"]}\n"
	if _, err := Parse("edge.yaml", []byte(y)); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("err = %v, want not a socket", err)
	}
}
