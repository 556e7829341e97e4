// Package testpeer starts real peer processes for tests: a private
// redis-server on a free loopback port, which a test can kill, restart and
// pause to simulate outages. Everything started is stopped in t.Cleanup.
package testpeer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// readyTimeout bounds how long redis-server may take to start.
const readyTimeout = 10 * time.Second

// RedisServer is a redis-server process owned by a test. Its methods are
// safe for concurrent use but meant to be called from the test goroutine.
type RedisServer struct {
	// Addr is "127.0.0.1:<port>"; it stays the same across Restart.
	Addr string

	t   testing.TB
	dir string
	// args returns redis-server's arguments for port; ready is the log
	// line (lowercase) that says it serves.
	args  func(port string) []string
	ready string

	mu     sync.Mutex
	proc   *os.Process // nil while killed; guarded by mu
	exited chan error  // receives the exit of proc; guarded by mu
}

// Redis starts a private redis-server and returns options for a client.
func Redis(t testing.TB) *redis.Options {
	return StartRedis(t).Options()
}

// StartRedis starts a private redis-server (no persistence, loopback only)
// on a free port and stops it when the test ends. The test fails when
// redis-server is not installed.
func StartRedis(t testing.TB) *RedisServer {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatal("redis-server not found: install it with the README test command (make test or .ci/run; apt-get install redis-server)")
	}
	s := &RedisServer{t: t, dir: t.TempDir(), ready: "ready to accept connections"}
	s.args = func(port string) []string {
		return []string{"--port", port, "--bind", "127.0.0.1", "--dir", s.dir,
			"--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"}
	}
	s.launch()
	return s
}

// launch starts s on a free port, failing the test when it cannot.
func (s *RedisServer) launch() {
	t := s.t
	t.Helper()
	var err error
	for range 5 {
		port := freePort(t)
		s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
		if err = s.start(); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(s.Kill)
}

// Options returns client options for the server.
func (s *RedisServer) Options() *redis.Options {
	return &redis.Options{Addr: s.Addr, ContextTimeoutEnabled: true}
}

// URL returns a redis:// URL for the server, database 0.
func (s *RedisServer) URL() string { return "redis://" + s.Addr + "/0" }

// Kill stops the server with SIGKILL, as a crash would, and waits for it.
// Killing a killed server does nothing.
func (s *RedisServer) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	s.proc.Signal(syscall.SIGCONT) // a paused process must be able to die
	s.proc.Kill()
	<-s.exited
	s.proc, s.exited = nil, nil
}

// Restart starts a fresh server (empty, like after a crash) on the same
// address. It retries for a while if the port is briefly unavailable.
func (s *RedisServer) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for range 20 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("restart redis-server on %s: %v", s.Addr, err)
}

// Pause stops the process (SIGSTOP): connections stay open but nothing is
// answered or delivered, like a subscription that died silently.
func (s *RedisServer) Pause() { s.signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *RedisServer) Resume() { s.signal(syscall.SIGCONT) }

func (s *RedisServer) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Signal(sig)
	}
}

// start runs redis-server on s.Addr and waits until it accepts connections.
func (s *RedisServer) start() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	cmd := exec.Command("redis-server", s.args(port)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return err
	}
	ready := make(chan struct{})
	var logMu sync.Mutex
	var log strings.Builder
	go func() {
		sc := bufio.NewScanner(out)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			logMu.Lock()
			if log.Len() < 16<<10 {
				log.WriteString(line + "\n")
			}
			logMu.Unlock()
			if !signalled && strings.Contains(strings.ToLower(line), s.ready) {
				signalled = true
				close(ready)
			}
		}
		io.Copy(io.Discard, out)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case <-ready:
	case err := <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		return fmt.Errorf("redis-server exited (%v):\n%s", err, log.String())
	case <-time.After(readyTimeout):
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server not ready after %s", readyTimeout)
	}
	// A PING proves the port is ours and serving.
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server on %s does not answer PING: %w", s.Addr, err)
	}
	s.mu.Lock()
	s.proc, s.exited = cmd.Process, exited
	s.mu.Unlock()
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// StartReplica starts a private redis-server replicating master.
func StartReplica(t testing.TB, master *RedisServer) *RedisServer {
	t.Helper()
	s := StartRedis(t) // a plain server first, so that the port is ours
	host, mport, _ := net.SplitHostPort(master.Addr)
	rdb := redis.NewClient(s.Options())
	defer rdb.Close()
	if err := rdb.SlaveOf(context.Background(), host, mport).Err(); err != nil {
		t.Fatalf("replicaof %s: %v", master.Addr, err)
	}
	// Restarts keep replicating.
	base := s.args
	s.args = func(port string) []string { return append(base(port), "--replicaof", host, mport) }
	deadline := time.Now().Add(readyTimeout)
	for {
		info, _ := rdb.Info(context.Background(), "replication").Result()
		if strings.Contains(info, "master_link_status:up") {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica of %s not in sync after %s:\n%s", master.Addr, readyTimeout, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StartSentinels starts n redis-sentinel processes monitoring master under
// name, with quorum 2, down-after 1000ms and failover-timeout 3000ms, so
// that a failover completes within a few seconds. Each rewrites its own
// configuration file in its temporary directory, as sentinels do.
func StartSentinels(t testing.TB, master *RedisServer, name string, n int) []*RedisServer {
	t.Helper()
	host, mport, _ := net.SplitHostPort(master.Addr)
	list := make([]*RedisServer, n)
	for i := range list {
		s := &RedisServer{t: t, dir: t.TempDir(), ready: "+monitor master"}
		conf := s.dir + "/sentinel.conf"
		s.args = func(port string) []string {
			text := fmt.Sprintf("port %s\nbind 127.0.0.1\ndir %s\n"+
				"sentinel monitor %s %s %s 2\n"+
				"sentinel down-after-milliseconds %s 1000\n"+
				"sentinel failover-timeout %s 3000\n",
				port, s.dir, name, host, mport, name, name)
			if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{conf, "--sentinel"}
		}
		s.launch()
		list[i] = s
	}
	return list
}
