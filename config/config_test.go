package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata")

// writeConfig writes yaml into a temp dir with a www directory beside it and
// returns the config path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "www"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func problemsOf(t *testing.T, err error) Problems {
	t.Helper()
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error %v is not Problems", err)
	}
	return ps
}

func TestLoadMinimal(t *testing.T) {
	p := writeConfig(t, `
listen: { http: "127.0.0.1:8080" }
sites:
  - routes:
      - path: /static/
        static: { root: www }
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.HTTP != "127.0.0.1:8080" || c.Listen.HTTPS != "" {
		t.Errorf("listen = %+v, want http only", c.Listen)
	}
	if c.Admin != DefaultAdmin {
		t.Errorf("admin = %q, want default %q", c.Admin, DefaultAdmin)
	}
	st := c.Sites[0].Routes[0].Static
	if want := filepath.Join(filepath.Dir(p), "www"); st.Root != want {
		t.Errorf("root = %q, want %q (relative to the config file)", st.Root, want)
	}
	if st.CacheControl != DefaultCacheControl || len(st.Index) != 1 || st.Index[0] != "index.html" {
		t.Errorf("static defaults not applied: %+v", st)
	}
	if got := *c.Sites[0].Routes[0].MaxBodySize; got != DefaultMaxBodySize {
		t.Errorf("route max_body_size = %d, want %d", got, DefaultMaxBodySize)
	}
	if c.Server.ReadHeaderTimeout != 10*time.Second || c.Server.ShutdownTimeout != 30*time.Second {
		t.Errorf("server defaults not applied: %+v", c.Server)
	}
}

func TestExplicitEmptyTurnsOff(t *testing.T) {
	p := writeConfig(t, `
listen: { http: "127.0.0.1:8080", https: "" }
admin: ""
sites:
  - hosts: [example.com]
    routes: [{ path: /, static: { root: www } }]
tls: { email: a@example.com }
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.HTTPS != "" || c.Admin != "" {
		t.Errorf("explicit empty values were overridden by defaults: https=%q admin=%q", c.Listen.HTTPS, c.Admin)
	}
}

func TestPublicHostTurnsOnHTTPS(t *testing.T) {
	p := writeConfig(t, `
tls: { email: ops@example.com }
sites:
  - hosts: [dash.example.com]
    routes: [{ path: /, static: { root: www } }]
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.HTTP != ":80" || c.Listen.HTTPS != ":443" {
		t.Errorf("listen = %+v, want :80 and :443", c.Listen)
	}
}

func TestScalarForms(t *testing.T) {
	p := writeConfig(t, `
listen: { http: "127.0.0.1:0" }
server: { max_body_size: 10m, idle_timeout: 2d, max_header_bytes: 32KiB }
sites:
  - hosts: example.test
    routes:
      - path: /
        max_body_size: 0
        proxy:
          upstreams:
            - http://127.0.0.1:9000
            - { url: "http://127.0.0.1:9001", weight: 3, backup: true }
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Server.MaxBodySize != 10<<20 || c.Server.IdleTimeout != 48*time.Hour || c.Server.MaxHeaderBytes != 32<<10 {
		t.Errorf("server = %+v", c.Server)
	}
	s := c.Sites[0]
	if len(s.Hosts) != 1 || s.Hosts[0] != "example.test" {
		t.Errorf("hosts = %q, want a list of one", s.Hosts)
	}
	if *s.Routes[0].MaxBodySize != 0 {
		t.Errorf("route max_body_size = %d, want 0 (unlimited)", *s.Routes[0].MaxBodySize)
	}
	ups := s.Routes[0].Proxy.Upstreams
	if ups[0].URL != "http://127.0.0.1:9000" || ups[0].Weight != 1 || ups[1].Weight != 3 || !ups[1].Backup {
		t.Errorf("upstreams = %+v", ups)
	}
}

// TestProblemsGolden checks every problem of a broken file is reported at
// once, each with file:line:col and key path. Refresh with -update.
func TestProblemsGolden(t *testing.T) {
	for _, name := range []string{"bad-keys", "bad-values", "bad-routes", "bad-syntax"} {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join("testdata", name+".yaml")
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			// Load from a copy so relative paths resolve in a temp dir
			// holding a www directory; print the name as written here.
			p := writeConfig(t, string(data))
			_, err = Load(p)
			if err == nil {
				t.Fatal("Load succeeded on a broken file")
			}
			got := strings.ReplaceAll(err.Error(), p, name+".yaml")
			got = strings.ReplaceAll(got, filepath.Dir(p), "DIR") + "\n"
			golden := filepath.Join("testdata", name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./config -run Golden -update)", err)
			}
			if got != string(want) {
				t.Errorf("problems differ from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestProblemFormat(t *testing.T) {
	p := writeConfig(t, "listen:\n  http: \"127.0.0.1:8080\"\n  htps: \":443\"\nsites:\n  - routes: [{path: /, static: {root: www}}]\n")
	_, err := Load(p)
	ps := problemsOf(t, err)
	if len(ps) != 1 {
		t.Fatalf("got %d problems, want 1: %v", len(ps), err)
	}
	want := p + `:3:3: listen.htps: unknown key "htps" (did you mean "https"?)`
	if ps[0].String() != want {
		t.Errorf("problem = %q, want %q", ps[0].String(), want)
	}
}

func TestMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || !strings.Contains(err.Error(), "nope.yaml: configuration file not found") {
		t.Errorf("err = %v, want a clear not-found message naming the file", err)
	}
}

func TestEmptyFile(t *testing.T) {
	_, err := Parse("empty.yaml", nil)
	if err == nil || !strings.Contains(err.Error(), "no sites") {
		t.Errorf("err = %v, want 'no sites'", err)
	}
}

func TestWarningsDoNotFail(t *testing.T) {
	p := writeConfig(t, `
listen: { http: "127.0.0.1:0" }
sites:
  - routes: [{ path: /, proxy: { upstreams: ["unix:/nonexistent/app.sock"] } }]
`)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].String(), "warning: sites[0].routes[0].proxy.upstreams[0]: socket /nonexistent/app.sock does not exist yet") {
		t.Errorf("warnings = %v", c.Warnings)
	}
}

func TestParseByteSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want ByteSize
		ok   bool
	}{
		{"0", 0, true}, {"512", 512, true}, {"1k", 1024, true}, {"1m", 1 << 20, true},
		{"1MiB", 1 << 20, true}, {"10MB", 10e6, true}, {"1.5KiB", 1536, true}, {"2g", 2 << 30, true},
		{"", 0, false}, {"m", 0, false}, {"1x", 0, false}, {"-1", 0, false}, {"1e30", 0, false},
	} {
		got, err := ParseByteSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"0", 0, true}, {"30s", 30 * time.Second, true}, {"1h30m", 90 * time.Minute, true},
		{"365d", 365 * 24 * time.Hour, true}, {"60", 0, false}, {"-5s", 0, false}, {"abc", 0, false},
	} {
		got, err := ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and a
// failure is always a Problems list with the file name in every line.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, s := range seeds {
		b, _ := os.ReadFile(s)
		f.Add(b)
	}
	f.Add([]byte("sites: [{routes: [{path: /, static: {root: /tmp}}]}]"))
	f.Add([]byte("a: &x [*x]"))
	f.Add([]byte("listen: {http: !!binary aGVsbG8=}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("fuzz.yaml", data)
		if err == nil {
			return
		}
		var ps Problems
		if !errors.As(err, &ps) || len(ps) == 0 {
			t.Fatalf("error is not a non-empty Problems: %v", err)
		}
		for _, p := range ps {
			// An include may reach real files, whose problems name them.
			if !strings.HasPrefix(p.String(), "fuzz.yaml") && !strings.Contains(string(data), "include") {
				t.Fatalf("problem without the file name: %q", p)
			}
		}
	})
}

func TestSharedHubPath(t *testing.T) {
	base := `
listen: { http: "127.0.0.1:0" }
sites:
  - hosts: [a.example.test]
    routes: [{ path: /socket/, hub: { channels: [orders] } }]
  - hosts: [b.example.test]
    routes: [{ path: /socket/, hub: { channels: [%s] } }]
`
	if _, err := Load(writeConfig(t, strings.Replace(base, "%s", "orders", 1))); err != nil {
		t.Errorf("same hub settings on two sites: %v", err)
	}
	_, err := Load(writeConfig(t, strings.Replace(base, "%s", "visits", 1)))
	if err == nil || !strings.Contains(err.Error(), `sites[1].routes[0].hub: hub path "/socket/" is also sites[0].routes[0] with different settings`) {
		t.Errorf("different hub settings on one path: %v", err)
	}
}
