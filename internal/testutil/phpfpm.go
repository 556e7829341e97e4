package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// FPM is a private php-fpm pool a test started (TESTING.md section 9).
type FPM struct {
	// Addr is what a fastcgi upstream names: "unix:/…/fpm.sock" or
	// "127.0.0.1:PORT".
	Addr string
	dir  string
	conf string
	cmd  *exec.Cmd
	t    testing.TB
}

// FPMBinary returns the php-fpm binary (/usr/sbin/php-fpm*), failing the
// test with how to get it when there is none.
func FPMBinary(t testing.TB) string {
	t.Helper()
	m, _ := filepath.Glob("/usr/sbin/php-fpm*")
	if len(m) == 0 {
		t.Fatalf("php-fpm not found under /usr/sbin: apt-get install -y php-fpm (scripts/test.sh does)")
	}
	return m[len(m)-1]
}

// StartFPM starts a php-fpm pool with children workers listening on a
// unix socket (tcp false) or a loopback port (tcp true), and stops it at
// the end of the test. Scripts log to stderr through FastCGI.
func StartFPM(t testing.TB, children int, tcp bool) *FPM {
	t.Helper()
	// Socket paths are limited to 107 bytes: not under t.TempDir's long name.
	dir, err := os.MkdirTemp("", "fpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &FPM{dir: dir, t: t, conf: filepath.Join(dir, "fpm.conf")}
	listen := filepath.Join(dir, "fpm.sock")
	f.Addr = "unix:" + listen
	if tcp {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listen = l.Addr().String()
		l.Close()
		f.Addr = listen
	}
	conf := fmt.Sprintf(`[global]
error_log = %[1]s/fpm.log
daemonize = no
pid = %[1]s/fpm.pid
[www]
listen = %[2]s
pm = static
pm.max_children = %[3]d
clear_env = no
catch_workers_output = yes
php_admin_value[output_buffering] = 0
`, dir, listen, children)
	if err := os.WriteFile(f.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	f.Start()
	t.Cleanup(f.Stop)
	return f
}

// Start starts the pool (again) and waits until it accepts connections.
func (f *FPM) Start() {
	t := f.t
	t.Helper()
	f.cmd = exec.Command(FPMBinary(t), "-F", "-R", "-y", f.conf)
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("php-fpm: %v", err)
	}
	network, addr := "tcp", f.Addr
	if a, ok := cutUnix(f.Addr); ok {
		network, addr = "unix", a
	}
	WaitFor(t, 10*time.Second, "php-fpm accepting on "+f.Addr, func() bool {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// Stop stops the pool (SIGTERM) and waits for it; its socket goes away.
func (f *FPM) Stop() {
	if f.cmd == nil {
		return
	}
	f.cmd.Process.Signal(syscall.SIGTERM)
	f.cmd.Wait()
	f.cmd = nil
}

func cutUnix(a string) (string, bool) {
	if len(a) > 5 && a[:5] == "unix:" {
		return a[5:], true
	}
	return "", false
}
