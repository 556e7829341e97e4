package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"edge/bench/internal/sysinfo"
)

// serverCore and loadCore are the CPUs the server under test and the load
// (wrk, tlsload, wsload, the backend) are pinned to.
const (
	serverCore = "1"
	loadCore   = "0"
)

// target is one server under test: its ports and how to start it.
type target struct {
	name      string
	httpPort  int
	httpsPort int
	adminPort int // edge only, with -profile
	// argv returns the command line; cfgFile is the rendered config, if any.
	argv      func(h *harness, t *target) ([]string, error)
	goRuntime bool // a Go program: run with GOMAXPROCS=1

	cmd *exec.Cmd
	log *os.File
}

func targets() []*target {
	return []*target{
		{name: "edge", httpPort: 20080, httpsPort: 20443, goRuntime: true, argv: func(h *harness, t *target) ([]string, error) {
			f, err := h.render("edge.yaml.tmpl", t)
			return []string{h.edgeBin, "run", "-config", f}, err
		}},
		{name: "nginx", httpPort: 21080, httpsPort: 21443, argv: func(h *harness, t *target) ([]string, error) {
			f, err := h.render("nginx.conf.tmpl", t)
			return []string{"nginx", "-p", h.dir, "-e", filepath.Join(h.dir, "nginx-error.log"), "-c", f}, err
		}},
		{name: "caddy", httpPort: 22080, httpsPort: 22443, goRuntime: true, argv: func(h *harness, t *target) ([]string, error) {
			f, err := h.render("Caddyfile.tmpl", t)
			return []string{"caddy", "run", "--adapter", "caddyfile", "--config", f}, err
		}},
		{name: "bare", httpPort: 23080, httpsPort: 23443, goRuntime: true, argv: func(h *harness, t *target) ([]string, error) {
			return []string{filepath.Join(h.binDir, "bare"),
				"-http", fmt.Sprintf("127.0.0.1:%d", t.httpPort),
				"-https", fmt.Sprintf("127.0.0.1:%d", t.httpsPort),
				"-root", h.www, "-cert", h.cert, "-key", h.key,
				"-upstream", "http://" + backendAddr}, nil
		}},
	}
}

// tmplData is what the config templates see.
type tmplData struct {
	Dir, WWW, Cert, Key, Backend, Admin string
	HTTPPort, HTTPSPort                 int
	HTTP3                               bool // edge: listen.http3
}

// render writes the template name for t into the work directory.
func (h *harness) render(name string, t *target) (string, error) {
	tm, err := template.ParseFiles(filepath.Join(h.configDir, name))
	if err != nil {
		return "", err
	}
	d := tmplData{Dir: h.dir, WWW: h.www, Cert: h.cert, Key: h.key, Backend: backendAddr,
		HTTPPort: t.httpPort, HTTPSPort: t.httpsPort, HTTP3: h.http3}
	if t.adminPort != 0 {
		d.Admin = fmt.Sprintf("127.0.0.1:%d", t.adminPort)
	}
	var b bytes.Buffer
	if err := tm.Execute(&b, d); err != nil {
		return "", err
	}
	out := filepath.Join(h.dir, t.name+"-"+strings.TrimSuffix(name, ".tmpl"))
	return out, os.WriteFile(out, b.Bytes(), 0o644)
}

// start runs t pinned to the server core and waits until it answers on
// both listeners with the right bodies.
func (h *harness) start(t *target) error {
	argv, err := t.argv(h, t)
	if err != nil {
		return fmt.Errorf("%s config: %w", t.name, err)
	}
	if err := portsFree(t.httpPort, t.httpsPort, t.adminPort); err != nil {
		return fmt.Errorf("%s: %w", t.name, err)
	}
	t.log, err = os.OpenFile(filepath.Join(h.dir, t.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	t.cmd = exec.Command("taskset", append([]string{"-c", serverCore}, argv...)...)
	t.cmd.Stdout, t.cmd.Stderr = t.log, t.log
	t.cmd.Env = os.Environ()
	if t.goRuntime {
		t.cmd.Env = append(t.cmd.Env, "GOMAXPROCS=1")
	}
	if t.name == "edge" {
		t.cmd.Env = append(t.cmd.Env, h.edgeEnv...)
	}
	// Caddy writes autosave.json and its data under these; keep them in
	// the work directory.
	t.cmd.Env = append(t.cmd.Env, "XDG_CONFIG_HOME="+filepath.Join(h.dir, "xdg-config"), "XDG_DATA_HOME="+filepath.Join(h.dir, "xdg-data"))
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := t.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", t.name, err)
	}
	exited := make(chan struct{})
	go func() { t.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := h.check(t)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start (log %s): %s", t.name, t.log.Name(), sysinfo.Tail(t.log.Name()))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.stop(t)
			return fmt.Errorf("%s not ready after 15s: %w (log %s)", t.name, err, t.log.Name())
		}
	}
}

// check fetches the 1 KiB file over HTTP and HTTPS and a proxied answer,
// and verifies the sizes, so that every server is known to do the same job.
func (h *harness) check(t *target) error {
	for _, c := range []struct {
		url  string
		size int
	}{
		{fmt.Sprintf("http://127.0.0.1:%d/static/1k.bin", t.httpPort), 1 << 10},
		{fmt.Sprintf("https://127.0.0.1:%d/static/1k.bin", t.httpsPort), 1 << 10},
		{fmt.Sprintf("https://127.0.0.1:%d/proxy/1k", t.httpsPort), 1 << 10},
		{fmt.Sprintf("http://127.0.0.1:%d/static/1m.bin", t.httpPort), 1 << 20},
	} {
		resp, err := h.client.Get(c.url)
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 || n != int64(c.size) {
			return fmt.Errorf("GET %s: %s, %d bytes, want 200 and %d", c.url, resp.Status, n, c.size)
		}
	}
	return nil
}

// stop ends t: SIGTERM to its process group, SIGKILL after 5s.
func (h *harness) stop(t *target) {
	if t.cmd == nil || t.cmd.Process == nil {
		return
	}
	pid := t.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil || isZombie(pid) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(-pid, syscall.SIGKILL)
	t.cmd = nil
	if t.log != nil {
		t.log.Close()
		t.log = nil
	}
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	f := statFields(b)
	return len(f) > 0 && f[0] == "Z"
}

func portsFree(ports ...int) error {
	for _, p := range ports {
		if p == 0 {
			continue
		}
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return fmt.Errorf("port %d is already in use on 127.0.0.1", p)
		}
	}
	return nil
}

// pids returns the server's process and its children (nginx's worker).
func (t *target) pids() []int {
	if t.cmd == nil {
		return nil
	}
	root := t.cmd.Process.Pid
	out := []int{root}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == root {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		if f := statFields(b); len(f) > 1 && f[1] == strconv.Itoa(root) {
			out = append(out, pid)
		}
	}
	return out
}

// statFields returns /proc/PID/stat fields after the command name: state,
// ppid, ... (so utime is index 11 and stime 12).
func statFields(b []byte) []string {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

// cpuSeconds is the user+system CPU time of the server's processes.
func (t *target) cpuSeconds() float64 {
	const clkTck = 100 // USER_HZ on Linux
	var ticks int64
	for _, pid := range t.pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := statFields(b)
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return float64(ticks) / clkTck
}

// rssKiB is the resident memory of the server's processes (nginx: master
// plus worker).
func (t *target) rssKiB() int64 {
	var sum float64
	for _, pid := range t.pids() {
		sum += sysinfo.RSSKiB(pid)
	}
	return int64(sum)
}

// headerBytes is the size of the response header for the 1 KiB file, to
// show how much each server writes besides the body.
func headerBytes(port int) int {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET /static/1k.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: wrk\r\n\r\n")
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if i := bytes.Index(buf, []byte("\r\n\r\n")); i >= 0 {
			return i + 4
		}
		if err != nil {
			return 0
		}
	}
}

func newCheckClient() *http.Client {
	return &http.Client{
		Timeout: 3 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"},
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		},
	}
}

// coreSample is a snapshot of one CPU's busy and total time.
type coreSample struct{ busy, total float64 }

func sampleCore(cpu string) coreSample {
	b, t := sysinfo.CPUStat("cpu" + cpu)
	return coreSample{b, t}
}

// busySince is the share (0..1) of the time since s that the CPU was busy.
func (s coreSample) busySince(cpu string) float64 {
	now := sampleCore(cpu)
	if now.total <= s.total {
		return 0
	}
	return (now.busy - s.busy) / (now.total - s.total)
}

// cpuBusy returns the share of all CPUs (0..1) busy over d.
func cpuBusy(d time.Duration) float64 {
	b0, t0 := sysinfo.CPUStat("cpu")
	time.Sleep(d)
	b1, t1 := sysinfo.CPUStat("cpu")
	if t1 <= t0 {
		return 0
	}
	return (b1 - b0) / (t1 - t0)
}

// waitQuiet waits, within the run's budget, until other work on the
// machine uses less than 10% of its CPUs, so that a measurement is not
// shared with someone else's compiler. It reports whether the machine was
// quiet.
func (h *harness) waitQuiet() bool {
	const limit = 0.10
	deadline := time.Now().Add(min(15*time.Second, h.quietBudget))
	start := time.Now()
	defer func() { h.quietBudget -= time.Since(start) }()
	for {
		if cpuBusy(500*time.Millisecond) < limit {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// startPHP writes www/php/hello.php and starts a php-fpm pool for it on
// the load core (as the proxy backend), listening on DIR/php-fpm.sock,
// which edge and nginx both pass to.
func (h *harness) startPHP() error {
	bins, _ := filepath.Glob("/usr/sbin/php-fpm*")
	if len(bins) == 0 {
		return fmt.Errorf("no /usr/sbin/php-fpm*: apt-get install -y php-fpm")
	}
	if err := os.MkdirAll(filepath.Join(h.www, "php"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(h.www, "php", "hello.php"), []byte("<?php echo \"hello world\\n\";\n"), 0o644); err != nil {
		return err
	}
	sock := filepath.Join(h.dir, "php-fpm.sock")
	conf := filepath.Join(h.dir, "php-fpm.conf")
	// listen.mode: nginx's worker runs as nobody.
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`[global]
error_log = %[1]s/php-fpm.log
daemonize = no
pid = %[1]s/php-fpm.pid
[www]
listen = %[2]s
listen.mode = 0666
pm = static
pm.max_children = 4
`, h.dir, sock)), 0o644)
	if err != nil {
		return err
	}
	h.phpFPM = exec.Command("taskset", "-c", loadCore, bins[len(bins)-1], "-F", "-R", "-y", conf)
	h.phpFPM.Stderr = os.Stderr
	if err := h.phpFPM.Start(); err != nil {
		return err
	}
	for range 50 {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("no socket %s after 5s", sock)
}
