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
