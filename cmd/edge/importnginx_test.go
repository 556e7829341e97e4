package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// sideReq is one request sent to nginx and to edge; the answers must have
// the same status and Location, and the same body unless statusOnly (the
// two servers' own error pages differ).
type sideReq struct {
	path, user, pass string
	statusOnly       bool
}

// TestImportNginxSideBySide runs the real nginx on corpus configurations
// and the real edge on what import-nginx made of them, both in front of
// the same loopback backend and files, and requires the same answers.
func TestImportNginxSideBySide(t *testing.T) {
	if _, err := os.Stat("/usr/sbin/nginx"); err != nil {
		t.Fatal("nginx not found at /usr/sbin/nginx: scripts/test.sh installs it (apt-get install nginx)")
	}
	// Three backends answering alike, so that balancing order does not
	// change the bodies.
	var backends []string
	for range 3 {
		b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "backend %s %s", r.Method, r.URL.RequestURI())
		}))
		defer b.Close()
		backends = append(backends, strings.TrimPrefix(b.URL, "http://"))
	}
	dead := freePort(t) // nothing listens here: a dead upstream
	files := map[string]string{
		"srv/spa/dist/index.html":    "<h1>spa</h1>",
		"srv/spa/dist/assets/app.js": "console.log(1)",
		"srv/rw/index.html":          "rw home",
		"srv/rw/posts/1":             "post",
		"srv/errsite/index.html":     "err home",
		"srv/errpages/404.html":      "custom 404",
		"srv/errpages/50x.html":      "custom 50x",
	}
	cases := []struct {
		name, host string
		reqs       []sideReq
	}{
		{"02-spa-api", "app.example.com", []sideReq{
			{path: "/"}, {path: "/dashboard/settings"}, {path: "/assets/app.js"},
			{path: "/api/users?id=1"}, {path: "/healthz"},
		}},
		{"08-loadbalance-backup", "lb.example.com", []sideReq{{path: "/"}, {path: "/a/b?c=d"}, {path: "/x"}}},
		{"16-rewrites-returns", "www.example.com", []sideReq{
			{path: "/blog/7"}, {path: "/shop/item/42"}, {path: "/shop/sale"}, {path: "/shop/other"},
			{path: "/old/x"}, {path: "/moved?a=1"}, {path: "/gone", statusOnly: true}, {path: "/posts/1"}, {path: "/nothing", statusOnly: true},
		}},
		{"06-basic-auth-admin", "admin.example.com", []sideReq{
			{path: "/admin/", statusOnly: true}, {path: "/admin/", user: "ops", pass: "wrong", statusOnly: true},
			{path: "/admin/x", user: "ops", pass: "open sesame"}, {path: "/internal/", statusOnly: true}, {path: "/"},
		}},
		{"13-error-pages", "errors.example.com", []sideReq{{path: "/"}, {path: "/missing"}, {path: "/app/x"}}},
		{"05-ratelimit-api", "api.example.com", []sideReq{
			{path: "/v1/a"}, {path: "/v1/b"}, {path: "/v1/c"}, {path: "/v1/d", statusOnly: true}, {path: "/v1/e", statusOnly: true},
			{path: "/other", statusOnly: true},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			os.Chmod(dir, 0o755) // nginx's workers run as nobody
			os.Chmod(filepath.Dir(dir), 0o755)
			for name, body := range files {
				writeFile(t, dir, name, body)
			}
			hash, _ := bcrypt.GenerateFromPassword([]byte("open sesame"), bcrypt.MinCost)
			writeFile(t, dir, "etc/nginx/htpasswd", "ops:"+string(hash)+"\n")
			src, err := os.ReadFile(filepath.Join("..", "..", "nginxconf", "testdata", "corpus", tc.name, "nginx.conf"))
			if err != nil {
				t.Fatal(err)
			}
			conf := string(src)
			for i, p := range []string{"9001", "9002", "9003"} {
				conf = strings.ReplaceAll(conf, "127.0.0.1:"+p, backends[i])
			}
			conf = strings.ReplaceAll(conf, "127.0.0.1:9009", dead)
			conf = strings.ReplaceAll(conf, " /srv/", " "+dir+"/srv/")
			conf = strings.ReplaceAll(conf, " /etc/nginx/", " "+dir+"/etc/nginx/")
			listenRE := regexp.MustCompile(`listen\s+80\b[^;]*;`)
			nginxAddr, edgeAddr := freePort(t), freePort(t)
			conf = strings.Replace(conf, "http {", fmt.Sprintf("http {\n    access_log off;\n    client_body_temp_path %[1]s/body;\n    proxy_temp_path %[1]s/proxy;\n    fastcgi_temp_path %[1]s/fcgi;\n    uwsgi_temp_path %[1]s/uwsgi;\n    scgi_temp_path %[1]s/scgi;\n", dir), 1)
			ngxConf := writeFile(t, dir, "nginx/nginx.conf", listenRE.ReplaceAllString(conf, "listen "+nginxAddr+";"))
			edgeSrc := writeFile(t, dir, "edge-src/nginx.conf", listenRE.ReplaceAllString(conf, "listen "+edgeAddr+";"))

			startNginx(t, filepath.Join(dir, "nginx"), ngxConf, nginxAddr)

			out := filepath.Join(dir, "edge.yaml")
			if _, errOut, code := runEdge(t, "import-nginx", edgeSrc, "-o", out); code != 0 {
				t.Fatalf("import-nginx failed: %s", errOut)
			}
			y, _ := os.ReadFile(out)
			admin := freePort(t)
			cfg := writeFile(t, dir, "edge.yaml", fmt.Sprintf("admin: %q\n%s", admin, y))
			p := startEdgeAt(t, dir, cfg)
			p.waitHTTP("http://"+admin+"/healthz", 20*time.Second)

			// All requests to nginx, then the same to edge (limits count).
			ng := make([]answer, len(tc.reqs))
			for i, r := range tc.reqs {
				ng[i] = ask(t, nginxAddr, tc.host, r)
			}
			for i, r := range tc.reqs {
				e := ask(t, edgeAddr, tc.host, r)
				n := ng[i]
				// Bodies of redirects are each server's own text.
				sameBody := r.statusOnly || n.location != "" || e.body == n.body
				if e.status != n.status || e.location != n.location || !sameBody {
					t.Errorf("GET %s: nginx %d %q Location %q; edge %d %q Location %q", r.path, n.status, n.body, n.location, e.status, e.body, e.location)
				}
			}
			if t.Failed() {
				t.Logf("edge.yaml:\n%s", y)
			}
		})
	}
}

type answer struct {
	status         int
	body, location string
}

func ask(t *testing.T, addr, host string, r sideReq) answer {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", "http://"+addr+r.path, nil)
	req.Host = host
	if r.user != "" {
		req.SetBasicAuth(r.user, r.pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s on %s: %v", r.path, addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, body: string(b)}
	if loc := resp.Header.Get("Location"); loc != "" {
		// nginx makes a path absolute with the host and its own port;
		// compare the resolved URL without the port.
		u, err := url.Parse("http://" + host + r.path)
		if err == nil {
			if l, err := u.Parse(loc); err == nil {
				l.Host = l.Hostname()
				loc = l.String()
			}
		}
		a.location = loc
	}
	return a
}

// startNginx runs nginx on conf from dir (TESTING.md §11) until the test
// ends and waits for addr to accept.
func startNginx(t *testing.T, dir, conf, addr string) {
	t.Helper()
	cmd := exec.Command("/usr/sbin/nginx", "-p", dir, "-c", conf, "-g",
		// One process: no workers left holding the output after Kill.
		fmt.Sprintf("daemon off; master_process off; pid %s/nginx.pid; error_log %s/error.log;", dir, dir))
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		if t.Failed() {
			e, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx output:\n%s\n%s", log.String(), e)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			t.Fatalf("nginx exited: %s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx did not listen on %s: %s", addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestImportNginxBrokenFile: a file that does not parse gives FILE:LINE:COL
// and exit 1, and -o is not written (an old edge.yaml stays as it was).
func TestImportNginxBrokenFile(t *testing.T) {
	dir := t.TempDir()
	src := writeFile(t, dir, "nginx.conf", "http {\n  server {\n    return 200 \"unterminated;\n  }\n}\n")
	out := writeFile(t, dir, "edge.yaml", "old\n")
	_, errOut, code := runEdge(t, "import-nginx", src, "-o", out)
	if code != 1 || !strings.Contains(errOut, src+":3:16: unterminated quoted string") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	if b, _ := os.ReadFile(out); string(b) != "old\n" {
		t.Errorf("edge.yaml was overwritten: %q", b)
	}
}
