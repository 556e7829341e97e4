// Package sysinfo reads what the benchmark reports say about the machine
// and its processes, from /proc. Shared by bench/cmd/benchrun and
// bench/cmd/hubload.
package sysinfo

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
)

// CPUStat reads the busy and total jiffies of one line of /proc/stat:
// "cpu" for all CPUs, "cpu0" for CPU 0.
func CPUStat(name string) (busy, total float64) {
	b, _ := os.ReadFile("/proc/stat")
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[0] != name {
			continue
		}
		for i, s := range f[1:] {
			if i >= 8 { // guest time is already counted in user
				break
			}
			v, _ := strconv.ParseFloat(s, 64)
			total += v
			if i != 3 && i != 4 { // idle, iowait
				busy += v
			}
		}
	}
	return busy, total
}

// LoadAvg returns the 1, 5 and 15 minute load averages, or "?".
func LoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// CPUModel returns the first CPU's model name, or "unknown CPU".
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// Tail returns the last 800 bytes of a file (a server's log), trimmed.
func Tail(file string) string {
	b, _ := os.ReadFile(file)
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return strings.TrimSpace(string(b))
}

// RSSKiB returns a process's VmRSS in KiB, or 0.
func RSSKiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return n
		}
	}
	return 0
}

// GoMemory reads the Go heap in use and the goroutine stacks from a
// Prometheus text page (go_memstats_*), in bytes; 0 if unavailable.
func GoMemory(c *http.Client, url string) (heap, stack float64) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "go_memstats_heap_inuse_bytes "); ok {
			heap, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
		if v, ok := strings.CutPrefix(line, "go_memstats_stack_inuse_bytes "); ok {
			stack, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return heap, stack
}
