package tls

import (
	cryptotls "crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"edge/config"
	"edge/server"
)

// TestSiteMatchAgrees checks that the TLS layer (HSTS, HTTPS redirect)
// and the router pick the same site for every shape of Host: both use
// config.SiteIndex. Each site has its own HSTS max-age, which tells which
// site the TLS layer picked.
func TestSiteMatchAgrees(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg, err := config.Parse(dir+"/edge.yaml", []byte(`
listen: { http: "127.0.0.1:0", https: "127.0.0.1:0" }
admin: ""
tls: { ca: internal, storage: "`+dir+`/storage" }
sites:
  - hosts: [dash.example.test, Mixed.Example.test]
    hsts: { enabled: true, max_age: 1s }
    routes: [{ path: /, static: { root: . } }]
  - hosts: ["*.example.test"]
    hsts: { enabled: true, max_age: 2s }
    routes: [{ path: /, static: { root: . } }]
  - hosts: ["*.apps.example.test"]
    hsts: { enabled: true, max_age: 3s }
    routes: [{ path: /, static: { root: . } }]
  - hosts: [127.0.0.1, "::1", xn--bcher-kva.example.test]
    hsts: { enabled: true, max_age: 4s }
    routes: [{ path: /, static: { root: . } }]
  - hsts: { enabled: true, max_age: 5s }
    routes: [{ path: /, static: { root: . } }]
`))
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newLogger(t)
	m := newManager(t, cfg, log)
	rt, err := server.NewRouter(cfg, func(s *config.Site, _ *config.Route) (http.Handler, error) {
		age := int(s.HSTS.MaxAge.Seconds())
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, "max-age=%d", age) }), nil
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	secure := m.Secure(http.NotFoundHandler())
	for _, tc := range []struct {
		host string
		site int // 1-based: the max-age of its HSTS
	}{
		{"dash.example.test", 1},
		{"DASH.Example.TEST:8443", 1},
		{"dash.example.test.", 1},
		{"mixed.example.test", 1},
		{"x.example.test", 2},
		{"a.b.c.example.test:443", 2},
		{"example.test", 5},
		{".example.test", 5}, // an empty label is not a wildcard's
		{"x.y.apps.example.test", 3},
		{"apps.example.test", 2},
		{"127.0.0.1:8443", 4},
		{"[::1]:443", 4},
		{"[0:0:0:0:0:0:0:1]", 4},
		{"[::ffff:127.0.0.1]:443", 4},
		{"xn--bcher-kva.example.test", 4},
		{"bücher.example.test", 4},
		{"", 5},
		{"[dash.example.test]", 5},
		{"other.test", 5},
	} {
		want := fmt.Sprintf("max-age=%d", tc.site)

		r := httptest.NewRequest("GET", "/", nil)
		r.Host = tc.host
		w := httptest.NewRecorder()
		rt.ServeHTTP(w, r)
		if got := w.Body.String(); got != want {
			t.Errorf("router: Host %q went to the site with %s, want %s", tc.host, got, want)
		}

		r.TLS = cryptoTLSState()
		w = httptest.NewRecorder()
		secure.ServeHTTP(w, r)
		if got := w.Header().Get("Strict-Transport-Security"); got != want {
			t.Errorf("tls: Host %q went to the site with %q, want %s", tc.host, got, want)
		}
	}
}

func cryptoTLSState() *cryptotls.ConnectionState { return &cryptotls.ConnectionState{} }
