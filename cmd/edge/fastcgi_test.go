package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/internal/testutil"
)

// TestLaravelRecipe runs the README's PHP-FPM recipe with the real binary
// and php-fpm: a static route on / whose missing files fall back to a
// fastcgi route (nginx try_files $uri $uri/ /index.php?$query_string).
// Files are served, pretty URLs reach index.php with their REQUEST_URI,
// .php files run and their source is never sent, an upload beyond
// max_body_size is 413 before PHP sees it, and a Proxy header is not
// passed (httpoxy).
func TestLaravelRecipe(t *testing.T) {
	fpm := testutil.StartFPM(t, 2, false)
	dir := t.TempDir()
	pub := filepath.Join(dir, "public")
	os.MkdirAll(filepath.Join(pub, "css"), 0o755)
	os.MkdirAll(filepath.Join(pub, "uploads"), 0o755)
	writeFile(t, pub, "css/app.css", "body{}")
	writeFile(t, pub, "index.php", `<?php
echo "laravel ", $_SERVER['REQUEST_URI'], " ", $_SERVER['SCRIPT_NAME'], " q=", $_GET['q'] ?? "",
  " len=", strlen(file_get_contents('php://input')), " proxy=", $_SERVER['HTTP_PROXY'] ?? "none";
file_put_contents(__DIR__ . '/../seen', $_SERVER['REQUEST_URI'] . "\n", FILE_APPEND);
`)
	writeFile(t, pub, "wp-login.php", `<?php $secret = "s3cret"; echo "login ran";`)
	writeFile(t, pub, "uploads/evil.jpg", `<?php echo "PWNED";`)
	httpAddr := serveSites(t, dir, fmt.Sprintf(`
  - routes:
      - path: /
        max_body_size: 64KiB
        static: { root: public, fallback: { route: /index.php } }
      - path: /index.php
        max_body_size: 64KiB
        fastcgi: { upstreams: [%q], root: public }
`, fpm.Addr))
	base := "http://" + httpAddr
	c := &http.Client{Timeout: 10 * time.Second}
	for _, tc := range []struct{ path, want string }{
		{"/css/app.css", "body{}"},
		{"/", "laravel / /index.php q= len=0 proxy=none"},
		{"/users/42?q=x", "laravel /users/42?q=x /index.php q=x len=0 proxy=none"},
		{"/wp-login.php", "login ran"},
		{"/index.php/users/1", "laravel /index.php/users/1 /index.php q= len=0 proxy=none"},
	} {
		req, _ := http.NewRequest("GET", base+tc.path, nil)
		req.Header.Set("Proxy", "http://evil.example")
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || string(b) != tc.want {
			t.Errorf("GET %s = %d %q, want 200 %q", tc.path, res.StatusCode, b, tc.want)
		}
	}
	for _, p := range []string{"/uploads/evil.jpg/x.php", "/missing.php"} {
		code, body := httpGet(t, c, base+p)
		if code != 404 || strings.Contains(body, "PWNED") {
			t.Errorf("GET %s = %d %q, want 404", p, code, body)
		}
	}

	res, err := c.Post(base+"/users", "text/plain", bytes.NewReader(make([]byte, 1000)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "len=1000") {
		t.Errorf("POST 1000 bytes = %d %q", res.StatusCode, b)
	}
	res, err = c.Post(base+"/too-big", "text/plain", bytes.NewReader(make([]byte, 100<<10)))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("POST beyond max_body_size = %d, want 413", res.StatusCode)
	}
	seen, _ := os.ReadFile(filepath.Join(dir, "seen"))
	if strings.Contains(string(seen), "/too-big") {
		t.Errorf("PHP saw the request over max_body_size: %q", seen)
	}
}

// TestFastCGIConfigErrors: a bad fastcgi block fails validation with the
// file, line and key; a socket that does not exist yet is a warning.
func TestFastCGIConfigErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := writeFile(t, dir, "edge.yaml", `listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        fastcgi:
          upstreams: ["http://127.0.0.1:9000"]
          root: /nonexistent-root
          split_path: php
`)
	_, stderr, code := runEdge(t, "validate", "-config", cfg)
	for _, want := range []string{
		"edge.yaml:6:23: sites[0].routes[0].fastcgi.upstreams[0]:",
		"edge.yaml:7:11: sites[0].routes[0].fastcgi.root: directory /nonexistent-root",
		"edge.yaml:8:11: sites[0].routes[0].fastcgi.split_path:",
	} {
		if code == 0 || !strings.Contains(stderr, want) {
			t.Errorf("validate: exit %d, want an error %q in:\n%s", code, want, stderr)
		}
	}
	os.Mkdir(filepath.Join(dir, "pub"), 0o755)
	cfg = writeFile(t, dir, "edge2.yaml", `listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        fastcgi: { upstreams: ["unix:/nonexistent/php-fpm.sock"], root: pub }
`)
	stdout, stderr, code := runEdge(t, "validate", "-config", cfg)
	if code != 0 || !strings.Contains(stdout+stderr, "warning: sites[0].routes[0].fastcgi.upstreams[0]: socket /nonexistent/php-fpm.sock does not exist yet") {
		t.Errorf("validate missing socket: exit %d, want 0 with a warning:\n%s%s", code, stdout, stderr)
	}
}
