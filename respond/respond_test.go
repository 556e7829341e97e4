package respond

import (
	"net/http/httptest"
	"strings"
	"testing"

	"edge/config"
)

// route parses a one-route config, as edge does, and returns the route.
func route(t *testing.T, handler string) *config.Route {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        `+handler+`
`))
	if err != nil {
		t.Fatal(err)
	}
	return &cfg.Sites[0].Routes[0]
}

func TestRedirect(t *testing.T) {
	cases := []struct {
		name, handler, method, target, host string
		status                              int
		location                            string
	}{
		{"https upgrade, nginx's $host$request_uri", `redirect: { to: "https://{host}{uri}" }`,
			"GET", "/a%20b/c?x=1&y=2", "example.com:8080", 308, "https://example.com/a%20b/c?x=1&y=2"},
		{"IPv6 host keeps its brackets", `redirect: { to: "https://{host}{path}" }`,
			"GET", "/p", "[::1]:8080", 308, "https://[::1]/p"},
		{"moved tree, 301", `redirect: { to: "/new{path}?from=old&{query}", status: 301 }`,
			"POST", "/old/x?q=1", "a", 301, "/new/old/x?from=old&q=1"},
		{"encoded line breaks stay encoded", `redirect: { to: "https://a{path}" }`,
			"GET", "/x%0d%0aSet-Cookie:%20a=b", "a", 308, "https://a/x%0d%0aSet-Cookie:%20a=b"},
		{"temporary", `redirect: { to: "https://maintenance.example/", status: 307 }`,
			"HEAD", "/anything", "a", 307, "https://maintenance.example/"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := Redirect(route(t, tc.handler).Redirect)
			req := httptest.NewRequest(tc.method, tc.target, nil)
			req.Host = tc.host
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != tc.status {
				t.Errorf("status %d, want %d", w.Code, tc.status)
			}
			if got := w.Header().Get("Location"); got != tc.location {
				t.Errorf("Location %q, want %q", got, tc.location)
			}
			if w.Body.Len() != 0 || w.Header().Get("Content-Length") != "0" {
				t.Errorf("body %q, Content-Length %q: want none", w.Body.String(), w.Header().Get("Content-Length"))
			}
		})
	}
}

func TestFixed(t *testing.T) {
	cases := []struct {
		name, handler, method string
		status                int
		ctype, body, length   string
	}{
		{"ok", `respond: { body: "ok" }`, "GET", 200, "text/plain; charset=utf-8", "ok", "2"},
		{"HEAD sends the headers only", `respond: { body: "ok" }`, "HEAD", 200, "text/plain; charset=utf-8", "", "2"},
		{"404 without a body", `respond: { status: 404 }`, "GET", 404, "", "", "0"},
		{"JSON", `respond: { status: 503, body: '{"status":"maintenance"}', content_type: application/json }`,
			"POST", 503, "application/json", `{"status":"maintenance"}`, "24"},
		{"204", `respond: { status: 204 }`, "GET", 204, "", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := Fixed(route(t, tc.handler).Respond)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(tc.method, "/x", strings.NewReader("ignored")))
			res := w.Result()
			if res.StatusCode != tc.status || w.Body.String() != tc.body {
				t.Errorf("got %d %q, want %d %q", res.StatusCode, w.Body.String(), tc.status, tc.body)
			}
			if got := res.Header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if got := res.Header.Get("Content-Length"); got != tc.length {
				t.Errorf("Content-Length %q, want %q", got, tc.length)
			}
		})
	}
}
