package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/config"
)

// TestMain lets the test binary double as a proxy process for
// BenchmarkIdleTunnelMemory, so that the memory it measures is the
// proxy's alone.
func TestMain(m *testing.M) {
	parkAfter = 100 * time.Millisecond // tests and the benchmark's child wait for parked tunnels
	if mode := os.Getenv("EDGE_PROXY_CHILD"); mode != "" {
		runChild(mode, os.Getenv("EDGE_PROXY_UPSTREAM"))
		return
	}
	os.Exit(m.Run())
}

// runChild serves a proxy to upstream on a loopback port it prints, plus
// /_mem with the process's memory after a GC. mode "edge" is this package's
// Handler, "edge-wss" the same behind TLS with HTTP/2 on (as edge serves
// HTTPS); "stock" is a bare httputil.ReverseProxy, for comparison.
//
// With EDGE_BENCH_HEAPPROFILE=path the child samples every allocation and
// /_mem writes a heap profile (inuse_space, after the GCs) to path, for
// `go tool pprof -sample_index=inuse_space`.
func runChild(mode, upstream string) {
	profile := os.Getenv("EDGE_BENCH_HEAPPROFILE")
	if profile != "" {
		runtime.MemProfileRate = 1
	}
	var proxy http.Handler
	switch mode {
	case "edge", "edge-wss":
		c, err := config.Parse("edge.yaml", []byte("listen: {http: \"127.0.0.1:0\"}\nadmin: \"\"\nsites:\n  - routes:\n      - path: /\n        proxy: {upstreams: ["+upstream+"]}\n"))
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		h, err := New(c.Sites[0].Routes[0].Proxy, Options{})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		proxy = h
	case "stock":
		u, _ := url.Parse(upstream)
		proxy = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u); pr.SetXForwarded() }}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_mem", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		if profile != "" {
			if f, err := os.Create(profile); err == nil {
				pprof.Lookup("heap").WriteTo(f, 0)
				f.Close()
			}
		}
		json.NewEncoder(w).Encode(map[string]uint64{
			"heap_inuse": ms.HeapInuse, "stack_inuse": ms.StackInuse,
			"goroutines": uint64(runtime.NumGoroutine()), "rss": rss(os.Getpid()),
		})
	})
	mux.Handle("/", proxy)
	srv := httptest.NewUnstartedServer(mux)
	if mode == "edge-wss" {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	fmt.Println("listening", srv.URL)
	io.Copy(io.Discard, os.Stdin) // exit with the parent
	os.Exit(0)
}

// rss returns the resident set size of a process in bytes, from /proc.
func rss(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// BenchmarkIdleTunnelMemory holds idle proxied WebSockets open through a
// proxy in a child process and reports its memory per tunnel: heap+stack
// after a GC, and RSS. Run with -benchtime=1x; EDGE_BENCH_TUNNELS sets the
// number of tunnels (default 1000).
func BenchmarkIdleTunnelMemory(b *testing.B) {
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("EDGE_BENCH_TUNNELS")); err == nil && v > 0 {
		n = v
	}
	up := websocket.Upgrader{}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, m, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, m)
		}
	}))
	defer backend.Close()
	for _, mode := range []string{"edge", "edge-wss", "stock"} {
		b.Run(mode, func(b *testing.B) {
			perTunnel, rssPer, gPer := measureTunnels(b, mode, backend.URL, n)
			b.ReportMetric(perTunnel, "heap+stack-B/tunnel")
			b.ReportMetric(rssPer, "rss-B/tunnel")
			b.ReportMetric(gPer, "goroutines/tunnel")
		})
	}
}

func measureTunnels(b *testing.B, mode, upstream string, n int) (heapStack, rssPer, goroutines float64) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EDGE_PROXY_CHILD="+mode, "EDGE_PROXY_UPSTREAM="+upstream)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	base, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	if err != nil || !ok {
		b.Fatalf("child: %q %v", line, err)
	}
	insecure := &tls.Config{InsecureSkipVerify: true}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure}}
	mem := func() map[string]float64 {
		res, err := client.Get(base + "/_mem")
		if err != nil {
			b.Fatal(err)
		}
		defer res.Body.Close()
		var m map[string]float64
		json.NewDecoder(res.Body).Decode(&m)
		return m
	}
	// Warm up pools and the runtime with one tunnel, then measure.
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, TLSClientConfig: insecure}
	wsURL := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	warm, _, err := d.Dial(wsURL, nil)
	if err != nil {
		b.Fatal(err)
	}
	warm.Close()
	time.Sleep(100 * time.Millisecond)
	before := mem()
	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	errs := make(chan error, n)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, _, err := d.Dial(wsURL, nil)
			if err != nil {
				errs <- err
				return
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := c.WriteMessage(websocket.TextMessage, []byte("hello")); err == nil {
				_, _, err = c.ReadMessage()
			}
			if err != nil {
				errs <- err
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	time.Sleep(2*parkAfter + 300*time.Millisecond) // idle: parked
	after := mem()
	for _, c := range conns {
		c.Close()
	}
	f := float64(n)
	heapStack = (after["heap_inuse"] + after["stack_inuse"] - before["heap_inuse"] - before["stack_inuse"]) / f
	rssPer = (after["rss"] - before["rss"]) / f
	goroutines = (after["goroutines"] - before["goroutines"]) / f
	b.Logf("%s: %d idle tunnels: heap %+.0f KiB, stack %+.0f KiB, rss %+.0f KiB, goroutines %+.0f",
		mode, n, (after["heap_inuse"]-before["heap_inuse"])/1024, (after["stack_inuse"]-before["stack_inuse"])/1024,
		(after["rss"]-before["rss"])/1024, after["goroutines"]-before["goroutines"])
	return heapStack, rssPer, goroutines
}

// BenchmarkGET compares a small GET through the proxy with the same GET
// straight to the upstream, on keep-alive connections.
func BenchmarkGET(b *testing.B) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, world\n")
	}))
	defer backend.Close()
	cfg := proxyConfig(b, "upstreams: ["+backend.URL+"]")
	h, err := New(cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	fs := httptest.NewServer(h)
	defer fs.Close()
	for _, tc := range []struct{ name, url string }{{"direct", backend.URL}, {"proxied", fs.URL}} {
		b.Run(tc.name, func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer c.CloseIdleConnections()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					res, err := c.Get(tc.url + "/small")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
			})
		})
	}
}
