package fastcgi_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"edge/config"
	"edge/fastcgi"
	"edge/internal/testutil"
	"edge/proxy"
)

// These tests run edge's fastcgi route as cmd/edge builds it (the proxy
// handler with the FastCGI Transport, behind fastcgi.Scripts) against a
// real php-fpm pool serving testdata/root.

// syncBuffer is the tests' one concurrent-safe output buffer.
type syncBuffer = testutil.Buffer

type route struct {
	url  string
	log  *syncBuffer
	dial atomic.Int64 // connections dialled
}

func docRoot(t testing.TB) string {
	root, err := filepath.Abs("testdata/root")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// newRoute serves a fastcgi route configured by snippet (the YAML under
// "fastcgi:", without root) on a loopback server.
func newRoute(t *testing.T, snippet string) *route {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: {http: \"127.0.0.1:0\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: /\n        max_body_size: 1MiB\n        fastcgi:\n          root: %q\n", docRoot(t))
	for _, line := range strings.Split(strings.TrimSpace(snippet), "\n") {
		b.WriteString("          " + line + "\n")
	}
	c, err := config.Parse("edge.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, b.String())
	}
	fc := c.Sites[0].Routes[0].FastCGI
	rt := &route{log: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(rt.log, nil))
	p, err := proxy.New(fc.Pool, proxy.Options{Log: log, Transport: func(dial proxy.DialFunc) proxy.RoundTripper {
		counted := func(ctx context.Context, network, addr string) (net.Conn, error) {
			rt.dial.Add(1)
			return dial(ctx, network, addr)
		}
		return fastcgi.NewTransport(fc, counted, log)
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	srv := httptest.NewServer(fastcgi.Scripts(fc, p))
	t.Cleanup(srv.Close)
	rt.url = srv.URL
	return rt
}

var client = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", req.Method, req.URL, err)
	}
	return res, string(b)
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	return do(t, req)
}

// server is what index.php reports of $_SERVER.
type server struct {
	RequestURI     string            `json:"REQUEST_URI"`
	ScriptName     string            `json:"SCRIPT_NAME"`
	ScriptFilename string            `json:"SCRIPT_FILENAME"`
	PathInfo       *string           `json:"PATH_INFO"`
	QueryString    string            `json:"QUERY_STRING"`
	Method         string            `json:"REQUEST_METHOD"`
	ContentLength  string            `json:"CONTENT_LENGTH"`
	RemoteAddr     string            `json:"REMOTE_ADDR"`
	Scheme         string            `json:"REQUEST_SCHEME"`
	XTest          *string           `json:"HTTP_X_TEST"`
	Proxy          *string           `json:"HTTP_PROXY"`
	AppEnv         *string           `json:"APP_ENV"`
	ServerName     string            `json:"SERVER_NAME"`
	Get            map[string]string `json:"get"`
	BodyLen        int               `json:"body_len"`
	BodyMD5        string            `json:"body_md5"`
}

func decode(t *testing.T, body string) server {
	t.Helper()
	var s server
	if err := json.Unmarshal([]byte(body), &s); err != nil {
		t.Fatalf("not index.php's JSON: %v: %q", err, body)
	}
	return s
}

func TestPHPRequests(t *testing.T) {
	fpm := testutil.StartFPM(t, 2, false)
	rt := newRoute(t, fmt.Sprintf("upstreams: [%q]\nenv: {APP_ENV: test}", fpm.Addr))
	root := docRoot(t)

	t.Run("index", func(t *testing.T) {
		res, body := get(t, rt.url+"/")
		s := decode(t, body)
		if res.StatusCode != 200 || s.ScriptName != "/index.php" || s.ScriptFilename != root+"/index.php" || s.RequestURI != "/" {
			t.Errorf("GET / = %d %+v, want 200 from /index.php", res.StatusCode, s)
		}
		if s.RemoteAddr != "127.0.0.1" || s.Scheme != "http" || s.AppEnv == nil || *s.AppEnv != "test" || s.ServerName != "127.0.0.1" {
			t.Errorf("CGI variables %+v: want REMOTE_ADDR 127.0.0.1, REQUEST_SCHEME http, APP_ENV test", s)
		}
	})
	t.Run("front controller keeps REQUEST_URI and query", func(t *testing.T) {
		_, body := get(t, rt.url+"/users/42?tab=orders&x=%20y")
		s := decode(t, body)
		if s.ScriptName != "/index.php" || s.RequestURI != "/users/42?tab=orders&x=%20y" ||
			s.QueryString != "tab=orders&x=%20y" || s.Get["tab"] != "orders" || s.Get["x"] != " y" {
			t.Errorf("GET /users/42?… = %+v", s)
		}
	})
	t.Run("path info", func(t *testing.T) {
		_, body := get(t, rt.url+"/info.php/foo/bar")
		if body != "info /foo/bar /info.php" {
			t.Errorf("GET /info.php/foo/bar = %q, want PATH_INFO /foo/bar of /info.php", body)
		}
	})
	t.Run("directory index", func(t *testing.T) {
		_, body := get(t, rt.url+"/admin/")
		if body != "admin index" {
			t.Errorf("GET /admin/ = %q, want admin/index.php", body)
		}
	})
	t.Run("client header reaches PHP, Proxy does not", func(t *testing.T) {
		req, _ := http.NewRequest("GET", rt.url+"/h", nil)
		req.Header.Set("X-Test", "hello")
		req.Header.Set("Proxy", "http://evil.example:8080")
		_, body := do(t, req)
		s := decode(t, body)
		if s.XTest == nil || *s.XTest != "hello" {
			t.Errorf("HTTP_X_TEST = %v, want hello", s.XTest)
		}
		if s.Proxy != nil {
			t.Errorf("HTTP_PROXY = %q reached PHP (httpoxy)", *s.Proxy)
		}
	})
	t.Run("POST bodies", func(t *testing.T) {
		for _, size := range []int{10, 200 << 10} { // within and beyond request_buffering
			data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
			sum := md5.Sum(data)
			for _, chunked := range []bool{false, true} {
				var r io.Reader = bytes.NewReader(data)
				if chunked {
					r = io.MultiReader(r) // no length known: sent chunked
				}
				req, _ := http.NewRequest("POST", rt.url+"/upload", r)
				req.Header.Set("Content-Type", "application/octet-stream")
				res, body := do(t, req)
				s := decode(t, body)
				if res.StatusCode != 200 || s.BodyLen != len(data) || s.BodyMD5 != hex.EncodeToString(sum[:]) || s.Method != "POST" {
					t.Errorf("POST %d bytes (chunked %v): %d, PHP read %d bytes (md5 ok %v)", len(data), chunked, res.StatusCode, s.BodyLen, s.BodyMD5 == hex.EncodeToString(sum[:]))
				}
			}
		}
	})
	t.Run("status and headers set by PHP", func(t *testing.T) {
		res, body := get(t, rt.url+"/created")
		if res.StatusCode != 201 || res.Header.Get("Location") != "/users/7" || res.Header.Get("X-From") != "php" || body != "made" {
			t.Errorf("GET /created = %d Location %q X-From %q %q, want 201 /users/7 php made",
				res.StatusCode, res.Header.Get("Location"), res.Header.Get("X-From"), body)
		}
		if _, ok := res.Header["Status"]; ok {
			t.Errorf("the CGI Status header reached the client")
		}
	})
	t.Run("500 from PHP", func(t *testing.T) {
		res, body := get(t, rt.url+"/boom")
		if res.StatusCode != 500 || body != "boom" {
			t.Errorf("GET /boom = %d %q, want PHP's own 500 boom", res.StatusCode, body)
		}
	})
	t.Run("stderr is logged", func(t *testing.T) {
		get(t, rt.url+"/stderr")
		testutil.WaitFor(t, 5*time.Second, "stderr in the log", func() bool {
			return strings.Contains(rt.log.String(), "note from php")
		})
	})
}

// TestStreamedResponse: what PHP flush()es reaches the client before the
// script writes the rest (the script waits for the test to have the
// first chunk).
func TestStreamedResponse(t *testing.T) {
	fpm := testutil.StartFPM(t, 2, false)
	rt := newRoute(t, fmt.Sprintf("upstreams: [%q]", fpm.Addr))
	gate := filepath.Join(t.TempDir(), "go")
	res, err := client.Get(rt.url + "/stream?go=" + gate)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	first, err := br.ReadString('\n')
	if err != nil || first != "first\n" {
		t.Fatalf("first chunk = %q, %v", first, err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "last\n" {
		t.Fatalf("rest = %q, %v", rest, err)
	}
	if res.ContentLength != -1 {
		t.Errorf("a streamed response has Content-Length %d: it cannot have been known", res.ContentLength)
	}
}

// TestShortResponseHasLength: a response that is complete when its header
// arrives (most pages) goes out with its Content-Length, not chunked.
func TestShortResponseHasLength(t *testing.T) {
	fpm := testutil.StartFPM(t, 2, false)
	rt := newRoute(t, fmt.Sprintf("upstreams: [%q]", fpm.Addr))
	res, body := get(t, rt.url+"/users/42")
	if res.StatusCode != 200 || res.ContentLength != int64(len(body)) || len(res.TransferEncoding) != 0 {
		t.Errorf("status %d, Content-Length %d for %d bytes, Transfer-Encoding %v", res.StatusCode, res.ContentLength, len(body), res.TransferEncoding)
	}
}

// TestPathSafety: no request runs a file that is not a script, or leaves
// the root.
func TestPathSafety(t *testing.T) {
	fpm := testutil.StartFPM(t, 2, false)
	rt := newRoute(t, fmt.Sprintf("upstreams: [%q]", fpm.Addr))
	for _, tc := range []struct {
		path     string
		status   int
		frontCtl bool // answered by index.php
	}{
		{"/uploads/evil.jpg/x.php", 404, false}, // cgi.fix_pathinfo: must not run evil.jpg
		{"/uploads/evil.jpg", 200, true},        // not a script: the front controller
		{"/uploads/evil.jpg/", 200, true},
		{"/missing.php", 404, false},
		{"/../../../../etc/passwd", 200, true},
		{"/..%2f..%2f..%2fetc%2fpasswd.php", 404, false},
		{"/%2e%2e/%2e%2e/fastcgi/fastcgi_test.php", 404, false},
		{"/index.php%00.jpg", 200, true}, // no script segment: the front controller
		{"/.php", 200, true},
	} {
		res, body := get(t, rt.url+tc.path)
		if strings.Contains(body, "PWNED") {
			t.Errorf("GET %s ran evil.jpg as PHP", tc.path)
		}
		if res.StatusCode != tc.status {
			t.Errorf("GET %s = %d, want %d", tc.path, res.StatusCode, tc.status)
		}
		if tc.frontCtl {
			if s := decode(t, body); s.ScriptName != "/index.php" {
				t.Errorf("GET %s ran %s, want /index.php", tc.path, s.ScriptName)
			}
		}
	}
}

func TestHugeHeaderFromPHPIs502(t *testing.T) {
	fpm := testutil.StartFPM(t, 2, false)
	rt := newRoute(t, fmt.Sprintf("upstreams: [%q]", fpm.Addr))
	res, _ := get(t, rt.url+"/bigheader")
	if res.StatusCode != 502 {
		t.Errorf("a 2 MiB response header = %d, want 502", res.StatusCode)
	}
	if res, _ := get(t, rt.url+"/"); res.StatusCode != 200 {
		t.Errorf("next request = %d, want 200", res.StatusCode)
	}
}

func TestKeepAliveReusesConnections(t *testing.T) {
	fpm := testutil.StartFPM(t, 2, false)
	rt := newRoute(t, fmt.Sprintf("upstreams: [%q]\nkeepalive: 1", fpm.Addr))
	pids := map[int]bool{}
	for range 5 {
		res, body := get(t, rt.url+"/")
		if res.StatusCode != 200 {
			t.Fatalf("GET / = %d", res.StatusCode)
		}
		var s struct{ Pid int }
		json.Unmarshal([]byte(body), &s)
		pids[s.Pid] = true
	}
	if n := rt.dial.Load(); n != 1 {
		t.Errorf("5 sequential requests dialled %d connections, want 1 (keepalive)", n)
	}
	if len(pids) != 1 {
		t.Errorf("5 requests on one connection ran in %d workers, want 1", len(pids))
	}

	// keepalive 0 (the default): a connection per request.
	rt0 := newRoute(t, fmt.Sprintf("upstreams: [%q]", fpm.Addr))
	for range 3 {
		get(t, rt0.url+"/")
	}
	if n := rt0.dial.Load(); n != 3 {
		t.Errorf("keepalive 0: 3 requests dialled %d connections, want 3", n)
	}
}

// TestFPMDownAndBack: a stopped pool answers 502 and comes back when
// php-fpm does; with two pools the other takes the requests and the dead
// one is marked down.
func TestFPMDownAndBack(t *testing.T) {
	a := testutil.StartFPM(t, 2, false)
	b := testutil.StartFPM(t, 2, true) // one over TCP
	one := newRoute(t, fmt.Sprintf("upstreams: [%q]", a.Addr))
	two := newRoute(t, fmt.Sprintf("upstreams: [%q, %q]\nfail_timeout: 1m", a.Addr, b.Addr))

	a.Stop()
	if res, _ := get(t, one.url+"/"); res.StatusCode != 502 {
		t.Errorf("php-fpm stopped: %d, want 502", res.StatusCode)
	}
	for i := range 4 {
		if res, _ := get(t, two.url+"/"); res.StatusCode != 200 {
			t.Errorf("two pools, one stopped: request %d = %d, want 200 from the other", i, res.StatusCode)
		}
	}
	if n := strings.Count(two.log.String(), "marked_down=true"); n != 1 {
		t.Errorf("stopped pool marked down %d times, want once (then skipped):\n%s", n, two.log.String())
	}
	a.Start()
	if res, _ := get(t, one.url+"/"); res.StatusCode != 200 {
		t.Errorf("php-fpm restarted: %d, want 200", res.StatusCode)
	}
}

// TestNotFastCGIPeers: a server that is not FastCGI, or that dies mid
// record, or never answers, gives 502 or 504 within bounds, never a
// hang.
func TestNotFastCGIPeers(t *testing.T) {
	peer := func(t *testing.T, serve func(c net.Conn)) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					serve(c)
				}()
			}
		}()
		return l.Addr().String()
	}
	readSome := func(c net.Conn) { c.Read(make([]byte, 4096)) }
	for _, tc := range []struct {
		name   string
		serve  func(c net.Conn)
		status int
	}{
		{"http server", func(c net.Conn) {
			readSome(c)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}, 502},
		{"closes mid record", func(c net.Conn) {
			readSome(c)
			c.Write([]byte{1, 6, 0, 1, 0, 100, 0, 0, 'S', 't'}) // STDOUT of 100 bytes, 2 sent
		}, 502},
		{"closes at once", func(c net.Conn) {}, 502},
		{"record for another request", func(c net.Conn) {
			readSome(c)
			c.Write([]byte{1, 6, 0, 9, 0, 2, 0, 0, 'h', 'i'})
		}, 502},
		{"never answers", func(c net.Conn) { io.Copy(io.Discard, c) }, 504},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt := newRoute(t, fmt.Sprintf("upstreams: [%q]\nresponse_header_timeout: 300ms", peer(t, tc.serve)))
			start := time.Now()
			res, _ := get(t, rt.url+"/")
			if res.StatusCode != tc.status {
				t.Errorf("status %d, want %d", res.StatusCode, tc.status)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}
