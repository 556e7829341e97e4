package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// redisConfig loads a config whose redis block is redisYAML (flow style).
func redisConfig(t *testing.T, redisYAML string) (*Config, error) {
	t.Helper()
	p := writeConfig(t, fmt.Sprintf(`
listen: { http: "127.0.0.1:8080" }
redis: %s
sites:
  - routes:
      - path: /socket/
        hub: {}
`, redisYAML))
	os.WriteFile(filepath.Join(filepath.Dir(p), "pw"), []byte("s3cret\n"), 0o600)
	return Load(p)
}

func TestRedisSentinel(t *testing.T) {
	c, err := redisConfig(t, `{ sentinel: { master: mymaster, addrs: ["127.0.0.1:26379", "[::1]:26380"], password_file: pw } }`)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Redis.Sentinel
	if s.Master != "mymaster" || len(s.Addrs) != 2 || !filepath.IsAbs(s.PasswordFile) || c.Redis.Prefix != "edge:" {
		t.Errorf("redis = %+v, sentinel = %+v", c.Redis, s)
	}
}

// TestRedisProblems: every mistake names its key, with FILE:LINE:COL.
func TestRedisProblems(t *testing.T) {
	cases := []struct {
		name, redis, path, msg string
	}{
		{"no url", `{ prefix: "x:" }`, "redis.url", "missing"},
		{"url and sentinel", `{ url: "redis://a:1", sentinel: { master: m, addrs: ["a:1"] } }`, "redis.url", "not both"},
		{"no master", `{ sentinel: { addrs: ["a:1"] } }`, "redis.sentinel.master", "missing"},
		{"no addrs", `{ sentinel: { master: m } }`, "redis.sentinel.addrs", "at least one sentinel"},
		{"addr without port", `{ sentinel: { master: m, addrs: ["a:1", "b"] } }`, "redis.sentinel.addrs[1]", "not host:port"},
		{"bad port", `{ sentinel: { master: m, addrs: ["a:99999"] } }`, "redis.sentinel.addrs[0]", "invalid port"},
		{"missing password file", `{ sentinel: { master: m, addrs: ["a:1"], password_file: nope } }`, "redis.sentinel.password_file", "cannot read"},
		{"unknown key", `{ sentinel: { master: m, addrs: ["a:1"], pasword_file: pw } }`, "redis.sentinel.pasword_file", "unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := redisConfig(t, tc.redis)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, p := range problemsOf(t, err) {
				if p.Path == tc.path && strings.Contains(p.Msg, tc.msg) {
					if p.Line == 0 || p.Col == 0 || !strings.HasSuffix(p.File, "edge.yaml") {
						t.Errorf("problem %q has no FILE:LINE:COL", p)
					}
					return
				}
			}
			t.Errorf("problems:\n%v\nwant %s: …%s…", err, tc.path, tc.msg)
		})
	}
}
