// Command benchrun runs edge, nginx, Caddy and a bare net/http server side
// by side on loopback and prints median figures and edge's ratios. It is
// started by bench/run.sh, which installs the tools and builds the
// binaries; see bench/README.md.
//
// Every server runs pinned to CPU 1 (Go servers with GOMAXPROCS=1), the
// load and the proxy backend to CPU 0. Each scenario is measured in rounds;
// in each round every server is measured once, in a rotated order, after a
// short unmeasured warmup; the table shows the median of the rounds.
package main

import (
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"edge/bench/internal/loadgen"
)

// backendAddr is where bench/cmd/backend listens.
const backendAddr = "127.0.0.1:24000"

type harness struct {
	binDir, configDir, edgeBin, outFile string
	rounds, memRounds                   int
	dur, warmup, settle                 time.Duration
	wsConns, idleConns                  int
	nice                                int
	http3                               bool // the running scenario wants edge with listen.http3
	edgeEnv                             []string
	quietBudget                         time.Duration // left for waitQuiet
	noisy                               int           // measurements taken on a busy machine

	dir, www, cert, key string
	client              *http.Client
	targets             []*target
	backend             *exec.Cmd
	php                 bool      // a selected scenario needs php-fpm
	phpFPM              *exec.Cmd // the pool of php scenarios
}

func main() {
	h := &harness{client: newCheckClient()}
	flag.StringVar(&h.binDir, "bin", "", "directory with the bare, backend, tlsload and wsload binaries")
	flag.StringVar(&h.configDir, "configs", "bench/configs", "directory with the config templates")
	flag.StringVar(&h.edgeBin, "edge", "bin/edge", "edge binary")
	flag.StringVar(&h.outFile, "out", "", "also write the report to this file")
	flag.IntVar(&h.rounds, "rounds", 5, "measurement rounds per scenario")
	flag.IntVar(&h.memRounds, "mem-rounds", 2, "rounds of ws-idle-mem (each starts every server afresh)")
	flag.DurationVar(&h.dur, "d", 4*time.Second, "measured duration of one measurement")
	flag.DurationVar(&h.warmup, "warmup", time.Second, "unmeasured warmup before each measurement")
	flag.DurationVar(&h.settle, "settle", 3*time.Second, "wait before reading RSS with the idle connections open")
	flag.DurationVar(&h.quietBudget, "quiet-wait", 3*time.Minute, "total time the run may wait for other work on the machine to stop before measurements (at most 15s each)")
	flag.IntVar(&h.wsConns, "ws-conns", 1000, "connections of ws-echo")
	flag.IntVar(&h.idleConns, "idle-conns", 5000, "connections of ws-idle-mem (the server holds twice as many sockets; ulimit -n is 20000 here)")
	servers := flag.String("servers", "edge,nginx,caddy,bare", "servers to measure, comma-separated")
	edgeEnv := flag.String("edge-env", "", "extra environment for edge, comma-separated KEY=VALUE (experiments such as GOGC=400)")
	nice := flag.Int("nice", -15, "niceness of the benchmark (inherited by servers, load and backend), so that other work on the machine disturbs less; needs root to go below 0")
	chart := flag.String("chart", "", "only draw the SVG bar chart of an existing report (bench/results/X.txt -> X.svg) and exit")
	profile := flag.Duration("profile", 0, "instead of comparing, profile edge alone under each scenario's load for this long (needs the admin listener's pprof)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: benchrun [flags] [scenario...]\n\nscenarios: %s\n\nflags:\n",
			strings.Join(loadgen.Names(scenarios(h), scenarioName), " "))
		flag.PrintDefaults()
	}
	flag.Parse()
	if *chart != "" {
		out, err := writeChartFile(*chart)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchrun:", err)
			os.Exit(1)
		}
		fmt.Println("written to", out)
		return
	}

	if *edgeEnv != "" {
		h.edgeEnv = strings.Split(*edgeEnv, ",")
	}
	sel, err := loadgen.Select(scenarios(h), flag.Args(), scenarioName)
	if err == nil {
		err = h.selectTargets(*servers, *profile > 0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(2)
	}
	if err := syscall.Setpriority(syscall.PRIO_PROCESS, 0, *nice); err != nil {
		fmt.Fprintf(os.Stderr, "benchrun: cannot set niceness %d (%v): figures may suffer from other load\n", *nice, err)
	}
	h.nice = *nice
	h.php = slices.ContainsFunc(sel, func(s *scenario) bool { return s.php })
	if err := h.setup(); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		fmt.Fprintln(os.Stderr, "\nbenchrun: interrupted, stopping servers")
		h.teardown()
		os.Exit(130)
	}()
	if *profile > 0 {
		err = h.profileEdge(sel, *profile)
	} else {
		err = h.compare(sel)
	}
	h.teardown()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func scenarioName(s *scenario) string { return s.name }

func (h *harness) selectTargets(list string, profile bool) error {
	for _, name := range strings.Split(list, ",") {
		i := slices.IndexFunc(targets(), func(t *target) bool { return t.name == name })
		if i < 0 {
			return fmt.Errorf("unknown server %q (have edge, nginx, caddy, bare)", name)
		}
		h.targets = append(h.targets, targets()[i])
	}
	if profile {
		i := slices.IndexFunc(h.targets, func(t *target) bool { return t.name == "edge" })
		if i < 0 {
			return fmt.Errorf("-profile needs edge among -servers")
		}
		h.targets = []*target{h.targets[i]}
		h.targets[0].adminPort = 20180
	}
	return nil
}

// setup makes the work directory (test files, certificate) and starts the
// backend.
func (h *harness) setup() error {
	var err error
	if h.dir, err = os.MkdirTemp("", "edge-bench-"); err != nil {
		return err
	}
	// nginx's worker runs as nobody and must read the files.
	if err := os.Chmod(h.dir, 0o755); err != nil {
		return err
	}
	h.www = filepath.Join(h.dir, "www")
	for _, d := range []string{filepath.Join(h.www, "static"), filepath.Join(h.dir, "nginx-tmp")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for name, size := range map[string]int{"1k.bin": 1 << 10, "1m.bin": 1 << 20} {
		b := make([]byte, size)
		rand.Read(b)
		if err := os.WriteFile(filepath.Join(h.www, "static", name), b, 0o644); err != nil {
			return err
		}
	}
	h.cert, h.key = filepath.Join(h.dir, "cert.pem"), filepath.Join(h.dir, "key.pem")
	out, err := exec.Command("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
		"-nodes", "-keyout", h.key, "-out", h.cert, "-days", "30", "-subj", "/CN=localhost",
		"-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1").CombinedOutput()
	if err != nil {
		return fmt.Errorf("openssl: %w: %s", err, out)
	}
	if h.php {
		if err := h.startPHP(); err != nil {
			return fmt.Errorf("php-fpm: %w", err)
		}
	}
	if err := portsFree(24000); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	h.backend = exec.Command("taskset", "-c", loadCore, filepath.Join(h.binDir, "backend"), "-addr", backendAddr)
	h.backend.Env = append(os.Environ(), "GOMAXPROCS=1")
	h.backend.Stderr = os.Stderr
	if err := h.backend.Start(); err != nil {
		return fmt.Errorf("backend: %w", err)
	}
	for range 50 {
		if resp, err := h.client.Get("http://" + backendAddr + "/"); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("backend did not start on %s", backendAddr)
}

func (h *harness) teardown() {
	for _, t := range h.targets {
		h.stop(t)
	}
	if h.phpFPM != nil && h.phpFPM.Process != nil {
		h.phpFPM.Process.Signal(syscall.SIGTERM)
		h.phpFPM.Wait()
		h.phpFPM = nil
	}
	if h.backend != nil && h.backend.Process != nil {
		h.backend.Process.Kill()
		h.backend.Wait()
		h.backend = nil
	}
	if h.dir != "" && os.Getenv("BENCH_KEEP") == "" {
		os.RemoveAll(h.dir)
	}
}

// compare runs the selected scenarios on every target and reports.
func (h *harness) compare(sel []*scenario) error {
	started := time.Now()
	rep := &report{h: h, started: started}
	w := io.MultiWriter(os.Stdout, &rep.text)
	rep.header(w)
	for _, s := range sel {
		fmt.Fprintf(os.Stderr, "== %s: %s\n", s.name, s.what)
		res, err := h.runScenario(s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		rep.scenario(w, s, res)
	}
	rep.summary(w, time.Since(started))
	if h.outFile != "" {
		if err := os.MkdirAll(filepath.Dir(h.outFile), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(h.outFile, []byte(rep.text.String()), 0o644); err != nil {
			return err
		}
		fmt.Printf("\nwritten to %s\n", h.outFile)
		if svg, err := writeChartFile(h.outFile); err != nil {
			fmt.Fprintln(os.Stderr, "benchrun: no chart:", err)
		} else {
			fmt.Printf("chart: %s\n", svg)
		}
	}
	return nil
}

// runScenario returns, for each target name, one result per round.
func (h *harness) runScenario(s *scenario) (map[string][]result, error) {
	res := map[string][]result{}
	rounds := h.rounds
	if s.fresh {
		rounds = h.memRounds
	}
	h.http3 = s.http3
	if !s.fresh {
		for _, t := range h.targets {
			if s.only != nil && !slices.Contains(s.only, t.name) {
				continue
			}
			if err := h.start(t); err != nil {
				return nil, err
			}
		}
		defer func() {
			for _, t := range h.targets {
				h.stop(t)
			}
		}()
	}
	for r := range rounds {
		for i := range h.targets {
			t := h.targets[(i+r)%len(h.targets)]
			if s.only != nil && !slices.Contains(s.only, t.name) {
				continue
			}
			if s.fresh {
				if err := h.start(t); err != nil {
					return nil, err
				}
			}
			quiet := h.waitQuiet()
			if !quiet {
				h.noisy++
			}
			m, err := s.measure(h, t)
			if s.fresh {
				h.stop(t)
			}
			if err != nil {
				return nil, fmt.Errorf("%s round %d: %w", t.name, r+1, err)
			}
			note := ""
			if !quiet {
				note = " (machine busy with other work)"
			}
			fmt.Fprintf(os.Stderr, "   round %d %-6s %s%s\n", r+1, t.name, m, note)
			res[t.name] = append(res[t.name], m)
		}
	}
	return res, nil
}

func (r result) String() string {
	var parts []string
	for _, k := range []string{mRate, mP99, mMiBs, mCPU, mErrors, mKiBConn, mRSS0, mRSS1} {
		if v, ok := r[k]; ok {
			parts = append(parts, fmt.Sprintf("%s=%.4g", k, v))
		}
	}
	return strings.Join(parts, " ")
}

// profileEdge runs edge alone under each scenario's load and saves a CPU
// profile from its admin listener, then prints the top functions.
func (h *harness) profileEdge(sel []*scenario, d time.Duration) error {
	t := h.targets[0]
	saved := h.dur
	h.dur = d + 2*time.Second
	defer func() { h.dur = saved }()
	for _, s := range sel {
		if s.fresh {
			fmt.Fprintf(os.Stderr, "skipping %s: no CPU profile for a memory scenario\n", s.name)
			continue
		}
		if err := h.start(t); err != nil {
			return err
		}
		done := make(chan error, 1)
		go func() { _, err := s.measure(h, t); done <- err }()
		time.Sleep(h.warmup + 2*time.Second)
		url := fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", t.adminPort, int(d.Seconds()))
		resp, err := (&http.Client{Timeout: d + 30*time.Second}).Get(url)
		var prof []byte
		if err == nil {
			prof, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("GET %s: %s: %s", url, resp.Status, prof)
			}
		}
		loadErr := <-done
		h.stop(t)
		if err != nil {
			return err
		}
		if loadErr != nil {
			return loadErr
		}
		file := filepath.Join(filepath.Dir(h.outFile), fmt.Sprintf("%s-edge-%s.pprof", time.Now().Format("2006-01-02_1504"), s.name))
		if h.outFile == "" {
			file = filepath.Join(h.dir, "edge-"+s.name+".pprof")
		}
		os.MkdirAll(filepath.Dir(file), 0o755)
		if err := os.WriteFile(file, prof, 0o644); err != nil {
			return err
		}
		fmt.Printf("== %s: edge CPU profile (%s) %s\n", s.name, d, file)
		for _, args := range [][]string{{"-top", "-nodecount=30"}, {"-top", "-cum", "-nodecount=40"}} {
			top, err := exec.Command("go", append(append([]string{"tool", "pprof"}, args...), file)...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("go tool pprof: %w: %s", err, top)
			}
			os.Stdout.Write(top)
			fmt.Println()
		}
	}
	return nil
}
