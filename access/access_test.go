package access

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"edge/config"
	"edge/internal/clientip"
)

// parse builds a config from a site's YAML (routes included), as edge does.
func parse(t *testing.T, dir, site string) *config.Config {
	t.Helper()
	cfg, err := config.Parse(filepath.Join(dir, "edge.yaml"), []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - `+site+`
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("secret")) })

func serve(h http.Handler, remote string, prep func(*http.Request)) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = remote
	if prep != nil {
		prep(r)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// Rules apply in order, first match wins, no match allows: nginx's
// semantics for the two usual shapes and a mixed list.
func TestAccessRules(t *testing.T) {
	cfg := parse(t, t.TempDir(), `access: ["deny 10.1.2.3", "allow 10.0.0.0/8", "allow ::1", "deny all"]
    routes:
      - { path: /, respond: { body: x } }
      - { path: /open, respond: { body: x }, access: ["allow all"] }
      - { path: /blocklist, respond: { body: x }, access: ["deny 192.0.2.0/24"] }`)
	site := &cfg.Sites[0]
	guarded := Guard(ok, site, &site.Routes[0])
	open := Guard(ok, site, &site.Routes[1])
	blocklist := Guard(ok, site, &site.Routes[2])
	cases := []struct {
		h      http.Handler
		remote string
		want   int
	}{
		{guarded, "10.1.2.3:1", 403},          // the deny before the allow wins
		{guarded, "10.9.9.9:1", 200},          // allow 10/8
		{guarded, "[::ffff:10.9.9.9]:1", 200}, // IPv4-mapped is the IPv4 address
		{guarded, "[::1]:1", 200},             // allow ::1
		{guarded, "192.0.2.1:1", 403},         // deny all
		{open, "192.0.2.1:1", 200},            // the route's list replaces the site's
		{blocklist, "192.0.2.77:1", 403},      // deny list
		{blocklist, "198.51.100.1:1", 200},    // no rule matches: allowed
	}
	for _, tc := range cases {
		w := serve(tc.h, tc.remote, nil)
		if w.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.remote, w.Code, tc.want)
		}
		if tc.want == 403 && strings.Contains(w.Body.String(), "secret") {
			t.Errorf("%s: the denied request reached the handler", tc.remote)
		}
	}
}

// Behind a trusted load balancer the rules see the real client, and a
// spoofed X-Forwarded-For from an untrusted peer changes nothing.
func TestAccessUsesClientIdentity(t *testing.T) {
	cfg := parse(t, t.TempDir(), `access: ["allow 203.0.113.0/24", "deny all"]
    routes: [{ path: /, respond: { body: x } }]`)
	h := Guard(ok, &cfg.Sites[0], &cfg.Sites[0].Routes[0])
	via := func(remote, xff string) int { return behindBalancer(h, remote, xff) }
	if c := via("10.0.0.5:1", "203.0.113.9"); c != 200 {
		t.Errorf("allowed client behind the trusted balancer: %d", c)
	}
	if c := via("10.0.0.5:1", "198.51.100.4"); c != 403 {
		t.Errorf("denied client behind the trusted balancer: %d", c)
	}
	if c := via("198.51.100.4:1", "203.0.113.9"); c != 403 {
		t.Errorf("untrusted peer spoofing X-Forwarded-For: %d, want 403", c)
	}
}

func TestBasicAuth(t *testing.T) {
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	os.WriteFile(filepath.Join(dir, "users"), []byte("# editors\nann:"+string(hash)+"\n"), 0o600)
	cfg := parse(t, dir, `routes:
      - { path: /, respond: { body: x }, basic_auth: { users_file: users, realm: "Back office" } }`)
	h := Guard(ok, &cfg.Sites[0], &cfg.Sites[0].Routes[0])
	cases := []struct {
		name       string
		user, pass string
		set        bool
		want       int
	}{
		{"no credentials", "", "", false, 401},
		{"wrong password", "ann", "guess", true, 401},
		{"unknown user", "bob", "s3cret", true, 401},
		{"right", "ann", "s3cret", true, 200},
		{"right again (remembered)", "ann", "s3cret", true, 200},
		{"password with the user's prefix", "ann", "s3cret\x00", true, 401},
	}
	for _, tc := range cases {
		w := serve(h, "192.0.2.1:1", func(r *http.Request) {
			if tc.set {
				r.SetBasicAuth(tc.user, tc.pass)
			}
		})
		if w.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, w.Code, tc.want)
		}
		if tc.want == 401 {
			if got := w.Header().Get("WWW-Authenticate"); got != `Basic realm="Back office", charset="UTF-8"` {
				t.Errorf("%s: WWW-Authenticate %q", tc.name, got)
			}
			if strings.Contains(w.Body.String(), "secret") {
				t.Errorf("%s: the refused request reached the handler", tc.name)
			}
		}
	}
}

// Only bcrypt: any other hash is an error at load time naming the file's
// line, so that a weak or unverifiable entry never guards a route.
func TestBasicAuthFileErrors(t *testing.T) {
	dir := t.TempDir()
	hash, _ := bcrypt.GenerateFromPassword([]byte("x"), bcrypt.MinCost)
	os.WriteFile(filepath.Join(dir, "users"), []byte("ann:"+string(hash)+"\nbob:$apr1$xyz$abcdefghijklmnopqrstuv\nno-colon\ncarl:{SHA}abc=\n"), 0o600)
	_, err := config.Parse(filepath.Join(dir, "edge.yaml"), []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - basic_auth: { users_file: users }
    routes: [{ path: /, respond: { body: x } }]
`))
	if err == nil {
		t.Fatal("a users file with MD5 and SHA entries was accepted")
	}
	users := filepath.Join(dir, "users")
	for _, want := range []string{
		users + `:2: user "bob": not a bcrypt hash`,
		users + `:3: want user:hash`,
		users + `:4: user "carl": not a bcrypt hash`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), ":1:") && strings.Contains(err.Error(), `"ann"`) {
		t.Errorf("the bcrypt line was refused:\n%v", err)
	}
}

// behindBalancer serves a request that came from remote with
// X-Forwarded-For xff, the router having resolved the client with
// 10.0.0.0/8 as trusted proxies, and returns the status.
func behindBalancer(h http.Handler, remote, xff string) int {
	res := clientip.NewResolver([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = remote
	r.Header.Set("X-Forwarded-For", xff)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, res.Resolve(r))
	return w.Code
}
