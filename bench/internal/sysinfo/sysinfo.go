// Package sysinfo reads what the benchmark reports say about the machine
// and its processes, from /proc. Shared by bench/cmd/benchrun and
// bench/cmd/hubload.
package sysinfo

import (
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
