// Package packaging holds the test of the Debian package that `make deb`
// builds from packaging/deb/.
package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// machinePaths are what the package puts on the machine; the test wants
// them absent before and after.
var machinePaths = []string{
	"/usr/bin/edge", "/lib/systemd/system/edge.service", "/usr/share/edge", "/usr/share/doc/edge",
	"/etc/edge", "/var/lib/edge",
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// status is dpkg's state of the edge package ("" when dpkg knows nothing).
func status() string {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "edge").Output()
	return strings.TrimSpace(string(out))
}

// TestDebianPackage builds the package with `make deb` and goes through
// its life on this machine: dpkg -i installs the binary (edge version
// names the package's version), the unit (systemd-analyze verify is
// silent) and /etc/edge/config.yaml as a conffile that validates as
// shipped; dpkg -r removes the binary and the unit and keeps the edited
// configuration, which a reinstall leaves alone; dpkg -P removes it. A
// machine that already has edge installed (package or make install) is
// not touched: the test stops and says so. /etc/edge from elsewhere is
// moved aside and put back.
func TestDebianPackage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("dpkg -i needs root: run the tests as root (CI does)")
	}
	for _, bin := range []string{"dpkg", "dpkg-query", "systemd-analyze"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: this test needs a Debian machine with systemd installed (apt-get install systemd)", bin)
		}
	}
	if s := status(); s != "" && !strings.HasSuffix(s, "not-installed") {
		t.Fatalf("the edge package is on this machine (%s): remove it (dpkg -P edge) to run this test", s)
	}
	// /etc/edge and /var/lib/edge may come from a run of edge outside a
	// package: moved aside (dpkg -P would remove them) and put back.
	movable := map[string]bool{"/etc/edge": true, "/var/lib/edge": true}
	for _, p := range machinePaths {
		if !movable[p] && exists(p) {
			t.Fatalf("%s exists (make install?): this test installs the package over it; remove it first", p)
		}
	}
	for p := range movable {
		if !exists(p) {
			continue
		}
		aside := p + ".before-deb-test"
		if err := os.Rename(p, aside); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			os.RemoveAll(p)
			if err := os.Rename(aside, p); err != nil {
				t.Errorf("putting %s back: %v", p, err)
			}
		})
	}
	t.Cleanup(func() {
		if s := status(); s != "" && !strings.HasSuffix(s, "not-installed") {
			exec.Command("dpkg", "-P", "edge").Run()
		}
		for _, p := range machinePaths {
			if !movable[p] && exists(p) {
				t.Errorf("%s left on the machine", p)
			}
		}
	})

	build := exec.Command("./scripts/deb.sh")
	build.Dir = ".."
	var stderr bytes.Buffer
	build.Stderr = &stderr
	out, err := build.Output()
	if err != nil {
		t.Fatalf("make deb: %v\n%s", err, stderr.String())
	}
	deb, err := filepath.Abs(filepath.Join("..", strings.TrimSpace(string(out))))
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(deb)
	version := strings.TrimPrefix(strings.TrimSuffix(base, "_"+runtimeArch(t)+".deb"), "edge_")
	if !strings.HasPrefix(base, "edge_") || version == base || version == "" {
		t.Fatalf("package %s, want edge_<version>_<arch>.deb", base)
	}

	run(t, "dpkg", "-i", deb)
	if s := status(); s != "install ok installed" {
		t.Fatalf("after dpkg -i: %q", s)
	}
	if v := run(t, "/usr/bin/edge", "version"); !strings.HasPrefix(v, "edge "+version+" ") {
		t.Errorf("edge version = %q, want edge %s", v, version)
	}
	if out := run(t, "/usr/bin/edge", "validate", "-config", "/etc/edge/config.yaml"); !strings.Contains(out, "configuration OK") {
		t.Errorf("edge validate of the shipped configuration: %s", out)
	}
	if out, err := exec.Command("systemd-analyze", "verify", "--man=no", "/lib/systemd/system/edge.service").CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify of the installed unit: %v\n%s", err, out)
	}
	unit, _ := os.ReadFile("/lib/systemd/system/edge.service")
	if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/edge run -config /etc/edge/config.yaml")) || bytes.Contains(unit, []byte("/usr/local")) {
		t.Errorf("the installed unit does not run /usr/bin/edge:\n%s", unit)
	}
	if conf := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "edge"); !strings.Contains(conf, "/etc/edge/config.yaml") {
		t.Errorf("conffiles = %q, want /etc/edge/config.yaml", conf)
	}
	for _, p := range []string{"/usr/share/edge/www/index.html", "/usr/share/edge/www/static/app.js", "/usr/share/doc/edge/README.Debian"} {
		if !exists(p) {
			t.Errorf("%s not installed", p)
		}
	}

	// The operator edits the configuration; removing keeps it.
	edited := "\n# edited by the operator\n"
	f, err := os.OpenFile("/etc/edge/config.yaml", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(edited)
	f.Close()
	run(t, "dpkg", "-r", "edge")
	if s := status(); s != "deinstall ok config-files" {
		t.Errorf("after dpkg -r: %q, want deinstall ok config-files", s)
	}
	for _, p := range []string{"/usr/bin/edge", "/lib/systemd/system/edge.service", "/usr/share/edge"} {
		if exists(p) {
			t.Errorf("%s still there after dpkg -r", p)
		}
	}
	if b, err := os.ReadFile("/etc/edge/config.yaml"); err != nil || !bytes.HasSuffix(b, []byte(edited)) {
		t.Errorf("dpkg -r did not keep the edited /etc/edge/config.yaml: %v", err)
	}
	// Installing again keeps the operator's version without asking.
	run(t, "dpkg", "-i", deb)
	if b, err := os.ReadFile("/etc/edge/config.yaml"); err != nil || !bytes.HasSuffix(b, []byte(edited)) {
		t.Errorf("reinstalling replaced the edited /etc/edge/config.yaml: %v", err)
	}

	run(t, "dpkg", "-P", "edge")
	if s := status(); s != "" && !strings.HasSuffix(s, "not-installed") {
		t.Errorf("after dpkg -P: %q", s)
	}
	for _, p := range machinePaths {
		if exists(p) {
			t.Errorf("%s still there after dpkg -P", p)
		}
	}
}

func runtimeArch(t *testing.T) string {
	out, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}
