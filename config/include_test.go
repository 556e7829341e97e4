package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const respondSite = "  - hosts: [%s]\n    routes: [{ path: /, respond: { body: ok } }]\n"

func site(host string) string { return strings.Replace(respondSite, "%s", host, 1) }

// loadProblems loads dir/edge.yaml and returns its error text ("" when it
// loads) and the config.
func loadProblems(t *testing.T, dir string) (*Config, string) {
	t.Helper()
	c, err := Load(filepath.Join(dir, "edge.yaml"))
	if err == nil {
		return c, ""
	}
	var ps Problems
	if !errors.As(err, &ps) {
		t.Fatalf("error is not Problems: %v", err)
	}
	return nil, err.Error()
}

func TestIncludeMergesSitesInOrder(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"edge.yaml":        "listen: { http: ':8080' }\ninclude: [sites/*.yaml, extra.yaml]\nsites:\n" + site("main.test"),
		"sites/b.yaml":     "sites:\n" + site("b.test"),
		"sites/a.yaml":     "sites:\n" + site("a.test") + site("a2.test"),
		"sites/skip.txt":   "not yaml: [",
		"extra.yaml":       "include: [more/c.yaml]\n",
		"more/c.yaml":      "sites:\n" + site("c.test"),
		"sites/empty.yaml": "",
	})
	c, errs := loadProblems(t, dir)
	if errs != "" {
		t.Fatal(errs)
	}
	var got []string
	for _, s := range c.Sites {
		got = append(got, s.Hosts[0])
	}
	if want := "main.test a.test a2.test b.test c.test"; strings.Join(got, " ") != want {
		t.Errorf("sites = %v, want %s", got, want)
	}
}

func TestIncludeProblemsNameTheIncludedFile(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error, each with its FILE:LINE:COL
	}{
		{
			name: "decode and validation errors",
			files: map[string]string{
				"edge.yaml":    "include: [sites/*.yaml]\nsites:\n" + site("main.test"),
				"sites/a.yaml": "sites:\n  - hosts: [a.test]\n    routes:\n      - path: /\n        respond: { body: ok }\n        colour: red\n      - path: nope\n        respond: { body: ok }\n",
			},
			want: []string{
				"sites/a.yaml:6:9: sites[1].routes[0].colour: unknown key",
				"sites/a.yaml:7:9: sites[1].routes[1].path: path \"nope\" must start with /",
			},
		},
		{
			name: "listen in an included file",
			files: map[string]string{
				"edge.yaml": "include: [a.yaml]\nsites:\n" + site("main.test"),
				"a.yaml":    "sites:\n" + site("a.test") + "listen: { http: ':1' }\n",
			},
			want: []string{"a.yaml:4:1: listen: not allowed in an included file"},
		},
		{
			name: "missing file",
			files: map[string]string{
				"edge.yaml": "sites:\n" + site("main.test") + "include:\n  - ok.yaml\n  - gone.yaml\n",
				"ok.yaml":   "sites: []\n",
			},
			want: []string{"edge.yaml:6:5: include[1]: included file ", "gone.yaml does not exist"},
		},
		{
			name: "cycle",
			files: map[string]string{
				"edge.yaml": "include: [a.yaml]\nsites:\n" + site("main.test"),
				"a.yaml":    "include: [b.yaml]\n",
				"b.yaml":    "include: [a.yaml]\n",
			},
			want: []string{"b.yaml:1:11: include[0]: include cycle: ", "a.yaml -> ", "b.yaml -> "},
		},
		{
			name: "duplicate host across files",
			files: map[string]string{
				"edge.yaml": "include: [a.yaml]\nsites:\n" + site("dup.test"),
				"a.yaml":    "sites:\n" + site("dup.test"),
			},
			want: []string{"a.yaml:2:13: sites[1].hosts[0]: host \"dup.test\" is also in sites[0].hosts[0] (", "edge.yaml:3)"},
		},
		{
			name: "syntax error",
			files: map[string]string{
				"edge.yaml": "include: [a.yaml]\nsites:\n" + site("main.test"),
				"a.yaml":    "sites:\n  - hosts: [a.test\n",
			},
			want: []string{"a.yaml:", "invalid YAML"},
		},
		{
			name: "a directory",
			files: map[string]string{
				"edge.yaml":  "include: [dir]\nsites:\n" + site("main.test"),
				"dir/x.yaml": "",
			},
			want: []string{"edge.yaml:1:11: include[0]: included file ", "is not a regular file"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, tc.files)
			_, errs := loadProblems(t, dir)
			if errs == "" {
				t.Fatal("loaded, want an error")
			}
			for _, w := range tc.want {
				if !strings.Contains(errs, w) {
					t.Errorf("error %q\nlacks %q", errs, w)
				}
			}
			for _, line := range strings.Split(errs, "\n") {
				if !strings.HasPrefix(line, dir) {
					t.Errorf("problem without its file: %q", line)
				}
			}
		})
	}
}

func TestIncludeGlobMatchingNothingWarns(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"edge.yaml": "include: [sites-enabled/*.yaml]\nsites:\n" + site("main.test"),
	})
	c, errs := loadProblems(t, dir)
	if errs != "" {
		t.Fatal(errs)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0].String(), "edge.yaml:1:11: warning: include[0]: \"sites-enabled/*.yaml\" matches no file") {
		t.Errorf("warnings = %v", c.Warnings)
	}
}

// TestIncludeSitesOnly: with every site in included files the main file
// needs none of its own.
func TestIncludeSitesOnly(t *testing.T) {
	dir := writeTree(t, map[string]string{
		"edge.yaml":    "include: [sites/*.yaml]\n",
		"sites/a.yaml": "sites:\n" + site("a.test"),
	})
	if c, errs := loadProblems(t, dir); errs != "" || len(c.Sites) != 1 {
		t.Fatalf("%v %s", c, errs)
	}
}
