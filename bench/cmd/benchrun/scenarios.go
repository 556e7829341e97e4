package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// result is one measurement: metric key -> value.
type result map[string]float64

// Metric keys.
const (
	mRate    = "rate"    // requests, connections or messages per second
	mP99     = "p99"     // ms
	mMiBs    = "mibs"    // MiB/s read by the client
	mCPU     = "cpu"     // server CPU, % of one core
	mPerCore = "percore" // rate divided by the server's CPU share
	mLoadCPU = "loadcpu" // busy time of the load CPU (load, backend, kernel), %
	mErrors  = "errors"
	mKiBConn = "kibconn" // RSS KiB per idle connection
	mRSS0    = "rss0"    // MiB before
	mRSS1    = "rss1"    // MiB with the connections open
)

// metric is one row of a scenario's table.
type metric struct {
	key, label  string
	lowerBetter bool
	sum         bool // show the sum over rounds, no ratio (errors)
}

// scenario is one benchmark. measure runs one measurement of a running
// target; fresh scenarios start a new server for each measurement.
type scenario struct {
	name, what string
	metrics    []metric
	fresh      bool
	headline   []string // metric keys repeated in the summary; default rate, p99, per core
	only       []string // the servers that can run it; nil: all
	php        bool     // needs the php-fpm pool (harness.startPHP)
	http3      bool     // edge runs with listen.http3 (UDP on its https port)
	measure    func(h *harness, t *target) (result, error)
}

func rateMetrics(unit string) []metric {
	perCore := unit
	if unit == "MiB/s" {
		unit = "req/s"
	}
	return []metric{
		{key: mRate, label: unit},
		{key: mP99, label: "p99 ms", lowerBetter: true},
		{key: mMiBs, label: "MiB/s"},
		{key: mCPU, label: "server CPU %"},
		{key: mPerCore, label: perCore + " per server core"},
		{key: mLoadCPU, label: "load core busy %"},
		{key: mErrors, label: "errors (all rounds)", sum: true},
	}
}

func scenarios(h *harness) []*scenario {
	return []*scenario{
		{name: "static-1k", metrics: rateMetrics("req/s"),
			what: fmt.Sprintf("1 KiB file, HTTP/1.1 keep-alive: wrk -t1 -c64 -d%s --latency", h.dur),
			measure: func(h *harness, t *target) (result, error) {
				return h.wrk(t, 64, fmt.Sprintf("http://127.0.0.1:%d/static/1k.bin", t.httpPort))
			}},
		{name: "static-1k-limit", metrics: rateMetrics("req/s"), only: []string{"edge", "nginx"},
			what: fmt.Sprintf("static-1k through a per-client rate limit that never refuses (edge limit, nginx limit_req): the limit's cost: wrk -t1 -c64 -d%s --latency", h.dur),
			measure: func(h *harness, t *target) (result, error) {
				return h.wrk(t, 64, fmt.Sprintf("http://127.0.0.1:%d/limited/1k.bin", t.httpPort))
			}},
		{name: "static-1m", metrics: rateMetrics("MiB/s"), headline: []string{mMiBs, mP99, mPerCore},
			what: fmt.Sprintf("1 MiB file, HTTP/1.1 keep-alive: wrk -t1 -c16 -d%s --latency (MiB/s is the figure)", h.dur),
			measure: func(h *harness, t *target) (result, error) {
				r, err := h.wrk(t, 16, fmt.Sprintf("http://127.0.0.1:%d/static/1m.bin", t.httpPort))
				if err == nil && r[mCPU] > 0 {
					r[mPerCore] = r[mMiBs] / (r[mCPU] / 100)
				}
				return r, err
			}},
		{name: "https-1k", metrics: rateMetrics("req/s"),
			what: fmt.Sprintf("1 KiB file over HTTPS (HTTP/1.1, TLS 1.3) keep-alive: wrk -t1 -c64 -d%s --latency", h.dur),
			measure: func(h *harness, t *target) (result, error) {
				return h.wrk(t, 64, fmt.Sprintf("https://127.0.0.1:%d/static/1k.bin", t.httpsPort))
			}},
		{name: "tls-new", metrics: rateMetrics("conn/s"),
			what: fmt.Sprintf("new TLS 1.3 connection per request (full handshake, X25519, ECDSA P-256, Connection: close): tlsload -c64 -d%s", h.dur),
			measure: func(h *harness, t *target) (result, error) {
				return h.tool(t, "tlsload", "-c", "64", "-d", h.dur.String(), "-warmup", h.warmup.String(),
					"-url", fmt.Sprintf("https://127.0.0.1:%d/static/1k.bin", t.httpsPort))
			}},
		{name: "proxy-1k", metrics: rateMetrics("req/s"),
			what: fmt.Sprintf("HTTPS proxy (keep-alive both sides) to a Go backend answering 1 KiB: wrk -t1 -c64 -d%s --latency", h.dur),
			measure: func(h *harness, t *target) (result, error) {
				return h.wrk(t, 64, fmt.Sprintf("https://127.0.0.1:%d/proxy/1k", t.httpsPort))
			}},
		{name: "php-hello", metrics: rateMetrics("req/s"), only: []string{"edge", "nginx"}, php: true,
			what: fmt.Sprintf("hello-world PHP page through PHP-FPM (one static pool of 4 workers on the load core, unix socket, a connection per request as nginx's default): wrk -t1 -c16 -d%s --latency", h.dur),
			measure: func(h *harness, t *target) (result, error) {
				return h.wrk(t, 16, fmt.Sprintf("http://127.0.0.1:%d/php/hello.php", t.httpPort))
			}},
		h2Scenario(h, "h2-static-1k", "1 KiB file over HTTP/2 (TLS 1.3)", "/static/1k.bin", 32, 10),
		h2Scenario(h, "h2-static-1k-c100", "1 KiB file over HTTP/2 (TLS 1.3), one stream per connection", "/static/1k.bin", 100, 1),
		h2Scenario(h, "h2-proxy-1k", "HTTP/2 proxy to a Go backend answering 1 KiB", "/proxy/1k", 32, 10),
		h2Scenario(h, "h2-proxy-1k-c100", "HTTP/2 proxy to a Go backend answering 1 KiB, one stream per connection", "/proxy/1k", 100, 1),
		// HTTP/3: Debian's nginx 1.22 has no HTTP/3 (it came in 1.25) and
		// Debian's h2load is built without it, so edge h3 is measured with
		// bench/cmd/h3load and compared with edge (and nginx) over h2 with
		// the same client loop.
		h3Scenario(h, "h3-static-1k", "h3", []string{"edge"}),
		h3Scenario(h, "h3-baseline-h2-static-1k", "h2", []string{"edge", "nginx"}),
		{name: "ws-echo", metrics: rateMetrics("msg/s"),
			what: fmt.Sprintf("WebSocket echo over wss through the proxy, %d connections, 64 B messages, one in flight each: wsload -d%s", h.wsConns, h.dur),
			measure: func(h *harness, t *target) (result, error) {
				return h.tool(t, "wsload", "-mode", "echo", "-c", strconv.Itoa(h.wsConns), "-d", h.dur.String(),
					"-warmup", h.warmup.String(), "-url", fmt.Sprintf("wss://localhost:%d/ws", t.httpsPort))
			}},
		{name: "ws-idle-mem", fresh: true, headline: []string{mKiBConn},
			what: fmt.Sprintf("RSS per idle proxied WebSocket over wss: %d connections held through a freshly started server (one echo each, then idle)", h.idleConns),
			metrics: []metric{
				{key: mKiBConn, label: "KiB per connection", lowerBetter: true},
				{key: mRSS0, label: "RSS before MiB", lowerBetter: true},
				{key: mRSS1, label: "RSS with conns MiB", lowerBetter: true},
				{key: mErrors, label: "errors (all rounds)", sum: true},
			},
			measure: (*harness).idleMemory},
	}
}

// wrk runs a short unmeasured warmup, then the measured wrk run, sampling
// the server's CPU time around it.
func (h *harness) wrk(t *target, conns int, url string) (result, error) {
	args := func(d time.Duration) []string {
		return []string{"-c", loadCore, "wrk", "-t1", "-c" + strconv.Itoa(conns), "-d" + secs(d), "--latency", url}
	}
	if h.warmup > 0 {
		if out, err := h.run(args(h.warmup)); err != nil {
			return nil, fmt.Errorf("wrk warmup: %w: %s", err, out)
		}
	}
	cpu0, t0, core0 := t.cpuSeconds(), time.Now(), sampleCore(loadCore)
	out, err := h.run(args(h.dur))
	cpu1, t1, loadBusy := t.cpuSeconds(), time.Now(), core0.busySince(loadCore)
	if err != nil {
		return nil, fmt.Errorf("wrk: %w: %s", err, out)
	}
	r, err := parseWrk(out)
	if err != nil {
		return nil, err
	}
	r.addCPU(cpu1-cpu0, t1.Sub(t0))
	r[mLoadCPU] = 100 * loadBusy
	return r, nil
}

func (h *harness) run(args []string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.dur+h.warmup+60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "taskset", args...).CombinedOutput()
	return string(out), err
}

func (r result) addCPU(cpu float64, wall time.Duration) {
	share := cpu / wall.Seconds()
	r[mCPU] = 100 * share
	if share > 0 {
		r[mPerCore] = r[mRate] / share
	}
}

var (
	reRate     = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	reTransfer = regexp.MustCompile(`Transfer/sec:\s+([\d.]+)([KMGT]?B)`)
	reP99      = regexp.MustCompile(`\n\s+99%\s+([\d.]+)(us|ms|s|m)\b`)
	reSockErr  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	reNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads wrk --latency output.
func parseWrk(out string) (result, error) {
	r := result{}
	m := reRate.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("no Requests/sec in wrk output: %s", out)
	}
	r[mRate], _ = strconv.ParseFloat(m[1], 64)
	if m := reTransfer.FindStringSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		scale := map[string]float64{"B": 1.0 / (1 << 20), "KB": 1.0 / (1 << 10), "MB": 1, "GB": 1 << 10, "TB": 1 << 20}[m[2]]
		r[mMiBs] = v * scale
	}
	if m := reP99.FindStringSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		r[mP99] = v * map[string]float64{"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m[2]]
	}
	if m := reSockErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r[mErrors] += float64(n)
		}
	}
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.Atoi(m[1])
		r[mErrors] += float64(n)
	}
	return r, nil
}

// tool runs one of the Go load tools (tlsload, wsload) pinned to the load
// core. It samples the server's CPU time when the tool prints "measuring"
// and "done", and parses its final key=value line.
// h3Scenario is the 1 KiB file over proto (h3 or h2) with h3load: 32
// connections × 10 streams, as h2-static-1k.
func h3Scenario(h *harness, name, proto string, only []string) *scenario {
	return &scenario{name: name, metrics: rateMetrics("req/s"), only: only, http3: true,
		what: fmt.Sprintf("1 KiB file over %s with edge's listen.http3 on: h3load -proto %s -c32 -m10 -d%s", map[string]string{"h3": "HTTP/3 (QUIC)", "h2": "HTTP/2 (TLS 1.3)"}[proto], proto, h.dur),
		measure: func(h *harness, t *target) (result, error) {
			return h.tool(t, "h3load", "-proto", proto, "-c", "32", "-m", "10", "-d", h.dur.String(),
				"-warmup", h.warmup.String(), "-url", fmt.Sprintf("https://127.0.0.1:%d/static/1k.bin", t.httpsPort))
		}}
}

func (h *harness) tool(t *target, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), h.dur+h.warmup+90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", append([]string{"-c", loadCore, filepath.Join(h.binDir, name)}, args...)...)
	cmd.Env = append(cmd.Environ(), "GOMAXPROCS=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	var (
		cpu0, cpu1 float64
		t0, t1     time.Time
		core0      coreSample
		loadBusy   float64
		last       string
	)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		switch line := sc.Text(); line {
		case "measuring":
			cpu0, t0, core0 = t.cpuSeconds(), time.Now(), sampleCore(loadCore)
		case "done":
			cpu1, t1, loadBusy = t.cpuSeconds(), time.Now(), core0.busySince(loadCore)
		default:
			last = line
		}
	}
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", name, err, stderr.String())
	}
	kv := parseKV(last)
	r := result{mP99: kv["p99_ms"], mErrors: kv["errors"]}
	r[mRate] = kv["conns_per_s"] + kv["msgs_per_s"] + kv["reqs_per_s"]
	if !t0.IsZero() && !t1.IsZero() {
		r.addCPU(cpu1-cpu0, t1.Sub(t0))
	}
	r[mLoadCPU] = 100 * loadBusy
	return r, nil
}

func parseKV(line string) map[string]float64 {
	m := map[string]float64{}
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		m[k], _ = strconv.ParseFloat(v, 64)
	}
	return m
}

// idleMemory measures RSS per idle proxied WebSocket on a freshly started
// server: a short echo warmup (so that code and pools are in use), RSS,
// then -idle-conns connections held idle, RSS again after a settle time.
func (h *harness) idleMemory(t *target) (result, error) {
	url := fmt.Sprintf("wss://localhost:%d/ws", t.httpsPort)
	if _, err := h.tool(t, "wsload", "-mode", "echo", "-c", "100", "-d", "1s", "-warmup", "0s", "-url", url); err != nil {
		return nil, fmt.Errorf("warmup: %w", err)
	}
	time.Sleep(2 * time.Second)
	before := t.rssKiB()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "taskset", "-c", loadCore, filepath.Join(h.binDir, "wsload"),
		"-mode", "idle", "-c", strconv.Itoa(h.idleConns), "-url", url, "-hold", "2m")
	cmd.Env = append(cmd.Environ(), "GOMAXPROCS=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("wsload idle: %v: %s", err, stderr.String())
	}
	var opened, errs int
	if _, err := fmt.Sscanf(line, "ready %d errors %d", &opened, &errs); err != nil || opened == 0 {
		return nil, fmt.Errorf("wsload idle: %q: %s", line, stderr.String())
	}
	time.Sleep(h.settle)
	after := t.rssKiB()
	return result{
		mKiBConn: float64(after-before) / float64(opened),
		mRSS0:    float64(before) / 1024,
		mRSS1:    float64(after) / 1024,
		mErrors:  float64(errs + h.idleConns - opened),
	}, nil
}

// secs formats d for wrk, which takes whole seconds.
func secs(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second))) + "s"
}
