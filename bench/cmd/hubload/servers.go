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
)

type server struct {
	name  string
	proto string // the load's -proto
	url   string // WebSocket URL for the load
	// apiURL, when set, is where the load publishes (Centrifugo's HTTP API)
	// instead of Redis.
	apiURL     string
	metricsURL string // Prometheus text with go_memstats_*
	ports      []int
	// argv and env start the server; ready reports whether it serves and
	// its broker subscription is up; stats returns counters after a run.
	argv  func(b *bench) ([]string, error)
	env   []string
	ready func(c *http.Client) error
	stats func(c *http.Client) map[string]float64

	cmd *exec.Cmd
	log *os.File
}

func (b *bench) servers(names []string) ([]*server, error) {
	all := map[string]*server{
		"edge":     b.edgeServer("edge", fmt.Sprintf("ws://127.0.0.1:%d/socket/?channel=bench", edgePort), false),
		"edge-wss": b.edgeServer("edge-wss", fmt.Sprintf("wss://127.0.0.1:%d/socket/?channel=bench", edgeTLSPort), true),
		"bare": {
			name:       "bare",
			proto:      "bare",
			url:        fmt.Sprintf("ws://127.0.0.1:%d/socket/", barePort),
			metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", barePort),
			ports:      []int{barePort},
			argv: func(b *bench) ([]string, error) {
				return []string{b.self, "bare", "-listen", fmt.Sprintf("127.0.0.1:%d", barePort),
					"-redis", b.redisAddr, "-pattern", "edge:*"}, nil
			},
			ready: func(c *http.Client) error { return getOK(c, fmt.Sprintf("http://127.0.0.1:%d/healthz", barePort)) },
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
			name:       "centrifugo",
			proto:      "centrifugo",
			url:        fmt.Sprintf("ws://127.0.0.1:%d/connection/websocket", centrifugoPort),
			apiURL:     fmt.Sprintf("http://127.0.0.1:%d/api/publish", centrifugoPort),
			metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", centrifugoPort),
			ports:      []int{centrifugoPort},
			argv: func(b *bench) ([]string, error) {
				cfg := filepath.Join(b.dir, "centrifugo.json")
				if err := os.WriteFile(cfg, []byte(b.centrifugoConfig()), 0o644); err != nil {
					return nil, err
				}
				return []string{b.centrifugoBin, "--config", cfg}, nil
			},
			ready: func(c *http.Client) error {
				return getOK(c, fmt.Sprintf("http://127.0.0.1:%d/health", centrifugoPort))
			},
			stats: func(c *http.Client) map[string]float64 { return nil },
		},
	}
	var out []*server
	for _, n := range names {
		s, ok := all[n]
		if !ok {
			return nil, fmt.Errorf("unknown server %q (have edge, edge-wss, bare, centrifugo)", n)
		}
		if n == "centrifugo" && b.centrifugoBin == "" {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// edgeServer is edge with one hub route, its clients on plain ws or, with
// tls, on wss (edge-wss: the same hub behind edge's HTTPS listener).
func (b *bench) edgeServer(name, url string, tls bool) *server {
	return &server{
		name:       name,
		proto:      "edge",
		url:        url,
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", edgeAdminPort),
		ports:      []int{edgePort, edgeTLSPort, edgeAdminPort},
		argv: func(b *bench) ([]string, error) {
			cfg := filepath.Join(b.dir, "edge.yaml")
			if err := os.WriteFile(cfg, []byte(b.edgeConfig(tls)), 0o644); err != nil {
				return nil, err
			}
			return []string{b.edgeBin, "run", "-config", cfg}, nil
		},
		env: b.edgeEnv,
		ready: func(c *http.Client) error {
			var st struct {
				Healthy bool   `json:"healthy"`
				Health  string `json:"health"`
			}
			if err := getJSON(c, fmt.Sprintf("http://127.0.0.1:%d/hub/stats", edgeAdminPort), &st); err != nil {
				return err
			}
			if !st.Healthy {
				return fmt.Errorf("hub not healthy: %s", st.Health)
			}
			return nil
		},
		stats: func(c *http.Client) map[string]float64 {
			var st map[string]any
			if getJSON(c, fmt.Sprintf("http://127.0.0.1:%d/hub/stats", edgeAdminPort), &st) != nil {
				return nil
			}
			return numbers(st, "written", "writes", "dropped", "slow_clients", "gaps", "published", "broker_lost")
		},
	}
}

// edgeConfig is edge with one hub route on Redis. Pings are pushed past
// the run (the bare server sends none): the figures are about fan-out.
func (b *bench) edgeConfig(tls bool) string {
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
`, edgePort, https, edgeAdminPort, filepath.Join(b.dir, "edge-storage"), b.redisAddr, b.queueSize, site)
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

// start runs s pinned to the server core and waits until it is ready.
func (b *bench) start(s *server) error {
	for _, p := range s.ports {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 200*time.Millisecond); err == nil {
			c.Close()
			return fmt.Errorf("port %d is already in use on 127.0.0.1", p)
		}
	}
	argv, err := s.argv(b)
	if err != nil {
		return err
	}
	s.log, err = os.OpenFile(filepath.Join(b.dir, s.name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	s.cmd = exec.Command("taskset", append([]string{"-c", serverCore}, argv...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.Env = append(append(os.Environ(), "GOMAXPROCS=1"), s.env...)
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.ready(b.client)
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			s.cmd = nil
			return fmt.Errorf("%s exited at start (log %s): %s", s.name, s.log.Name(), sysinfo.Tail(s.log.Name()))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.stop(s)
			return fmt.Errorf("%s not ready after 20s: %w (log %s)", s.name, err, s.log.Name())
		}
	}
}

// stop ends s: SIGTERM to its process group, SIGKILL after 5 s.
func (b *bench) stop(s *server) {
	if s.cmd != nil && s.cmd.Process != nil {
		stopGroup(s.cmd.Process.Pid, 5*time.Second)
	}
	s.cmd = nil
	if s.log != nil {
		s.log.Close()
		s.log = nil
	}
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

// pid of the server process: taskset execs it, so it is the child's.
func (s *server) pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
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
