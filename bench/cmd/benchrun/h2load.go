package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// h2Scenario is an HTTP/2 scenario measured with h2load (Debian's
// nghttp2-client): conns connections with streams concurrent streams each.
// Browsers fetch pages and their assets this way over HTTPS.
func h2Scenario(h *harness, name, what, path string, conns, streams int) *scenario {
	return &scenario{name: name, metrics: rateMetrics("req/s"),
		what: fmt.Sprintf("%s: h2load -t1 -c%d -m%d -D%s", what, conns, streams, secs(h.dur)),
		measure: func(h *harness, t *target) (result, error) {
			return h.h2load(t, conns, streams, fmt.Sprintf("https://127.0.0.1:%d%s", t.httpsPort, path))
		}}
}

// h2load runs an unmeasured warmup, then the measured h2load run, sampling
// the server's CPU around it. h2load prints no percentiles, so p99 comes
// from its per-request log.
func (h *harness) h2load(t *target, conns, streams int, url string) (result, error) {
	args := func(d time.Duration, log string) []string {
		a := []string{"-c", loadCore, "h2load", "-t1", "-c" + strconv.Itoa(conns), "-m" + strconv.Itoa(streams),
			"-D", secs(d)}
		if log != "" {
			a = append(a, "--log-file="+log)
		}
		return append(a, url)
	}
	if h.warmup > 0 {
		if out, err := h.run(args(h.warmup, "")); err != nil {
			return nil, fmt.Errorf("h2load warmup: %w: %s", err, out)
		}
	}
	dir, err := os.MkdirTemp("", "edge-bench-h2load")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	log := filepath.Join(dir, "requests.tsv")
	cpu0, t0, core0 := t.cpuSeconds(), time.Now(), sampleCore(loadCore)
	out, err := h.run(args(h.dur, log))
	cpu1, t1, loadBusy := t.cpuSeconds(), time.Now(), core0.busySince(loadCore)
	if err != nil {
		return nil, fmt.Errorf("h2load: %w: %s", err, out)
	}
	r, err := parseH2load(out)
	if err != nil {
		return nil, err
	}
	if r[mP99], err = h2loadP99(log); err != nil {
		return nil, err
	}
	r.addCPU(cpu1-cpu0, t1.Sub(t0))
	r[mLoadCPU] = 100 * loadBusy
	return r, nil
}

var (
	reH2Finished = regexp.MustCompile(`finished in [\d.]+m?s, ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s`)
	reH2Requests = regexp.MustCompile(`requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	reH2Status   = regexp.MustCompile(`status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	reH2Proto    = regexp.MustCompile(`Application protocol: (\S+)`)
)

// parseH2load reads h2load's summary. A run that did not speak h2, or
// whose requests failed or got non-2xx answers, counts errors.
func parseH2load(out string) (result, error) {
	m := reH2Finished.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Errorf("no req/s in h2load output: %s", out)
	}
	r := result{}
	r[mRate], _ = strconv.ParseFloat(m[1], 64)
	v, _ := strconv.ParseFloat(m[2], 64)
	r[mMiBs] = v * map[string]float64{"B": 1.0 / (1 << 20), "KB": 1.0 / (1 << 10), "MB": 1, "GB": 1 << 10}[m[3]]
	if p := reH2Proto.FindStringSubmatch(out); p == nil || p[1] != "h2" {
		return nil, fmt.Errorf("h2load did not negotiate h2: %s", out)
	}
	for _, re := range []*regexp.Regexp{reH2Requests, reH2Status} {
		if m := re.FindStringSubmatch(out); m != nil {
			for _, s := range m[1:] {
				n, _ := strconv.Atoi(s)
				r[mErrors] += float64(n)
			}
		}
	}
	return r, nil
}

// h2loadP99 is the 99th percentile, in ms, of the third column of an
// h2load --log-file: microseconds from a request's start to the end of its
// response.
func h2loadP99(path string) (float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var us []float64
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		if v, err := strconv.ParseFloat(f[2], 64); err == nil {
			us = append(us, v)
		}
	}
	if len(us) == 0 {
		return 0, fmt.Errorf("h2load wrote no requests to %s", path)
	}
	slices.Sort(us)
	return us[min(len(us)-1, len(us)*99/100)] / 1000, nil
}
