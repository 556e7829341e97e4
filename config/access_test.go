package config

import (
	"strings"
	"testing"
)

func TestAccessRuleErrors(t *testing.T) {
	_, err := Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - access: ["allow 10.0.0.0/8", "permit all"]
    routes:
      - path: /
        respond: { body: x }
        access: ["deny 10.0.0.300", "deny"]
        basic_auth: { realm: "a\"b" }
`))
	if err == nil {
		t.Fatal("bad rules accepted")
	}
	for _, want := range []string{
		`t.yaml:4:34: sites[0].access[1]: "permit all": "permit" is not allow or deny`,
		`sites[0].routes[0].access[0]: "deny 10.0.0.300": "10.0.0.300" is not an IP address, a CIDR prefix or all`,
		`sites[0].routes[0].access[1]: "deny": want "allow ADDR" or "deny ADDR"`,
		`sites[0].routes[0].basic_auth.realm: realm must not contain quotes`,
		`sites[0].routes[0].basic_auth.users_file: basic_auth needs a users_file`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestLimitErrors(t *testing.T) {
	_, err := Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - { path: /a, respond: { body: x }, limit: { rate: 10/h } }
      - { path: /b, respond: { body: x }, limit: { burst: 3 } }
      - { path: /c, respond: { body: x }, limit: { rate: 5/s, key: cookie, status: 200 } }
`))
	if err == nil {
		t.Fatal("bad limits accepted")
	}
	for _, want := range []string{
		`sites[0].routes[0].limit.rate: rate "10/h": want N/s or N/m`,
		`sites[0].routes[1].limit: a limit needs a rate, connections or both`,
		`sites[0].routes[2].limit.key: key "cookie": want client_ip or header:NAME`,
		`sites[0].routes[2].limit.status: status 200: want 400–599`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestErrorPagesErrors(t *testing.T) {
	dir := t.TempDir()
	_, err := Parse(dir+"/t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - error_pages: { "200": /e/ok.html, "502": /api/50x.html, "404": errors.html }
    routes:
      - { path: /e/, static: { root: . } }
      - { path: /api/, respond: { body: x } }
`))
	if err == nil {
		t.Fatal("bad error pages accepted")
	}
	for _, want := range []string{
		`sites[0].error_pages.200: status "200": want 400–599`,
		`sites[0].error_pages.502: page "/api/50x.html" is not under a static route of this site`,
		`sites[0].error_pages.404: page "errors.html" must be a path starting with /`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestRewriteErrors(t *testing.T) {
	_, err := Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        respond: { body: x }
        rewrite:
          - { match: '^/(a', to: /b }
          - { match: '^/(a)$', to: 'b$1' }
          - { match: '^/(a)$', to: '/b/$2' }
          - { match: '^/(a)$', to: '/b/${name}' }
          - { match: '^/(a)$', to: '/b', redirect: 200 }
`))
	if err == nil {
		t.Fatal("bad rewrites accepted")
	}
	for _, want := range []string{
		`sites[0].routes[0].rewrite[0].match: invalid regular expression "^/(a"`,
		`sites[0].routes[0].rewrite[1].to: an internal rewrite needs a path starting with /`,
		`sites[0].routes[0].rewrite[2].to: $2: match has 1 groups`,
		`sites[0].routes[0].rewrite[3].to: ${name}: match has no group of that name`,
		`sites[0].routes[0].rewrite[4].redirect: redirect 200: want 301, 302, 303, 307 or 308`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestRawHeartbeatNeedsRaw(t *testing.T) {
	_, err := Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - { path: /ws/, hub: { raw_heartbeat: {} } }
`))
	if err == nil || !strings.Contains(err.Error(), "sites[0].routes[0].hub.raw_heartbeat: raw_heartbeat needs raw: true") {
		t.Fatalf("got %v", err)
	}
	cfg, err := Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - { path: /ws/, hub: { raw: true, raw_heartbeat: {} } }
`))
	if err != nil {
		t.Fatal(err)
	}
	if hb := cfg.Sites[0].Routes[0].Hub.RawHeartbeat; hb.Ping != "ping" || hb.Pong != "pong" {
		t.Errorf("defaults %+v, want ping/pong", hb)
	}
}
