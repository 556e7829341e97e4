package nginxconf

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, dir, name, s string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestParseErrors: broken files are reported as FILE:LINE:COL, as nginx -t
// would point at them.
func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"unbalanced open", "http {\n  server {\n    listen 80;\n", "a.conf:4:1: unexpected end of file, expecting \"}\" to close the block opened at line 2"},
		{"unbalanced close", "events {}\n}\n", "a.conf:2:1: unexpected \"}\""},
		{"unterminated quote", "http {\n  add_header X \"abc;\n}\n", "a.conf:2:16: unterminated quoted string"},
		{"missing semicolon", "http {\n  gzip on\n}\n", "a.conf:3:1: unexpected \"}\": directive \"gzip\" is not terminated by \";\""},
		{"deep nesting", strings.Repeat("a {\n", 100), "blocks nested deeper than 50"},
		{"stray semicolon", ";", "a.conf:1:1: unexpected \";\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, t.TempDir(), "a.conf", tc.src)
			_, err := Parse(p, Options{})
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %v, want a ParseError", err)
			}
			if got := strings.TrimPrefix(err.Error(), filepath.Dir(p)+"/"); !strings.Contains(got, tc.want) {
				t.Errorf("error %q, want %q", got, tc.want)
			}
		})
	}
}

// TestParseTokens: quotes, escapes, comments and ${var} as nginx reads them.
func TestParseTokens(t *testing.T) {
	p := write(t, t.TempDir(), "a.conf", `location ~ \.php$ { # comment
  return 200 "a \"b\" c\n"; add_header 'X-A' "${host}x" ;
  rewrite ^/(.*)$ /x/${1}.html;
}`)
	ds, err := Parse(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	loc := ds[0]
	if loc.Arg(1) != `\.php$` || len(loc.Block) != 3 {
		t.Fatalf("location = %q with %d directives", loc.Args, len(loc.Block))
	}
	if got := loc.Block[0].Arg(1); got != "a \"b\" c\n" {
		t.Errorf("quoted = %q", got)
	}
	if got := loc.Block[1].Args; got[0] != "X-A" || got[1] != "${host}x" {
		t.Errorf("add_header args = %q", got)
	}
	if b := loc.Block[1]; b.Line != 2 || b.Col != 29 {
		t.Errorf("add_header at %d:%d, want 2:29", b.Line, b.Col)
	}
	if got := loc.Block[2].Arg(1); got != "/x/${1}.html" {
		t.Errorf("rewrite target = %q", got)
	}
}

// TestIncludes: globs in order, relative to the prefix; a cycle and a
// missing file are errors naming the include directive.
func TestIncludes(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "sites/b.conf", "server { server_name b; }\n")
	write(t, dir, "sites/a.conf", "server { server_name a; }\n")
	main := write(t, dir, "nginx.conf", "http {\n  include sites/*.conf;\n  include fastcgi_params;\n}\n")
	var notes []string
	ds, err := Parse(main, Options{Notes: func(d *Directive, msg string) { notes = append(notes, msg) }})
	if err != nil {
		t.Fatal(err)
	}
	srv := ds[0].Block
	if len(srv) != 2 || srv[0].Block[0].Arg(0) != "a" || !strings.HasSuffix(srv[0].File, "sites/a.conf") || srv[1].Block[0].Arg(0) != "b" {
		t.Fatalf("included servers in wrong order or place: %+v", srv)
	}
	if len(notes) != 1 {
		t.Errorf("missing fastcgi_params gave notes %q, want one", notes)
	}

	write(t, dir, "loop/x.conf", "include loop/y.conf;\n")
	write(t, dir, "loop/y.conf", "include loop/x.conf;\n")
	cyc := write(t, dir, "cycle.conf", "include loop/x.conf;\n")
	_, err = Parse(cyc, Options{})
	if err == nil || !strings.Contains(err.Error(), "include cycle") || !strings.Contains(err.Error(), "y.conf:1:1") {
		t.Errorf("cycle: %v", err)
	}
	missing := write(t, dir, "missing.conf", "http {\n  include nothere.conf;\n}\n")
	if _, err = Parse(missing, Options{}); err == nil || !strings.Contains(err.Error(), "missing.conf:2:3: open") {
		t.Errorf("missing include: %v", err)
	}
	self := write(t, dir, "self.conf", "include self.conf;\n")
	if _, err = Parse(self, Options{}); err == nil || !strings.Contains(err.Error(), "include cycle") {
		t.Errorf("self include: %v", err)
	}
}

// TestHugeFile: a 1 MB configuration (some 20,000 locations) converts in linear time; a file over
// MaxFileSize is refused with its size, not read.
func TestHugeFile(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("http { server { listen 80; root /srv;\n")
	for i := 0; b.Len() < 1<<20; i++ {
		b.WriteString("location /p")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString("/")
		b.WriteString(itoa(i))
		b.WriteString("/ { expires max; add_header X-A b; }\n")
	}
	b.WriteString("} }\n")
	p := write(t, dir, "big.conf", b.String())
	start := time.Now()
	res, err := Import(p, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("1 MB took %v", d)
	}
	if len(res.YAML) == 0 {
		t.Fatal("no output")
	}
	f, _ := os.Create(filepath.Join(dir, "huge.conf"))
	f.Truncate(MaxFileSize + 1)
	f.Close()
	if _, err := Parse(filepath.Join(dir, "huge.conf"), Options{}); err == nil || !strings.Contains(err.Error(), "bytes, more than") {
		t.Errorf("huge file: %v", err)
	}
}

func itoa(i int) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(i)) }

func fmtInt(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}
