package config

import (
	"strings"
	"testing"
)

// A malformed config names the file, line and key, and says why.
func TestRedirectRespondErrors(t *testing.T) {
	cases := []struct{ handler, want string }{
		{`redirect: { to: "https://{hostname}/" }`, `t.yaml:6:21: sites[0].routes[0].redirect.to: unknown placeholder {hostname}`},
		{`redirect: { to: "https://a/", status: 200 }`, `sites[0].routes[0].redirect.status: redirect status 200`},
		{`redirect: { status: 301 }`, `sites[0].routes[0].redirect.to: a redirect needs a target`},
		{`redirect: { to: "ftp://a/" }`, `scheme "ftp"`},
		{`redirect: { to: "https://$host$request_uri" }`, `redirect.to: nginx variable $host is not expanded here: use {host}`},
		{`redirect: { to: "https://a$uri" }`, `nginx variable $uri is not expanded here: use {path}`},
		{`redirect: { to: "elsewhere" }`, `want an absolute URL`},
		{`respond: { status: 204, body: x }`, `sites[0].routes[0].respond.body: status 204 has no body`},
		{`respond: { status: 99 }`, `sites[0].routes[0].respond.status: status 99`},
		{`respond: { content_type: "text/" }`, `sites[0].routes[0].respond.content_type: invalid media type`},
		{"respond: { body: x }\n        static: { root: . }", `a route needs exactly one handler of static, proxy, fastcgi, hub, redirect or respond (found 2)`},
	}
	for _, tc := range cases {
		_, err := Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        `+tc.handler+`
`))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s:\n got %v\nwant %q", tc.handler, err, tc.want)
		}
	}
}
