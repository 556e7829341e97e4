package main

// The harness: a private redis-server, then for every scenario and round
// each server started afresh (pinned to the server core with GOMAXPROCS=1)
// and measured under `hubload load` (pinned with redis-server to the load
// core), servers interleaved in an order rotated per round.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/bench/internal/loadgen"
	"edge/bench/internal/sysinfo"
)

type scenario struct {
	name, what string
	conns      int
	rate       float64
	dur        time.Duration
	// servers, when set, are what this scenario measures instead of
	// -servers; base is the column the others are compared with (edge/X).
	servers []string
	base    string
}

// baseName is the column the ratios divide by.
func (sc *scenario) baseName() string {
	if sc.base != "" {
		return sc.base
	}
	return "edge"
}

type bench struct {
	self, edgeBin, centrifugoBin, redisBin string
	centrifugoNote                         string
	edgeOldBin, edgeOldNote                string
	clusterConns                           int
	outFile, profileDir                    string
	rounds, conns, coalConns, queueSize    int
	dur, coalDur, settle, drain            time.Duration
	coalRate                               float64
	size                                   int
	spin                                   bool
	nice                                   int
	quietBudget                            time.Duration
	edgeEnv                                []string

	dir       string
	redisAddr string
	redis     *exec.Cmd
	client    *http.Client
	noisy     int
	started   time.Time
	loadStart string
}

// result is one measurement: metric key → value.
type result map[string]float64

func (b *bench) scenarios() []*scenario {
	return []*scenario{
		{"fanout-5", fmt.Sprintf("%d subscribers × 5 msg/s for %s (also: memory per idle subscribed connection)", b.conns, b.dur), b.conns, 5, b.dur, nil, ""},
		{"fanout-10", fmt.Sprintf("%d subscribers × 10 msg/s for %s", b.conns, b.dur), b.conns, 10, b.dur, nil, ""},
		{"coalesce-400", fmt.Sprintf("%d subscribers × %g msg/s for %s (offered: %s deliveries/s)", b.coalConns, b.coalRate, b.coalDur,
			num(float64(b.coalConns)*b.coalRate)), b.coalConns, b.coalRate, b.coalDur, nil, ""},
		{"cluster-3x3000", fmt.Sprintf("%d edge nodes sharing CPU %s and one Redis; %d × %d subscribers (the load's connections taken by the nodes in turn) × 5 msg/s published with FCALL edge_publish for %s",
			clusterNodes, serverCore, clusterNodes, b.clusterConns, b.dur), clusterNodes * b.clusterConns, 5, b.dur, []string{"edge-cluster"}, "edge-cluster"},
		{"history-cost", fmt.Sprintf("%d subscribers × %g msg/s for %s: history in Redis (FCALL edge_publish) vs live only (PUBLISH, current edge) vs per node (PUBLISH, %s)",
			b.coalConns, b.coalRate, b.coalDur, b.oldName()), b.coalConns, b.coalRate, b.coalDur,
			[]string{"redis-history", "live-only", "node-history"}, "redis-history"},
	}
}

// oldName says which edge node-history runs.
func (b *bench) oldName() string {
	switch {
	case b.edgeOldBin == "":
		return "not measured: no -edge-old"
	case b.edgeOldNote != "":
		return b.edgeOldNote
	}
	return b.edgeOldBin
}

func runBench(args []string) error {
	b := &bench{client: &http.Client{Timeout: 3 * time.Second}}
	fs := flag.NewFlagSet("bench", flag.ExitOnError)
	fs.StringVar(&b.edgeBin, "edge", "bin/edge", "edge binary")
	fs.StringVar(&b.centrifugoBin, "centrifugo", "", "Centrifugo v6 binary; empty: no Centrifugo column")
	fs.StringVar(&b.centrifugoNote, "centrifugo-note", "", "why there is no Centrifugo column (printed in the report)")
	fs.StringVar(&b.edgeOldBin, "edge-old", "", "edge binary from before the hub's history moved to Redis, for history-cost's node-history column (hub.sh builds it); empty: no such column")
	fs.StringVar(&b.edgeOldNote, "edge-old-note", "", "what -edge-old is (printed in the report, e.g. its commit)")
	fs.IntVar(&b.clusterConns, "cluster-c", 3000, "subscribers per node of cluster-3x3000")
	fs.StringVar(&b.redisBin, "redis-server", "redis-server", "redis-server binary")
	fs.StringVar(&b.outFile, "out", "", "also write the report to this file")
	fs.StringVar(&b.profileDir, "profile-dir", "", "take a CPU profile of edge (admin /debug/pprof) over each measured window into this directory")
	fs.IntVar(&b.rounds, "rounds", 1, "rounds per scenario (each server measured once per round, order rotated)")
	fs.IntVar(&b.conns, "c", 10000, "subscribers of fanout-5 and fanout-10")
	fs.IntVar(&b.coalConns, "coalesce-c", 2000, "subscribers of coalesce-400")
	fs.Float64Var(&b.coalRate, "coalesce-rate", 400, "messages per second of coalesce-400")
	fs.DurationVar(&b.dur, "d", 20*time.Second, "publishing time of fanout-5 and fanout-10")
	fs.DurationVar(&b.coalDur, "coalesce-d", 10*time.Second, "publishing time of coalesce-400")
	fs.DurationVar(&b.drain, "drain", 10*time.Second, "longest wait for outstanding deliveries after the last publish")
	fs.DurationVar(&b.settle, "settle", 3*time.Second, "wait before reading memory with the connections open")
	fs.IntVar(&b.queueSize, "queue-size", 256, "edge hub queue_size (the hub's default is 256)")
	fs.IntVar(&b.size, "size", 64, "payload size in bytes")
	fs.BoolVar(&b.spin, "spin", true, "the load polls its sockets without sleeping (see HUB.md)")
	fs.IntVar(&b.nice, "nice", -15, "niceness of every benchmark process (needs root below 0)")
	fs.DurationVar(&b.quietBudget, "quiet-wait", 90*time.Second, "total time the run may wait for other work on the machine to calm down (at most 10s per measurement)")
	servers := fs.String("servers", "edge,bare,centrifugo", "servers to measure (centrifugo only with -centrifugo)")
	edgeEnv := fs.String("edge-env", "", "extra environment for edge, comma-separated KEY=VALUE (experiments such as GOGC=200)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: hubload bench [flags] [scenario...]\n\nscenarios: %s\n\nflags:\n", strings.Join(loadgen.Names(b.scenarios(), scenarioName), " "))
		fs.PrintDefaults()
	}
	fs.Parse(args)
	if *edgeEnv != "" {
		b.edgeEnv = strings.Split(*edgeEnv, ",")
	}
	var err error
	if b.self, err = os.Executable(); err != nil {
		return err
	}
	sel, err := loadgen.Select(b.scenarios(), fs.Args(), scenarioName)
	if err != nil {
		return err
	}
	defaults, err := b.servers(strings.Split(*servers, ","))
	if err != nil {
		return err
	}
	// Each scenario's servers, and every server once (to stop them all on
	// an interrupt; each is started afresh per measurement anyway).
	var plan []planned
	var srvs []*server
	for _, sc := range sel {
		ss := defaults
		if sc.servers != nil {
			if ss, err = b.servers(sc.servers); err != nil {
				return err
			}
		}
		plan = append(plan, planned{sc, ss})
		srvs = append(srvs, ss...)
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, b.nice); err != nil {
		fmt.Fprintf(os.Stderr, "hubload bench: cannot set niceness %d (%v): figures may suffer from other load\n", b.nice, err)
	}
	raiseNofile()
	if b.dir, err = os.MkdirTemp("", "edge-hubbench-"); err != nil {
		return err
	}
	if err := writeCert(b.dir); err != nil {
		return err
	}
	if err := b.startRedis(); err != nil {
		return err
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "\nhubload bench: interrupted, stopping servers")
		for _, s := range srvs {
			b.stop(s)
		}
		b.stopRedis()
		os.Exit(130)
	}()
	err = b.compare(plan, srvs)
	for _, s := range srvs {
		b.stop(s)
	}
	b.stopRedis()
	if err == nil {
		os.RemoveAll(b.dir)
	}
	return err
}

func scenarioName(s *scenario) string { return s.name }

// startRedis runs a private redis-server on a free port, on the load core,
// without persistence.
func (b *bench) startRedis() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	b.redisAddr = fmt.Sprintf("127.0.0.1:%d", port)
	b.redis = exec.Command("taskset", "-c", loadCore, b.redisBin, "--port", strconv.Itoa(port),
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", b.dir,
		"--logfile", filepath.Join(b.dir, "redis.log"))
	b.redis.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := b.redis.Start(); err != nil {
		return fmt.Errorf("redis-server: %w (bench/hub.sh installs it from apt)", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: b.redisAddr})
	defer rdb.Close()
	for range 100 {
		if rdb.Ping(context.Background()).Err() == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.stopRedis()
	return fmt.Errorf("redis-server on %s did not answer within 5s (log %s)", b.redisAddr, filepath.Join(b.dir, "redis.log"))
}

func (b *bench) stopRedis() {
	if b.redis != nil && b.redis.Process != nil {
		stopGroup(b.redis.Process.Pid, 3*time.Second)
		b.redis.Wait()
		b.redis = nil
	}
}

// waitQuiet waits, within the run's budget, until other work uses less
// than 10 % of the CPUs. It reports whether the machine was quiet.
func (b *bench) waitQuiet() bool {
	start := time.Now()
	defer func() { b.quietBudget -= time.Since(start) }()
	deadline := start.Add(min(10*time.Second, max(b.quietBudget, 0)))
	for {
		b0, t0 := sysinfo.CPUStat("cpu")
		time.Sleep(500 * time.Millisecond)
		b1, t1 := sysinfo.CPUStat("cpu")
		if t1 > t0 && (b1-b0)/(t1-t0) < 0.10 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}

// planned is a scenario and the servers it measures.
type planned struct {
	sc   *scenario
	srvs []*server
}

func (b *bench) compare(plan []planned, all []*server) error {
	b.started = time.Now()
	b.loadStart = sysinfo.LoadAvg()
	rp := &report{b: b, srvs: all}
	var w io.Writer = os.Stdout
	rp.header(io.MultiWriter(w, &rp.text))
	results := map[string]map[string][]result{} // scenario → server → rounds
	var sel []*scenario
	for _, p := range plan {
		sc, srvs := p.sc, p.srvs
		sel = append(sel, sc)
		res := map[string][]result{}
		for round := range b.rounds {
			order := slices.Clone(srvs)
			k := round % len(order)
			order = append(order[k:], order[:k]...)
			for _, s := range order {
				fmt.Fprintf(os.Stderr, "-- %s round %d/%d: %s\n", sc.name, round+1, b.rounds, s.name)
				r, err := b.measure(sc, s)
				if err != nil {
					fmt.Fprintf(os.Stderr, "   %s: %v\n", s.name, err)
					r = result{"failed": 1}
				}
				fmt.Fprintf(os.Stderr, "   %s\n", r.brief())
				res[s.name] = append(res[s.name], r)
			}
		}
		results[sc.name] = res
		rp.scenario(io.MultiWriter(w, &rp.text), sc, srvs, res)
	}
	rp.memory(io.MultiWriter(w, &rp.text), sel, results)
	rp.targets(io.MultiWriter(w, &rp.text), results)
	fmt.Fprintf(io.MultiWriter(w, &rp.text), "\nrun took %s; %d measurements started while other work used over 10%% of the CPUs; load average at the end: %s\n",
		time.Since(b.started).Round(time.Second), b.noisy, sysinfo.LoadAvg())
	if b.outFile != "" {
		if err := os.WriteFile(b.outFile, []byte(rp.text.String()), 0o644); err != nil {
			return err
		}
		fmt.Printf("report written to %s\n", b.outFile)
	}
	return nil
}

func (r result) brief() string {
	if r["failed"] != 0 {
		return "failed"
	}
	return fmt.Sprintf("%.0f deliveries/s, lost %.0f, p50 %.1f ms, p99 %.1f ms, max %.1f ms, server CPU %.0f%%, redis CPU %.1f%%, load CPU %.0f%%, %.2f KiB/conn",
		r["rate"], r["lost"], r["p50_ms"], r["p99_ms"], r["max_ms"], r["cpu"], r["redis_cpu"], r["load_cpu"], r["kib_rss"])
}

// loadProc is a running `hubload load` and its output lines.
type loadProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
}

// expect waits for a line starting with prefix.
func (lp *loadProc) expect(prefix string, within time.Duration) (string, error) {
	t := time.NewTimer(within)
	defer t.Stop()
	for {
		select {
		case line, ok := <-lp.lines:
			if !ok {
				return "", fmt.Errorf("load ended before %q", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line, nil
			}
		case <-t.C:
			return "", fmt.Errorf("no %q from the load within %s", prefix, within)
		}
	}
}

func (b *bench) startLoad(sc *scenario, s *server) (*loadProc, error) {
	args := []string{"-c", loadCore, b.self, "load", "-step",
		"-url", s.url, "-proto", s.proto, "-c", strconv.Itoa(sc.conns),
		"-redis", b.redisAddr, "-publish", "edge:bench",
		"-rate", strconv.FormatFloat(sc.rate, 'f', -1, 64), "-d", sc.dur.String(),
		"-drain", b.drain.String(), "-size", strconv.Itoa(b.size)}
	if s.apiURL != "" {
		args = append(args, "-publish-api", s.apiURL)
	}
	if s.fcall {
		args = append(args, "-fcall", "-channel", "bench")
	}
	args = append(args, "-spin="+strconv.FormatBool(b.spin))
	cmd := exec.Command("taskset", args...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lp := &loadProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lp.lines <- sc.Text()
		}
		close(lp.lines)
	}()
	return lp, nil
}

func (lp *loadProc) stop() {
	lp.stdin.Close()
	if lp.cmd.Process != nil {
		stopGroup(lp.cmd.Process.Pid, 3*time.Second)
	}
	lp.cmd.Wait()
}

// measure runs one scenario against one freshly started server.
func (b *bench) measure(sc *scenario, s *server) (result, error) {
	if !b.waitQuiet() {
		b.noisy++
	}
	if err := b.start(s); err != nil {
		return nil, err
	}
	defer b.stop(s)
	pids := s.pids()
	lp, err := b.startLoad(sc, s)
	if err != nil {
		return nil, err
	}
	defer lp.stop()
	r := result{}

	if _, err := lp.expect("warm", time.Minute); err != nil {
		return nil, err
	}
	time.Sleep(time.Second)
	rss0 := rssKiB(pids)
	heap0, stack0 := goMemory(b.client, s.metricsURLs)
	fmt.Fprintln(lp.stdin)

	line, err := lp.expect("ready", 3*time.Minute)
	if err != nil {
		return nil, err
	}
	var n, dialErrs int
	fmt.Sscanf(line, "ready %d errors %d", &n, &dialErrs)
	time.Sleep(b.settle)
	rss1 := rssKiB(pids)
	heap1, stack1 := goMemory(b.client, s.metricsURLs)
	if n > 0 {
		r["kib_rss"] = (rss1 - rss0) / float64(n)
		if heap0 > 0 && heap1 > 0 {
			r["kib_heap"] = (heap1 - heap0) / 1024 / float64(n)
			r["kib_stack"] = (stack1 - stack0) / 1024 / float64(n)
		}
	}
	r["rss_mib"] = rss1 / 1024
	fmt.Fprintln(lp.stdin)

	if _, err := lp.expect("measuring", 30*time.Second); err != nil {
		return nil, err
	}
	st0 := s.stats(b.client)
	cpu0 := make([]float64, len(pids))
	for i, p := range pids {
		cpu0[i] = cpuSeconds(p)
	}
	t0, rcpu0 := time.Now(), cpuSeconds(b.redis.Process.Pid)
	c0b, c0t := sysinfo.CPUStat("cpu" + loadCore)
	var prof chan error
	if b.profileDir != "" && s.adminPort != 0 {
		prof = make(chan error, 1)
		go func() { prof <- b.profile(sc, s, sc.dur) }()
	}
	if _, err := lp.expect("done", sc.dur+b.drain+time.Minute); err != nil {
		return nil, err
	}
	el := time.Since(t0).Seconds()
	for i, p := range pids {
		c := 100 * (cpuSeconds(p) - cpu0[i]) / el
		r["cpu"] += c
		if len(pids) > 1 {
			r["cpu_node_max"] = max(r["cpu_node_max"], c)
		}
	}
	r["redis_cpu"] = 100 * (cpuSeconds(b.redis.Process.Pid) - rcpu0) / el
	if c1b, c1t := sysinfo.CPUStat("cpu" + loadCore); c1t > c0t {
		r["load_core"] = 100 * (c1b - c0b) / (c1t - c0t)
	}
	line, err = lp.expect("result", 30*time.Second)
	if err != nil {
		return nil, err
	}
	for k, v := range parseResult(line) {
		r[k] = v
	}
	if r["window_s"] > 0 {
		r["rate"] = r["deliveries"] / r["window_s"]
	}
	if prof != nil {
		if err := <-prof; err != nil {
			fmt.Fprintf(os.Stderr, "   profile: %v\n", err)
		}
	}
	if st0 != nil {
		st := s.stats(b.client)
		d := func(k string) float64 { return st[k] - st0[k] }
		if d("writes") > 0 {
			r["frames_per_write"] = d("written") / d("writes")
		}
		if _, ok := st["dropped"]; ok {
			r["server_dropped"] = d("dropped")
		}
		if _, ok := st["slow_clients"]; ok {
			r["slow_clients"] = d("slow_clients")
		}
	}
	if r["closed"] > 0 {
		fmt.Fprintf(os.Stderr, "   %s\n", line)
	}
	return r, nil
}

// profile saves a CPU profile of edge over d.
func (b *bench) profile(sc *scenario, s *server, d time.Duration) error {
	secs := max(1, int(d.Seconds())-1)
	c := &http.Client{Timeout: d + 30*time.Second}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", s.adminPort, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("pprof: %s", resp.Status)
	}
	if err := os.MkdirAll(b.profileDir, 0o755); err != nil {
		return err
	}
	f := filepath.Join(b.profileDir, fmt.Sprintf("%s-%s.pprof", sc.name, s.name))
	out, err := os.Create(f)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.Copy(out, resp.Body); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "   profile written to %s\n", f)
	return nil
}

// rssKiB is the resident memory of the processes together.
func rssKiB(pids []int) float64 {
	var sum float64
	for _, p := range pids {
		sum += sysinfo.RSSKiB(p)
	}
	return sum
}

// goMemory is the Go heap in use and the goroutine stacks of the processes
// together, or zeros when any of them does not say.
func goMemory(c *http.Client, urls []string) (heap, stack float64) {
	for _, u := range urls {
		h, s := sysinfo.GoMemory(c, u)
		if h == 0 {
			return 0, 0
		}
		heap, stack = heap+h, stack+s
	}
	return heap, stack
}

// parseResult reads the key=value pairs of the load's result line.
func parseResult(line string) result {
	r := result{}
	for _, f := range strings.Fields(strings.TrimPrefix(line, "result ")) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if x, err := strconv.ParseFloat(v, 64); err == nil {
			r[k] = x
		}
	}
	return r
}

// writeCert writes a self-signed ECDSA P-256 certificate for 127.0.0.1 and
// its key to dir/cert.pem and dir/key.pem, for edge-wss.
func writeCert(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "hubload"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cert.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
}
