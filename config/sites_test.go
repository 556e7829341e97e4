package config

import "testing"

// siteMatchYAML has a site for each host shape; SiteMatchCases say which
// site a Host header value falls to.
const siteMatchYAML = `
listen: { http: "127.0.0.1:0" }
sites:
  - hosts: [dash.example.test, Mixed.Example.test]
    routes: [{ path: /, static: { root: . } }]
  - hosts: ["*.example.test"]
    routes: [{ path: /, static: { root: . } }]
  - hosts: ["*.apps.example.test"]
    routes: [{ path: /, static: { root: . } }]
  - hosts: [127.0.0.1, "::1", xn--bcher-kva.example.test]
    routes: [{ path: /, static: { root: . } }]
  - routes: [{ path: /, static: { root: . } }]
`

var siteMatchCases = []struct {
	host string
	site int
}{
	{"dash.example.test", 0},
	{"DASH.Example.TEST", 0},
	{"dash.example.test:8443", 0},
	{"dash.example.test.", 0},
	{"dash.example.test.:443", 0},
	{"mixed.example.test", 0}, // configured in mixed case
	{"x.example.test", 1},     // wildcard, one label
	{"a.b.c.example.test", 1}, // wildcard, several labels
	{"example.test", 4},       // the bare suffix is not the wildcard's
	{".example.test", 4},      // nor is an empty label
	{"x.apps.example.test", 2},
	{"x.y.apps.example.test:80", 2}, // the longest wildcard wins
	{"apps.example.test", 1},
	{"127.0.0.1", 3},
	{"127.0.0.1:8080", 3},
	{"[::1]", 3},
	{"[::1]:8443", 3},
	{"::1", 3},                   // a bare IPv6 address is not host:port
	{"[0:0:0:0:0:0:0:1]:80", 3},  // any spelling of the address
	{"[::ffff:127.0.0.1]:80", 3}, // IPv4-mapped
	{"127.0.0.2", 4},
	{"xn--bcher-kva.example.test", 3}, // punycode as configured
	{"bücher.example.test", 3},        // IDN: compared as its A-label
	{"BÜCHER.example.test:443", 3},
	{"xn--bcher-kva.EXAMPLE.test.", 3},
	{"", 4},                    // no Host (HTTP/1.0): the default site
	{":80", 4},                 // no name
	{".", 4},                   //
	{"[dash.example.test]", 4}, // brackets hold only addresses
	{"other.test", 4},
	{"dash.example.test.evil", 4},
}

func TestSiteIndex(t *testing.T) {
	c, err := Parse("edge.yaml", []byte(siteMatchYAML))
	if err != nil {
		t.Fatal(err)
	}
	x := NewSiteIndex(c.Sites)
	for _, tc := range siteMatchCases {
		if got, ok := x.Lookup(tc.host); !ok || got != tc.site {
			t.Errorf("Lookup(%q) = %d, %v; want %d", tc.host, got, ok, tc.site)
		}
		// The canonical form matches as the host does.
		if got, _ := x.Lookup(HostName(tc.host)); got != tc.site {
			t.Errorf("Lookup(HostName(%q) = %q) = %d, want %d", tc.host, HostName(tc.host), got, tc.site)
		}
	}
	// Without a default site, unknown hosts match nothing.
	c.Sites = c.Sites[:4]
	x = NewSiteIndex(c.Sites)
	for _, h := range []string{"", "other.test", "example.test"} {
		if i, ok := x.Lookup(h); ok {
			t.Errorf("Lookup(%q) without a default site = %d, true; want false", h, i)
		}
	}
}

func TestHostName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"Dash.Example.Test.:443", "dash.example.test"},
		{"[0:0::1]:80", "::1"},
		{"::FFFF:10.0.0.1", "10.0.0.1"},
		{"bücher.example", "xn--bcher-kva.example"},
		{"*.Example.COM", "*.example.com"},
		{"", ""},
	} {
		if got := HostName(tc.in); got != tc.want {
			t.Errorf("HostName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// The canonical form is a fixed point ("Ӏ": idna refuses it, takes
	// its lower case; found by FuzzSiteMatch).
	for _, h := range []string{"Ӏ", "Ӏ.example.test.", "[Foo]:80", "a..", "a:b:c", "\xff"} {
		if c := HostName(h); HostName(c) != c {
			t.Errorf("HostName(%q) = %q, but HostName(%q) = %q", h, c, c, HostName(c))
		}
	}
}

func TestSiteIndexNoAlloc(t *testing.T) {
	c, err := Parse("edge.yaml", []byte(siteMatchYAML))
	if err != nil {
		t.Fatal(err)
	}
	x := NewSiteIndex(c.Sites)
	for _, h := range []string{"dash.example.test", "dash.example.test:8443", "x.apps.example.test", "127.0.0.1:80", "[::1]:443", ""} {
		if n := testing.AllocsPerRun(100, func() { x.Lookup(h) }); n != 0 {
			t.Errorf("Lookup(%q) allocates %v times", h, n)
		}
	}
}

func TestSiteName(t *testing.T) {
	for _, tc := range []struct {
		hosts []string
		want  string
	}{{nil, "default"}, {[]string{"Dash.example.test", "b.test"}, "Dash.example.test"}} {
		s := &Site{Hosts: tc.hosts}
		if got := s.Name(); got != tc.want {
			t.Errorf("Site{Hosts: %q}.Name() = %q, want %q", tc.hosts, got, tc.want)
		}
	}
}
