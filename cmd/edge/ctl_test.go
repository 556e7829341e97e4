package main

import (
	"io"
	"path/filepath"
	"testing"
)

// TestConfigArg: reload finds the running edge by the configuration path
// its flags resolved, with the same default as our own -config flag
// (defaultConfigPath).
func TestConfigArg(t *testing.T) {
	const cwd = "/home/op"
	for _, tt := range []struct {
		env  string
		args []string
		want string
	}{
		{"", nil, "/etc/edge/config.yaml"},
		{"/srv/edge.yaml", nil, "/srv/edge.yaml"},
		{"rel/edge.yaml", nil, "/home/op/rel/edge.yaml"},
		{"/srv/edge.yaml", []string{"-config", "a.yaml"}, "/home/op/a.yaml"},
		{"", []string{"--config=/etc/x.yaml"}, "/etc/x.yaml"},
		{"", []string{"-config=../x.yaml"}, "/home/x.yaml"},
	} {
		t.Setenv("EDGE_CONFIG", tt.env)
		if got := configArg(tt.args, cwd); got != tt.want {
			t.Errorf("EDGE_CONFIG=%q configArg(%q) = %q, want %q", tt.env, tt.args, got, tt.want)
		}
		// The process itself, started with these arguments in cwd.
		fs, path := newFlags("run", "run", io.Discard)
		if err := fs.Parse(tt.args); err != nil {
			t.Fatal(err)
		}
		if got := filepath.Join(cwd, *path); filepath.IsAbs(*path) && *path != tt.want || !filepath.IsAbs(*path) && got != tt.want {
			t.Errorf("EDGE_CONFIG=%q args %q: -config = %q, want %q", tt.env, tt.args, *path, tt.want)
		}
	}
}
