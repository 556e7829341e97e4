package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hubConfig writes a config with one hub route whose block is hubYAML
// (flow style) next to the given extra files, and loads it.
func hubConfig(t *testing.T, hubYAML string, files map[string][]byte) (*Config, error) {
	t.Helper()
	p := writeConfig(t, fmt.Sprintf(`
listen: { http: "127.0.0.1:8080" }
sites:
  - routes:
      - path: /socket/
        hub: %s
`, hubYAML))
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(filepath.Dir(p), name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return Load(p)
}

func TestHubDefaults(t *testing.T) {
	c, err := hubConfig(t, "{}", nil)
	if err != nil {
		t.Fatal(err)
	}
	h := c.Sites[0].Routes[0].Hub
	checks := []struct {
		name      string
		got, want any
	}{
		{"ping_interval", h.PingInterval, 25 * time.Second},
		{"idle_timeout", h.IdleTimeout, 60 * time.Second},
		{"max_message_size", h.MaxMessageSize, ByteSize(64 << 10)},
		{"queue_size", h.QueueSize, 256},
		{"max_subscriptions", h.MaxSubscriptions, 64},
		{"publish_rate", h.PublishRate, 10.0},
		{"allow_publish", h.AllowPublish, false},
		{"max_connections_per_ip", h.MaxConnectionsPerIP, 0},
		{"auth.mode", h.Auth.Mode, "none"},
		{"auth.channels_header", h.Auth.ChannelsHeader, "X-Edge-Channels"},
		{"auth.timeout", h.Auth.Timeout, 5 * time.Second},
		{"auth.query_param", h.Auth.QueryParam, "token"},
		{"auth.cookie", h.Auth.Cookie, "edge_token"},
		{"history.size", *h.History.Size, 100},
		{"history.ttl", h.History.TTL, 5 * time.Minute},
		{"history.max_bytes", h.History.MaxBytes, ByteSize(64 << 20)},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
	if len(h.Origins) != 0 || len(h.Channels) != 0 {
		t.Errorf("origins %v channels %v, want empty (site hosts, any channel)", h.Origins, h.Channels)
	}
}

func TestHubExplicitValues(t *testing.T) {
	c, err := hubConfig(t, `{ history: { size: 0, ttl: 30s, max_bytes: 1MiB }, raw: true, presence_subs: true,
	  channels: ["orders", "room:*"], origins: ["https://dash.example.com", "*"],
	  auth: { mode: jwt, secret_file: secret } }`,
		map[string][]byte{"secret": []byte(strings.Repeat("k", 32) + "\n")})
	if err != nil {
		t.Fatal(err)
	}
	h := c.Sites[0].Routes[0].Hub
	if *h.History.Size != 0 || h.History.TTL != 30*time.Second || h.History.MaxBytes != 1<<20 {
		t.Errorf("history = %d/%s/%s, want an explicit 0 kept and 1MiB", *h.History.Size, h.History.TTL, h.History.MaxBytes)
	}
	if want := filepath.Join(filepath.Dir(c.File), "secret"); h.Auth.SecretFile != want {
		t.Errorf("secret_file = %s, want %s (relative to the config file)", h.Auth.SecretFile, want)
	}
	if !h.Raw || !h.PresenceSubs || len(h.Channels) != 2 || len(h.Origins) != 2 {
		t.Errorf("hub = %+v", h)
	}
}

func pemOf(t *testing.T, typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func TestHubPublicKeys(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pkix := func(k any) []byte {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf(t, "PUBLIC KEY", der)
	}
	cases := []struct {
		name string
		data []byte
		err  string // "" for valid
	}{
		{"rsa pkix", pkix(&rsaKey.PublicKey), ""},
		{"rsa pkcs1", pemOf(t, "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)), ""},
		{"ec p256", pkix(&p256.PublicKey), ""},
		{"ec p384", pkix(&p384.PublicKey), "ES256 needs a P-256 key"},
		{"not pem", []byte("hello"), "holds no PEM block"},
		{"garbage block", pemOf(t, "PUBLIC KEY", []byte("junk")), "is not a PEM RSA or ECDSA public key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := hubConfig(t, `{ auth: { mode: jwt, public_key_file: key.pem } }`, map[string][]byte{"key.pem": tc.data})
			if tc.err == "" {
				if err != nil {
					t.Fatalf("valid key refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want %q", err, tc.err)
			}
			if p := problemsOf(t, err)[0]; p.Path != "sites[0].routes[0].hub.auth.public_key_file" || p.Line == 0 {
				t.Errorf("problem %+v: want the key path with a line", p)
			}
		})
	}
}

func TestHubProblems(t *testing.T) {
	secret := map[string][]byte{"short": []byte("abc"), "empty": []byte("\n")}
	cases := []struct {
		name string
		hub  string
		path string
		msg  string
	}{
		{"channel pattern", `{ channels: ["ok", "bad name"] }`, "hub.channels[1]", "invalid channel pattern"},
		{"origin with path", `{ origins: ["https://x.example/app"] }`, "hub.origins[0]", "invalid origin"},
		{"origin without scheme", `{ origins: ["dash.example.com"] }`, "hub.origins[0]", "invalid origin"},
		{"unknown mode", `{ auth: { mode: basic } }`, "hub.auth.mode", "not one of none, jwt, request"},
		{"jwt without key", `{ auth: { mode: jwt } }`, "hub.auth", "exactly one of secret_file or public_key_file"},
		{"jwt with both", `{ auth: { mode: jwt, secret_file: short, public_key_file: short } }`, "hub.auth", "exactly one"},
		{"missing secret", `{ auth: { mode: jwt, secret_file: nope } }`, "hub.auth.secret_file", "cannot read"},
		{"empty secret", `{ auth: { mode: jwt, secret_file: empty } }`, "hub.auth.secret_file", "is empty"},
		{"request without url", `{ auth: { mode: request } }`, "hub.auth.url", "needs a url"},
		{"request bad url", `{ auth: { mode: request, url: "ftp://x" } }`, "hub.auth.url", "invalid URL"},
		{"bad channels header", `{ auth: { mode: request, url: "http://a/", channels_header: "X Bad" } }`, "hub.auth.channels_header", "invalid header name"},
		{"tiny max message", `{ max_message_size: 100 }`, "hub.max_message_size", "at least 128"},
		{"negative queue", `{ queue_size: -1 }`, "hub.queue_size", "at least 1"},
		{"negative subscriptions", `{ max_subscriptions: -2 }`, "hub.max_subscriptions", "at least 1"},
		{"negative rate", `{ publish_rate: -1 }`, "hub.publish_rate", "must not be negative"},
		{"negative per ip", `{ max_connections_per_ip: -1 }`, "hub.max_connections_per_ip", "must not be negative"},
		{"ping not below idle", `{ ping_interval: 60s, idle_timeout: 60s }`, "hub.ping_interval", "shorter than idle_timeout"},
		{"negative history", `{ history: { size: -1 } }`, "hub.history.size", "must not be negative"},
		{"unknown key", `{ pingg_interval: 1s }`, "hub.pingg_interval", "unknown key"},
		{"publish proxy without url", `{ allow_publish: true, publish_proxy: { timeout: 1s } }`, "hub.publish_proxy.url", "a url is required"},
		{"publish proxy bad url", `{ allow_publish: true, publish_proxy: { url: "unix:/x" } }`, "hub.publish_proxy.url", "invalid URL"},
		{"subscribe proxy bad pattern", `{ subscribe_proxy: { url: "http://a/", channels: ["a b"] } }`, "hub.subscribe_proxy.channels[0]", "invalid channel pattern"},
		{"subscribe proxy negative cache", `{ subscribe_proxy: { url: "http://a/", cache: -1s } }`, "hub.subscribe_proxy.cache", "negative"},
		{"subscribe proxy unknown key", `{ subscribe_proxy: { url: "http://a/", cache_ttl: 1s } }`, "hub.subscribe_proxy.cache_ttl", "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := hubConfig(t, tc.hub, secret)
			if err == nil {
				t.Fatal("accepted")
			}
			want := "sites[0].routes[0]." + tc.path
			for _, p := range problemsOf(t, err) {
				if p.Path == want && strings.Contains(p.Msg, tc.msg) {
					if p.Line == 0 {
						t.Errorf("problem %q has no line", p)
					}
					return
				}
			}
			t.Errorf("problems:\n%v\nwant %s: …%s…", err, want, tc.msg)
		})
	}
}

func TestHubShortSecretWarns(t *testing.T) {
	c, err := hubConfig(t, `{ auth: { mode: jwt, secret_file: s } }`, map[string][]byte{"s": []byte("short")})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].Msg, "at least 32") {
		t.Errorf("warnings = %v, want one about the short secret", c.Warnings)
	}
}
