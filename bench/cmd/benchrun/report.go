package main

import (
	"fmt"
	"io"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"edge/bench/internal/sysinfo"
)

// report formats the tables and keeps a copy of everything printed.
type report struct {
	h       *harness
	started time.Time
	text    strings.Builder
	// rows of the summary table, filled by scenario.
	summaryRows [][]string
}

func (rp *report) header(w io.Writer) {
	h := rp.h
	fmt.Fprintf(w, "edge side-by-side benchmark, %s\n", rp.started.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %s, %d CPUs, kernel %s\n", sysinfo.CPUModel(), runtime.NumCPU(), firstLine("uname", "-r"))
	fmt.Fprintf(w, "servers: %s | %s | caddy %s | bare: net/http of %s\n",
		firstLine(h.edgeBin, "version"), firstLine("nginx", "-v"), firstLine("caddy", "version"), runtime.Version())
	wrkVersion, _, _ := strings.Cut(firstLine("wrk", "-v"), " Copyright")
	fmt.Fprintf(w, "load: %s; tlsload and wsload (bench/cmd), built with %s\n", wrkVersion, runtime.Version())
	fmt.Fprintf(w, "pinning: servers on CPU %s (Go servers with GOMAXPROCS=1, nginx worker_processes 1); load and backend on CPU %s\n", serverCore, loadCore)
	if len(h.edgeEnv) > 0 {
		fmt.Fprintf(w, "edge environment: %s\n", strings.Join(h.edgeEnv, " "))
	}
	fmt.Fprintf(w, "niceness %d for every benchmark process; load average at start: %s\n", h.nice, sysinfo.LoadAvg())
	fmt.Fprintf(w, "method: %d rounds (ws-idle-mem: %d), servers interleaved in a rotated order, %s warmup + %s measured each; medians shown\n",
		h.rounds, h.memRounds, h.warmup, h.dur)
	var hb []string
	for _, t := range h.targets {
		if err := h.start(t); err != nil {
			hb = append(hb, fmt.Sprintf("%s (did not start: %v)", t.name, err))
		} else {
			hb = append(hb, fmt.Sprintf("%s %d B", t.name, headerBytes(t.httpPort)))
		}
		h.stop(t)
	}
	fmt.Fprintf(w, "response header size for the 1 KiB file: %s\n", strings.Join(hb, ", "))
	fmt.Fprintln(w, "ratios: edge/X; above 1 is better for rates, below 1 is better for p99 ms, memory and errors")
}

func (rp *report) others() []*target {
	var o []*target
	for _, t := range rp.h.targets {
		if t.name != "edge" {
			o = append(o, t)
		}
	}
	return o
}

func (rp *report) scenario(w io.Writer, s *scenario, res map[string][]result) {
	fmt.Fprintf(w, "\n== %s: %s\n", s.name, s.what)
	tw := tabwriter.NewWriter(w, 8, 0, 2, ' ', tabwriter.AlignRight)
	cols := []string{"metric"}
	for _, t := range rp.h.targets {
		cols = append(cols, t.name)
	}
	_, hasEdge := res["edge"]
	if hasEdge {
		for _, o := range rp.others() {
			cols = append(cols, "edge/"+o.name)
		}
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	headline := s.headline
	if headline == nil {
		headline = []string{mRate, mP99, mPerCore}
	}
	for _, m := range s.metrics {
		row := []string{m.label}
		vals := map[string]float64{}
		any := false
		for _, t := range rp.h.targets {
			v := aggregate(res[t.name], m)
			vals[t.name] = v
			row = append(row, num(v))
			any = any || v != 0
		}
		if !any && !m.sum {
			continue // not measured in this scenario (MiB/s of tlsload, wsload)
		}
		if hasEdge {
			for _, o := range rp.others() {
				row = append(row, ratio(vals["edge"], vals[o.name], m))
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		if slices.Contains(headline, m.key) {
			rp.summaryRows = append(rp.summaryRows, append([]string{s.name, m.label}, row[1:]...))
		}
	}
	tw.Flush()
}

func (rp *report) summary(w io.Writer, took time.Duration) {
	fmt.Fprintf(w, "\n== summary (medians; run took %s; %d measurements started while other work used over 10%% of the CPUs)\n",
		took.Round(time.Second), rp.h.noisy)
	tw := tabwriter.NewWriter(w, 8, 0, 2, ' ', tabwriter.AlignRight)
	cols := []string{"scenario", "metric"}
	for _, t := range rp.h.targets {
		cols = append(cols, t.name)
	}
	if slices.ContainsFunc(rp.h.targets, func(t *target) bool { return t.name == "edge" }) {
		for _, o := range rp.others() {
			cols = append(cols, "edge/"+o.name)
		}
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	for _, r := range rp.summaryRows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	tw.Flush()
}

// aggregate is the median over rounds, or the sum for error counts.
func aggregate(rs []result, m metric) float64 {
	var vs []float64
	for _, r := range rs {
		vs = append(vs, r[m.key])
	}
	if len(vs) == 0 {
		return 0
	}
	if m.sum {
		var s float64
		for _, v := range vs {
			s += v
		}
		return s
	}
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

func ratio(edge, other float64, m metric) string {
	if m.sum || other == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", edge/other)
}

// firstLine runs a version command and returns the first line of its
// output (nginx -v writes to stderr).
func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil && len(out) == 0 {
		return "(" + err.Error() + ")"
	}
	l, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(l)
}
