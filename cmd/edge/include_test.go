package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestReloadReadsIncludes: a reload after adding a file to sites/ serves
// its site; a reload with a broken included file keeps the old
// configuration and names that file; edge validate does too.
func TestReloadReadsIncludes(t *testing.T) {
	dir := t.TempDir()
	httpAddr, adminAddr := freePort(t), freePort(t)
	site := func(host, body string) string {
		return fmt.Sprintf("sites:\n  - hosts: [%s]\n    routes: [{ path: /, respond: { body: %s } }]\n", host, body)
	}
	cfg := writeFile(t, dir, "edge.yaml", fmt.Sprintf("listen: { http: %q }\nadmin: %q\ninclude: [sites/*.yaml]\n", httpAddr, adminAddr))
	writeFile(t, dir, "sites/a.yaml", site("a.test", "from-a"))
	p := startEdgeAt(t, dir, cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	get := func(host string) string {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+httpAddr+"/", nil)
		req.Host = host
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get("a.test"); got != "from-a" {
		t.Fatalf("a.test = %q", got)
	}
	if got := get("b.test"); got == "from-b" {
		t.Fatal("b.test served before its file exists")
	}

	writeFile(t, dir, "sites/b.yaml", site("b.test", "from-b"))
	if out, errOut, code := runEdge(t, "reload", "-config", cfg); code != 0 {
		t.Fatalf("reload = %d %q %q", code, out, errOut)
	}
	if got := get("b.test"); got != "from-b" {
		t.Fatalf("after the reload b.test = %q", got)
	}

	broken := writeFile(t, dir, "sites/c.yaml", site("c.test", "from-c")+"    colour: red\n")
	want := broken + ":4:5: sites[2].colour: unknown key"
	if _, errOut, code := runEdge(t, "reload", "-config", cfg); code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("reload with a broken include = %d %q, want exit 1 naming %s", code, errOut, want)
	}
	if _, errOut, code := runEdge(t, "validate", "-config", cfg); code == 0 || !strings.Contains(errOut, want) {
		t.Fatalf("validate with a broken include = %d %q, want %s", code, errOut, want)
	}
	for host, body := range map[string]string{"a.test": "from-a", "b.test": "from-b"} {
		if got := get(host); got != body {
			t.Errorf("after the failed reload %s = %q, want %q", host, got, body)
		}
	}
	if got := get("c.test"); got == "from-c" {
		t.Error("the broken file's site is served")
	}
}
