// Command hubidle measures the memory of idle subscribed hub connections
// over ws and over wss, side by side in one run: for each scheme it starts
// a fresh edge (pinned to CPU 1, GOMAXPROCS=1, local CA), opens -c
// connections subscribed to one channel, waits -settle, and reports the
// VmRSS delta per connection with the Go heap and stack shares (from the
// admin listener's /metrics, as bench/hub.sh reads them). bench/hub.sh measures ws only, because its
// receiver reads raw sockets; this tool is for the TLS cost.
//
//	go run ./bench/cmd/hubidle -edge bin/edge -c 5000
//
// Everything runs on 127.0.0.1; edge is stopped after each measurement.
package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/gorilla/websocket"

	"edge/bench/internal/sysinfo"
)

const (
	httpPort  = 21810
	httpsPort = 21811
	adminPort = 21812
)

const config = `listen:
  http: 127.0.0.1:%d
  https: 127.0.0.1:%d
admin: 127.0.0.1:%d
server: { idle_timeout: 1h, pprof: true }
log: { level: warn }
tls: { ca: internal, storage: %s }
sites:
  - hosts: [localhost]
    http_redirect: false
    routes:
      - path: /socket/
        hub: { origins: ["*"], ping_interval: 1h, idle_timeout: 2h }
`

func main() {
	edgeBin := flag.String("edge", "bin/edge", "edge binary")
	conns := flag.Int("c", 5000, "connections per scheme")
	settle := flag.Duration("settle", 3*time.Second, "wait before reading memory with the connections open")
	heapDir := flag.String("heap", "", "also save a heap profile per scheme (DIR/hubidle-SCHEME.heap), taken with the connections open")
	flag.Parse()
	dir, err := os.MkdirTemp("", "edge-hubidle-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	cfg := filepath.Join(dir, "edge.yaml")
	if err := os.WriteFile(cfg, fmt.Appendf(nil, config, httpPort, httpsPort, adminPort, filepath.Join(dir, "storage")), 0o644); err != nil {
		fail(err)
	}
	fmt.Printf("hub idle memory, %s, %s, %d connections per scheme, load average %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), sysinfo.CPUModel(), *conns, sysinfo.LoadAvg())
	fmt.Printf("%-6s %14s %14s %14s %12s\n", "scheme", "KiB/conn RSS", "heap KiB/conn", "stack KiB/conn", "RSS MiB")
	for _, scheme := range []string{"ws", "wss"} {
		m, err := measure(*edgeBin, cfg, scheme, *conns, *settle, *heapDir)
		if err != nil {
			fail(fmt.Errorf("%s: %w", scheme, err))
		}
		n := float64(*conns)
		fmt.Printf("%-6s %14.2f %14.2f %14.2f %12.1f\n", scheme,
			(m.after.rss-m.before.rss)/n/1024, (m.after.heap-m.before.heap)/n/1024,
			(m.after.stack-m.before.stack)/n/1024, m.after.rss/(1<<20))
	}
}

type memory struct{ rss, heap, stack float64 } // bytes

type measurement struct{ before, after memory }

// measure starts edge, holds n subscribed connections over scheme and
// reads edge's memory before and with them.
func measure(edgeBin, cfg, scheme string, n int, settle time.Duration, heapDir string) (measurement, error) {
	var m measurement
	cmd := exec.Command("taskset", "-c", "1", edgeBin, "run", "-config", cfg)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return m, err
	}
	defer func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	if err := waitReady(); err != nil {
		return m, err
	}
	time.Sleep(time.Second)
	pid := cmd.Process.Pid
	m.before = read(pid)
	url := fmt.Sprintf("ws://localhost:%d/socket/?channel=bench", httpPort)
	if scheme == "wss" {
		url = fmt.Sprintf("wss://localhost:%d/socket/?channel=bench", httpsPort)
	}
	d := websocket.Dialer{
		TLSClientConfig:  &tls.Config{InsecureSkipVerify: true}, // the local CA's leaf; only memory is measured
		HandshakeTimeout: 10 * time.Second,
	}
	var held []*websocket.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for range n {
		c, _, err := d.Dial(url, nil)
		if err != nil {
			return m, err
		}
		held = append(held, c)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for range 2 { // welcome, subscribed
			if _, _, err := c.ReadMessage(); err != nil {
				return m, err
			}
		}
	}
	time.Sleep(settle)
	m.after = read(pid)
	if heapDir != "" {
		if err := saveHeap(filepath.Join(heapDir, "hubidle-"+scheme+".heap")); err != nil {
			return m, err
		}
	}
	return m, nil
}

// saveHeap writes edge's heap profile (after a GC) to file.
func saveHeap(file string) error {
	r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap?gc=1", adminPort))
	if err != nil {
		return err
	}
	defer r.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(f, r.Body)
	return err
}

func waitReady() error {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", adminPort)); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("edge not ready within 20s")
}

// read returns edge's VmRSS, Go heap in use and goroutine stacks.
func read(pid int) memory {
	heap, stack := sysinfo.GoMemory(http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	return memory{rss: sysinfo.RSSKiB(pid) * 1024, heap: heap, stack: stack}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "hubidle:", err)
	os.Exit(1)
}
