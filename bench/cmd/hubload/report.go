package main

import (
	"fmt"
	"io"
	"math"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"edge/bench/internal/sysinfo"
)

type report struct {
	b    *bench
	srvs []*server
	text strings.Builder
}

type metric struct {
	key, label string
	sum        bool // summed over rounds (counts), else the median
}

var scenarioMetrics = []metric{
	{key: "rate", label: "deliveries/s"},
	{key: "lost", label: "lost deliveries", sum: true},
	{key: "p50_ms", label: "p50 ms"},
	{key: "p99_ms", label: "p99 ms"},
	{key: "max_ms", label: "max ms"},
	{key: "cpu", label: "server CPU %"},
	{key: "cpu_node_max", label: "busiest node CPU %"},
	{key: "frames_per_write", label: "frames per write"},
	{key: "server_dropped", label: "frames dropped (server)", sum: true},
	{key: "slow_clients", label: "slow clients closed", sum: true},
	{key: "closed", label: "connections ended early", sum: true},
	{key: "dial_errors", label: "connect errors", sum: true},
	{key: "publish_errors", label: "publish errors", sum: true},
	{key: "publish_s", label: "publishing took s"},
	{key: "load_busy", label: "load receiving busy %"},
	{key: "load_cpu", label: "load tool CPU %"},
	{key: "redis_cpu", label: "redis-server CPU %"},
	{key: "load_core", label: "load core busy %"},
}

var memoryMetrics = []metric{
	{key: "kib_rss", label: "KiB per conn (VmRSS delta)"},
	{key: "kib_heap", label: "Go heap in use, KiB per conn"},
	{key: "kib_stack", label: "goroutine stacks, KiB per conn"},
	{key: "rss_mib", label: "VmRSS MiB with all open"},
}

func (rp *report) header(w io.Writer) {
	b := rp.b
	fmt.Fprintf(w, "edge hub benchmark, %s\n", b.started.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(w, "machine: %s, %d CPUs, kernel %s; load average at start: %s\n",
		sysinfo.CPUModel(), runtime.NumCPU(), firstLine("uname", "-r"), b.loadStart)
	names := []string{}
	seen := map[string]bool{}
	for _, s := range rp.srvs {
		switch {
		case s.bin != "":
			if !seen[s.bin] {
				seen[s.bin] = true
				v := firstLine(s.bin, "version")
				if s.bin == b.edgeOldBin && b.edgeOldNote != "" {
					v += " [" + b.edgeOldNote + "]"
				}
				names = append(names, v)
			}
		case s.name == "bare":
			names = append(names, "bare: gorilla PreparedMessage, one write per delivery ("+runtime.Version()+")")
		case s.name == "centrifugo":
			names = append(names, firstLine(b.centrifugoBin, "version"))
		}
	}
	fmt.Fprintf(w, "servers: %s\n", strings.Join(names, " | "))
	if b.centrifugoBin == "" && b.centrifugoNote != "" {
		fmt.Fprintf(w, "centrifugo: not measured: %s\n", b.centrifugoNote)
	}
	fmt.Fprintf(w, "broker: %s on %s (private, no persistence); publisher: PUBLISH edge:bench (edge-cluster, redis-history: FCALL edge_publish 1 bench), %d-byte JSON payload with its send time\n",
		firstLine(b.redisBin, "--version"), b.redisAddr, b.size)
	fmt.Fprintf(w, "pinning: server on CPU %s with GOMAXPROCS=1; hubload load (GOMAXPROCS=1) and redis-server on CPU %s; niceness %d\n",
		serverCore, loadCore, b.nice)
	if b.spin {
		fmt.Fprintln(w, "load: one epoll receiver that polls without sleeping (-spin): the load core shows 100% busy; \"load receiving busy %\" is the time it spent reading")
	} else {
		fmt.Fprintln(w, "load: one epoll receiver that sleeps in epoll_wait (-spin=false): servers pay for waking it")
	}
	fmt.Fprintf(w, "method: each server started afresh per measurement; %d round(s), order rotated; medians of rounds (counts summed); edge hub queue_size %d, pings pushed past the run\n",
		b.rounds, b.queueSize)
	if len(b.edgeEnv) > 0 {
		fmt.Fprintf(w, "edge environment: %s\n", strings.Join(b.edgeEnv, " "))
	}
	fmt.Fprintln(w, "ratios: edge/X (history-cost: redis-history/X); above 1 is better for deliveries/s and frames per write, below 1 for latency, CPU and memory")
}

func firstLine(cmd string, args ...string) string {
	out, err := exec.Command(cmd, args...).Output()
	if err != nil {
		return cmd + " (version unknown)"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

func others(srvs []*server, base string) []*server {
	var o []*server
	for _, s := range srvs {
		if s.name != base {
			o = append(o, s)
		}
	}
	return o
}

func has(srvs []*server, base string) bool {
	return slices.ContainsFunc(srvs, func(s *server) bool { return s.name == base })
}

// table prints rows of metrics for every server of srvs, with base/X
// ratios.
func (rp *report) table(w io.Writer, ms []metric, srvs []*server, base string, res map[string][]result) {
	tw := tabwriter.NewWriter(w, 8, 0, 2, ' ', tabwriter.AlignRight)
	cols := []string{"metric"}
	for _, s := range srvs {
		cols = append(cols, s.name)
	}
	if has(srvs, base) {
		for _, o := range others(srvs, base) {
			cols = append(cols, base+"/"+o.name)
		}
	}
	fmt.Fprintln(tw, strings.Join(cols, "\t")+"\t")
	for _, m := range ms {
		row := []string{m.label}
		vals := map[string]float64{}
		seen := false
		for _, s := range srvs {
			v, ok := aggregate(res[s.name], m)
			vals[s.name] = v
			if ok {
				row = append(row, num(v))
			} else {
				row = append(row, "-")
			}
			seen = seen || ok
		}
		if !seen {
			continue
		}
		if has(srvs, base) {
			for _, o := range others(srvs, base) {
				row = append(row, ratio(vals[base], vals[o.name], m))
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
}

func (rp *report) scenario(w io.Writer, sc *scenario, srvs []*server, res map[string][]result) {
	fmt.Fprintf(w, "\n== %s: %s\n", sc.name, sc.what)
	rp.table(w, scenarioMetrics, srvs, sc.baseName(), res)
}

// memory shows the idle-connection memory measured before publishing in
// the scenarios with the most connections.
func (rp *report) memory(w io.Writer, sel []*scenario, all map[string]map[string][]result) {
	most := 0
	for _, sc := range sel {
		most = max(most, sc.conns)
	}
	res := map[string][]result{}
	var from []string
	var srvs []*server
	for _, sc := range sel {
		if sc.conns != most {
			continue
		}
		from = append(from, sc.name)
		for name, rs := range all[sc.name] {
			res[name] = append(res[name], rs...)
		}
	}
	for _, s := range rp.srvs {
		if _, ok := res[s.name]; ok && !has(srvs, s.name) {
			srvs = append(srvs, s)
		}
	}
	if len(from) == 0 {
		return
	}
	all["idle-mem"] = res
	fmt.Fprintf(w, "\n== idle-mem: memory per idle subscribed connection, %d held (measured %s after connecting, before publishing, in %s)\n",
		most, rp.b.settle, strings.Join(from, ", "))
	rp.table(w, memoryMetrics, srvs, "edge", res)
}

// targets checks DESIGN.md's hub targets.
func (rp *report) targets(w io.Writer, all map[string]map[string][]result) {
	med := func(sc, srv, key string) (float64, bool) {
		return aggregate(all[sc][srv], metric{key: key})
	}
	sum := func(sc, srv, key string) (float64, bool) {
		return aggregate(all[sc][srv], metric{key: key, sum: true})
	}
	fmt.Fprintln(w, "\n== targets (DESIGN.md)")
	b := rp.b
	if b.conns != 10000 || b.dur != 20*time.Second || b.coalConns != 2000 || b.coalRate != 400 || b.coalDur < 10*time.Second {
		fmt.Fprintln(w, "(the targets are set for the default sizes: 10,000 × 5 and 10/s for 20 s, 2,000 × 400/s; this run used others)")
	}
	tw := tabwriter.NewWriter(w, 8, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "target\tmeasured\tresult\t")
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	if e, ok := med("fanout-5", "edge", "p99_ms"); ok {
		if bare, ok := med("fanout-5", "bare", "p99_ms"); ok && bare > 0 {
			fmt.Fprintf(tw, "fanout-5: edge p99 within 1.2x of bare\t%.1f ms vs %.1f ms = %.2fx\t%s\t\n", e, bare, e/bare, verdict(e <= 1.2*bare))
		}
	}
	if e, ok := med("fanout-10", "edge", "p99_ms"); ok {
		lost, _ := sum("fanout-10", "edge", "lost")
		fmt.Fprintf(tw, "fanout-10: no loss, p99 < 250 ms\tlost %.0f, p99 %.1f ms\t%s\t\n", lost, e, verdict(lost == 0 && e < 250))
	}
	if e, ok := med("coalesce-400", "edge", "rate"); ok {
		// 2,000 × 400/s offers exactly 800,000 deliveries/s: the target
		// is met by keeping up with all of it (-coalesce-rate higher
		// shows the headroom).
		lost, _ := sum("coalesce-400", "edge", "lost")
		p99, _ := med("coalesce-400", "edge", "p99_ms")
		offered := float64(rp.b.coalConns) * rp.b.coalRate
		fmt.Fprintf(tw, "coalesce-400: > 800,000 deliveries/s (offered %s/s)\t%s/s, lost %.0f, p99 %.1f ms\t%s\t\n",
			num(offered), num(e), lost, p99, verdict(offered >= 800000 && lost == 0 && e >= 0.99*offered))
	}
	if e, ok := med("cluster-3x3000", "edge-cluster", "rate"); ok {
		lost, _ := sum("cluster-3x3000", "edge-cluster", "lost")
		p99, _ := med("cluster-3x3000", "edge-cluster", "p99_ms")
		fmt.Fprintf(tw, "cluster-3x3000: no loss (issue 11)\t%s/s, lost %.0f, p99 %.1f ms\t%s\t\n", num(e), lost, p99, verdict(lost == 0))
	}
	if e, ok := aggregate(all["idle-mem"]["edge"], metric{key: "kib_rss"}); ok {
		h, _ := aggregate(all["idle-mem"]["edge"], metric{key: "kib_heap"})
		st, _ := aggregate(all["idle-mem"]["edge"], metric{key: "kib_stack"})
		fmt.Fprintf(tw, "idle-mem: < 10 KiB per subscribed connection\t%.2f KiB RSS (Go heap %.2f + stacks %.2f KiB)\t%s\t\n", e, h, st, verdict(e < 10))
	}
	tw.Flush()
	fmt.Fprintln(w, "reference (DESIGN.md, Centrifugo v6.9 measured the same way): 47.9 KiB per idle connection; 10k×5/s p99 219 ms at 82% CPU; 10k×10/s p99 543 ms at 99% CPU")
}

// aggregate is the median over the rounds that measured m (the sum for
// counts); ok is false when none did.
func aggregate(rs []result, m metric) (float64, bool) {
	var vs []float64
	for _, r := range rs {
		if r["failed"] != 0 {
			continue
		}
		if v, ok := r[m.key]; ok {
			vs = append(vs, v)
		}
	}
	if len(vs) == 0 {
		return 0, false
	}
	if m.sum {
		var s float64
		for _, v := range vs {
			s += v
		}
		return s, true
	}
	slices.Sort(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2], true
	}
	return (vs[n/2-1] + vs[n/2]) / 2, true
}

func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1000:
		return commas(int64(math.Round(v)))
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func ratio(a, b float64, m metric) string {
	if m.sum || math.Abs(a) < 0.05 || math.Abs(b) < 0.05 {
		return "-"
	}
	return fmt.Sprintf("%.2f", a/b)
}
