package main

// The servers the harness compares, and how to start, check and read
// each one.

import (
	"bytes"
	"encoding/json"
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
	"time"

	"edge/bench/internal/sysinfo"
)

// Cores: servers on serverCore, load and redis-server on loadCore.
const (
	serverCore = "1"
	loadCore   = "0"
)

// Ports of the servers (fixed, so that a stale server is noticed).
const (
	edgePort       = 21800
	edgeAdminPort  = 21880
	edgeTLSPort    = 21843
	barePort       = 21801
	centrifugoPort = 21802
	// edge-cluster: node i listens on clusterPort+i, its admin on
	// clusterAdminPort+i.
	clusterPort      = 21811
	clusterAdminPort = 21891
	clusterNodes     = 3
)

type server struct {
	name  string
	proto string // the load's -proto
	// url is the WebSocket URL for the load; a cluster's nodes' URLs,
	// comma-separated, take the connections in turn.
	url string
	// apiURL, when set, is where the load publishes (Centrifugo's HTTP API)
	// instead of Redis.
	apiURL string
	// fcall: the load publishes with FCALL edge_publish (edge's history in
	// Redis) instead of PUBLISH.
	fcall       bool
	metricsURLs []string // Prometheus text with go_memstats_*, one per process
	ports       []int
	// nodes is the number of processes (a cluster); 0 means 1. They all
	// run on the server core.
	nodes int
	// bin is the edge binary of an edge server (its version goes in the
	// report header); empty for the others.
	bin string
	// adminPort, when set, serves /debug/pprof (node 0's for a cluster).
	adminPort int
	// argv and env start process i; ready reports whether process i serves
	// and its broker subscription is up; stats returns counters after a run
	// (summed over the processes).
	argv  func(b *bench, i int) ([]string, error)
	env   []string
	ready func(c *http.Client, i int) error
	stats func(c *http.Client) map[string]float64

	cmds []*exec.Cmd
	logs []*os.File
}

func (s *server) count() int { return max(s.nodes, 1) }

func (b *bench) servers(names []string) ([]*server, error) {
	all := map[string]*server{
		"edge":         b.edgeServer("edge", fmt.Sprintf("ws://127.0.0.1:%d/socket/?channel=bench", edgePort), false),
		"edge-wss":     b.edgeServer("edge-wss", fmt.Sprintf("wss://127.0.0.1:%d/socket/?channel=bench", edgeTLSPort), true),
		"edge-cluster": b.edgeCluster(),
		// history-cost: the same hub with its history in Redis (published
		// with FCALL edge_publish, as backends do now), live only (plain
		// PUBLISH, which the current edge delivers without history), and
		// the edge before history moved to Redis (plain PUBLISH, history
		// kept by each node).
		"redis-history": b.edgeVariant("redis-history", b.edgeBin, true),
		"live-only":     b.edgeVariant("live-only", b.edgeBin, false),
		"node-history":  b.edgeVariant("node-history", b.edgeOldBin, false),
		"bare": {
			name:        "bare",
			proto:       "bare",
			url:         fmt.Sprintf("ws://127.0.0.1:%d/socket/", barePort),
			metricsURLs: []string{fmt.Sprintf("http://127.0.0.1:%d/metrics", barePort)},
			ports:       []int{barePort},
			argv: func(b *bench, _ int) ([]string, error) {
				return []string{b.self, "bare", "-listen", fmt.Sprintf("127.0.0.1:%d", barePort),
					"-redis", b.redisAddr, "-pattern", "edge:*"}, nil
			},
			ready: func(c *http.Client, _ int) error {
				return getOK(c, fmt.Sprintf("http://127.0.0.1:%d/healthz", barePort))
			},
			stats: func(c *http.Client) map[string]float64 {
				var st map[string]any
				if getJSON(c, fmt.Sprintf("http://127.0.0.1:%d/stats", barePort), &st) != nil {
					return nil
				}
				m := numbers(st, "writes", "failed", "messages")
				m["written"] = m["writes"]
				return m
			},
		},
		"centrifugo": {
			name:        "centrifugo",
			proto:       "centrifugo",
			url:         fmt.Sprintf("ws://127.0.0.1:%d/connection/websocket", centrifugoPort),
			apiURL:      fmt.Sprintf("http://127.0.0.1:%d/api/publish", centrifugoPort),
			metricsURLs: []string{fmt.Sprintf("http://127.0.0.1:%d/metrics", centrifugoPort)},
			ports:       []int{centrifugoPort},
			argv: func(b *bench, _ int) ([]string, error) {
				cfg := filepath.Join(b.dir, "centrifugo.json")
				if err := os.WriteFile(cfg, []byte(b.centrifugoConfig()), 0o644); err != nil {
					return nil, err
				}
				return []string{b.centrifugoBin, "--config", cfg}, nil
			},
			ready: func(c *http.Client, _ int) error {
				return getOK(c, fmt.Sprintf("http://127.0.0.1:%d/health", centrifugoPort))
			},
			stats: func(c *http.Client) map[string]float64 { return nil },
		},
	}
	var out []*server
	for _, n := range names {
		s, ok := all[n]
		if !ok {
			return nil, fmt.Errorf("unknown server %q (have edge, edge-wss, bare, centrifugo, edge-cluster, redis-history, live-only, node-history)", n)
		}
		if n == "centrifugo" && b.centrifugoBin == "" || n == "node-history" && b.edgeOldBin == "" {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// edgeServer is edge with one hub route, its clients on plain ws or, with
// tls, on wss (edge-wss: the same hub behind edge's HTTPS listener).
func (b *bench) edgeServer(name, url string, tls bool) *server {
	return b.edgeNodes(name, b.edgeBin, url, tls, []int{edgePort}, []int{edgeAdminPort}, []int{edgePort, edgeTLSPort, edgeAdminPort})
}

// edgeVariant is edge on edge's port with binary bin; fcall says how the
// load publishes (history-cost).
func (b *bench) edgeVariant(name, bin string, fcall bool) *server {
	s := b.edgeNodes(name, bin, fmt.Sprintf("ws://127.0.0.1:%d/socket/?channel=bench", edgePort), false,
		[]int{edgePort}, []int{edgeAdminPort}, []int{edgePort, edgeTLSPort, edgeAdminPort})
	s.fcall = fcall
	return s
}

// edgeCluster is clusterNodes edge processes on the same Redis, all on the
// server core; the load spreads its connections over their ports and
// publishes with FCALL edge_publish (cluster-3x3000).
func (b *bench) edgeCluster() *server {
	var urls []string
	var http, admin, ports []int
	for i := range clusterNodes {
		urls = append(urls, fmt.Sprintf("ws://127.0.0.1:%d/socket/?channel=bench", clusterPort+i))
		http = append(http, clusterPort+i)
		admin = append(admin, clusterAdminPort+i)
	}
	ports = append(append(ports, http...), admin...)
	s := b.edgeNodes("edge-cluster", b.edgeBin, strings.Join(urls, ","), false, http, admin, ports)
	s.fcall = true
	return s
}

// edgeNodes is len(httpPorts) edge processes of bin with one hub route
// each (node i on httpPorts[i], its admin on adminPorts[i]), their clients
// on plain ws or, with tls, on wss (edge-wss: the same hub behind edge's
// HTTPS listener; one node only).
func (b *bench) edgeNodes(name, bin, url string, tls bool, httpPorts, adminPorts, ports []int) *server {
	var metrics []string
	for _, p := range adminPorts {
		metrics = append(metrics, fmt.Sprintf("http://127.0.0.1:%d/metrics", p))
	}
	hubStats := func(c *http.Client, i int) (map[string]any, error) {
		var st map[string]any
		err := getJSON(c, fmt.Sprintf("http://127.0.0.1:%d/hub/stats", adminPorts[i]), &st)
		return st, err
	}
	return &server{
		name:        name,
		proto:       "edge",
		url:         url,
		bin:         bin,
		metricsURLs: metrics,
		ports:       ports,
		nodes:       len(httpPorts),
		adminPort:   adminPorts[0],
		argv: func(b *bench, i int) ([]string, error) {
			file := "edge.yaml"
			if len(httpPorts) > 1 {
				file = fmt.Sprintf("edge-%d.yaml", i+1)
			}
			cfg := filepath.Join(b.dir, file)
			storage := filepath.Join(b.dir, strings.TrimSuffix(file, ".yaml")+"-storage")
			if err := os.WriteFile(cfg, []byte(b.edgeConfig(tls, httpPorts[i], adminPorts[i], storage)), 0o644); err != nil {
				return nil, err
			}
			return []string{bin, "run", "-config", cfg}, nil
		},
		env: b.edgeEnv,
		ready: func(c *http.Client, i int) error {
			st, err := hubStats(c, i)
			if err != nil {
				return err
			}
			if st["healthy"] != true {
				return fmt.Errorf("hub not healthy: %v", st["health"])
			}
			return nil
		},
		stats: func(c *http.Client) map[string]float64 {
			sum := map[string]float64{}
			for i := range adminPorts {
				st, err := hubStats(c, i)
				if err != nil {
					return nil
				}
				for k, v := range numbers(st, "written", "writes", "dropped", "slow_clients", "gaps", "published", "broker_lost") {
					sum[k] += v
				}
			}
			return sum
		},
	}
}

// edgeConfig is edge with one hub route on Redis. Pings are pushed past
// the run (the bare server sends none): the figures are about fan-out.
func (b *bench) edgeConfig(tls bool, httpPort, adminPort int, storage string) string {
	https, site := "", ""
	if tls {
		// A certificate made for the run (writeCert); the load does not
		// verify it.
		https = fmt.Sprintf("\n  https: \"127.0.0.1:%d\"", edgeTLSPort)
		site = fmt.Sprintf("\n    tls: { cert: %s, key: %s }\n    http_redirect: false\n    hsts: { enabled: false }",
			filepath.Join(b.dir, "cert.pem"), filepath.Join(b.dir, "key.pem"))
	}
	return fmt.Sprintf(`# edge for the hub benchmark (rendered by hubload bench)
listen:
  http: "127.0.0.1:%d"%s
admin: "127.0.0.1:%d"
server:
  pprof: true
log:
  level: warn
tls:
  storage: %s
redis:
  url: "redis://%s/0"
sites:
  - routes:
      - path: /socket/
        hub:
          channels: ["bench*"]
          origins: ["*"]
          queue_size: %d
          ping_interval: 5m
          idle_timeout: 10m%s
`, httpPort, https, adminPort, storage, b.redisAddr, b.queueSize, site)
}

// centrifugoConfig is Centrifugo v6 with its Redis engine, anonymous
// clients allowed to subscribe, the HTTP API open, and app-level pings
// pushed past the run as for edge.
func (b *bench) centrifugoConfig() string {
	return fmt.Sprintf(`{
  "http_server": {"address": "127.0.0.1", "port": %d},
  "log": {"level": "error"},
  "client": {"insecure": true, "allowed_origins": ["*"], "ping_interval": "300s", "pong_timeout": "60s"},
  "http_api": {"insecure": true},
  "engine": {"type": "redis", "redis": {"address": ["redis://%s"]}},
  "prometheus": {"enabled": true},
  "health": {"enabled": true},
  "usage_stats": {"disabled": true}
}
`, centrifugoPort, b.redisAddr)
}

func getJSON(c *http.Client, url string, v any) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func getOK(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func numbers(m map[string]any, keys ...string) map[string]float64 {
	out := map[string]float64{}
	for _, k := range keys {
		if v, ok := m[k].(float64); ok {
			out[k] = v
		}
	}
	return out
}

// start runs s's processes pinned to the server core, one after the
// other, and waits until each is ready.
func (b *bench) start(s *server) error {
	for _, p := range s.ports {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 200*time.Millisecond); err == nil {
			c.Close()
			return fmt.Errorf("port %d is already in use on 127.0.0.1", p)
		}
	}
	for i := range s.count() {
		if err := b.startOne(s, i); err != nil {
			b.stop(s)
			return err
		}
	}
	return nil
}

func (b *bench) startOne(s *server, i int) error {
	argv, err := s.argv(b, i)
	if err != nil {
		return err
	}
	name := s.name
	if s.count() > 1 {
		name = fmt.Sprintf("%s-%d", s.name, i+1)
	}
	log, err := os.OpenFile(filepath.Join(b.dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.logs = append(s.logs, log)
	cmd := exec.Command("taskset", append([]string{"-c", serverCore}, argv...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(append(os.Environ(), "GOMAXPROCS=1"), s.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	s.cmds = append(s.cmds, cmd)
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.ready(b.client, i)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start (log %s): %s", name, log.Name(), sysinfo.Tail(log.Name()))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 20s: %w (log %s)", name, err, log.Name())
		}
	}
}

// stop ends s's processes: SIGTERM to each process group, SIGKILL after 5 s.
func (b *bench) stop(s *server) {
	for _, cmd := range s.cmds {
		if cmd.Process != nil {
			stopGroup(cmd.Process.Pid, 5*time.Second)
		}
	}
	s.cmds = nil
	for _, l := range s.logs {
		l.Close()
	}
	s.logs = nil
}

func stopGroup(pid int, grace time.Duration) {
	syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if syscall.Kill(pid, 0) != nil || procState(pid) == "Z" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

// pids of the server's processes: taskset execs them, so they are the
// children's.
func (s *server) pids() []int {
	var ps []int
	for _, cmd := range s.cmds {
		if cmd.Process != nil {
			ps = append(ps, cmd.Process.Pid)
		}
	}
	return ps
}

// /proc readers.

func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func procState(pid int) string {
	if f := statFields(pid); len(f) > 0 {
		return f[0]
	}
	return ""
}

// cpuSeconds is the process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	const clkTck = 100 // USER_HZ on Linux
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return float64(u+s) / clkTck
}
