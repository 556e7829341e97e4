package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Access is an ordered list of nginx allow/deny rules, each "allow ADDR"
// or "deny ADDR" where ADDR is an IP address, a CIDR prefix or "all". The
// first rule that matches the client's address (server.trusted_proxies
// applied) decides; when none matches, the request is allowed, as in
// nginx. A route's list replaces its site's.
type Access []string

// AccessRule is one parsed Access entry.
type AccessRule struct {
	Allow  bool
	Prefix netip.Prefix // the zero Prefix matches every address ("all")
}

// Matches reports whether the rule applies to a.
func (r AccessRule) Matches(a netip.Addr) bool {
	return !r.Prefix.IsValid() || r.Prefix.Contains(a.Unmap())
}

// ParseAccessRule parses "allow 10.0.0.0/8", "deny all" and the like.
func ParseAccessRule(s string) (AccessRule, error) {
	verb, addr, ok := strings.Cut(strings.TrimSpace(s), " ")
	addr = strings.TrimSpace(addr)
	var r AccessRule
	switch {
	case !ok:
		return r, fmt.Errorf("%q: want \"allow ADDR\" or \"deny ADDR\" (ADDR: an IP, a CIDR prefix or all)", s)
	case verb == "allow":
		r.Allow = true
	case verb == "deny":
	default:
		return r, fmt.Errorf("%q: %q is not allow or deny", s, verb)
	}
	if addr == "all" {
		return r, nil
	}
	if p, err := netip.ParsePrefix(addr); err == nil {
		r.Prefix = p.Masked()
		return r, nil
	}
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return r, fmt.Errorf("%q: %q is not an IP address, a CIDR prefix or all", s, addr)
	}
	a = a.Unmap()
	r.Prefix = netip.PrefixFrom(a, a.BitLen())
	return r, nil
}

// Rules parses every entry; config.Parse has checked them.
func (a Access) Rules() []AccessRule {
	rules := make([]AccessRule, 0, len(a))
	for _, s := range a {
		if r, err := ParseAccessRule(s); err == nil {
			rules = append(rules, r)
		}
	}
	return rules
}

// BasicAuth asks for a user and password from an htpasswd file, as nginx's
// auth_basic and auth_basic_user_file. A route's replaces its site's.
type BasicAuth struct {
	// UsersFile is an htpasswd file, relative to the config file's
	// directory. Only bcrypt hashes (htpasswd -B) are accepted; the file is
	// read again on every reload. Required.
	UsersFile string `yaml:"users_file"`
	// Realm is shown by browsers in the login prompt. Default "edge".
	Realm string `yaml:"realm"`

	// Users maps each user to its bcrypt hash, read by config.Parse.
	Users map[string][]byte `yaml:"-"`
}

func (b *BasicAuth) defaults(c *Config) {
	setStr(&b.Realm, "edge")
	if b.UsersFile != "" {
		b.UsersFile = c.resolve(b.UsersFile)
	}
}

func (v *validator) access(p string, a Access) {
	for i, s := range a {
		if _, err := ParseAccessRule(s); err != nil {
			v.errf(fmt.Sprintf("%s[%d]", p, i), "%v", err)
		}
	}
}

// basicAuth checks the realm and reads the users file, naming the line of
// every entry that is not "user:bcrypt-hash".
func (v *validator) basicAuth(p string, b *BasicAuth) {
	if strings.ContainsAny(b.Realm, "\"\\\r\n") {
		v.errf(p+".realm", "realm must not contain quotes, backslashes or line breaks")
	}
	if b.UsersFile == "" {
		v.errf(p+".users_file", "basic_auth needs a users_file (htpasswd -B -c FILE USER)")
		return
	}
	data, err := os.ReadFile(b.UsersFile)
	if err != nil {
		v.errf(p+".users_file", "cannot read %s: %v", b.UsersFile, unwrapPathErr(err))
		return
	}
	b.Users = map[string][]byte{}
	bad := false
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		user, hash, ok := strings.Cut(text, ":")
		if !ok || user == "" {
			v.errf(p+".users_file", "%s:%d: want user:hash", b.UsersFile, line)
			bad = true
			continue
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			v.errf(p+".users_file", "%s:%d: user %q: not a bcrypt hash (only bcrypt is accepted: htpasswd -B)", b.UsersFile, line, user)
			bad = true
			continue
		}
		b.Users[user] = []byte(hash)
	}
	if len(b.Users) == 0 && !bad {
		v.errf(p+".users_file", "%s has no users", b.UsersFile)
	}
}
