package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// trustEnv is a scratch machine for edge trust: a HOME for the NSS
// databases and a system store made of temporary directories, rebuilt by
// the real update-ca-certificates (reading the distribution's CA list,
// writing only here; no hooks run).
type trustEnv struct {
	dir, home, cfg, storage string
	sysDir, etcDir          string // local roots, and the bundle with its links
	update                  string // the -system-update command
}

func newTrustEnv(t *testing.T, dir string) *trustEnv {
	t.Helper()
	for _, bin := range []string{"certutil", "update-ca-certificates"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command installs it (apt-get install libnss3-tools ca-certificates)", bin)
		}
	}
	e := &trustEnv{dir: dir, home: filepath.Join(dir, "home"), storage: filepath.Join(dir, "state"),
		sysDir: filepath.Join(dir, "sys", "local"), etcDir: filepath.Join(dir, "sys", "etc")}
	hooks := filepath.Join(dir, "sys", "hooks")
	for _, d := range []string{e.home, e.sysDir, e.etcDir, hooks} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.update = fmt.Sprintf("update-ca-certificates --localcertsdir %s --etccertsdir %s --hooksdir %s", e.sysDir, e.etcDir, hooks)
	return e
}

func (e *trustEnv) writeConfig(t *testing.T, httpAddr, httpsAddr, adminAddr string) {
	e.cfg = writeFile(t, e.dir, "config.yaml", fmt.Sprintf(`
listen: { http: "%s", https: "%s" }
admin: "%s"
tls: { ca: internal, storage: %s }
sites:
  - hosts: [localhost]
    routes:
      - { path: /, respond: { status: 200, body: "trusted by chromium" } }
`, httpAddr, httpsAddr, adminAddr, e.storage))
}

// run runs `edge VERB` with this HOME and system store.
func (e *trustEnv) run(t *testing.T, cred *syscall.Credential, env []string, verb string, extra ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{verb, "-config", e.cfg, "-system-dir", e.sysDir, "-system-update", e.update}, extra...)
	bin := edgeBin
	if cred != nil {
		bin = filepath.Join(e.dir, "edge")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "HOME="+e.home), env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("edge %s: %v", verb, err)
	}
	t.Logf("edge %s:\n%s", verb, out.String())
	return out.String(), cmd.ProcessState.ExitCode()
}

// nssHas reports whether the NSS database at dir lists a root of edge as a
// trusted CA.
func nssHas(t *testing.T, dir string) bool {
	t.Helper()
	if _, err := os.Stat(filepath.Join(dir, "cert9.db")); err != nil {
		return false
	}
	out, err := exec.Command("certutil", "-L", "-d", "sql:"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("certutil -L %s: %v\n%s", dir, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "edge local CA root") && strings.HasSuffix(strings.TrimSpace(l), "C,,") {
			return true
		}
	}
	return false
}

// bundleHas reports whether the rebuilt system bundle holds the root.
func (e *trustEnv) bundleHas(t *testing.T) bool {
	t.Helper()
	root, err := os.ReadFile(filepath.Join(e.storage, "ca", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join(e.etcDir, "ca-certificates.crt"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Contains(bundle, bytes.TrimSpace(root))
}

// chromiumOpens loads url in headless Chromium with HOME=home and no
// certificate flag; it returns the page's body, or the navigation error.
func chromiumOpens(t *testing.T, url, home string) (status int, body, security, navErr string) {
	t.Helper()
	node := exec.Command("node", "trusted.js", url, home, t.TempDir())
	node.Dir = "testdata/browser"
	node.Stderr = os.Stderr
	timer := time.AfterFunc(60*time.Second, func() { node.Process.Kill() })
	defer timer.Stop()
	out, err := node.Output()
	if err != nil {
		t.Fatalf("node trusted.js: %v\n%s", err, out)
	}
	var res struct {
		Status   int
		Body     string
		Security string
		Error    string
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("trusted.js printed %q: %v", out, err)
	}
	return res.Status, res.Body, res.Security, res.Error
}

// TestTrustChromium: `edge trust` on a fresh HOME (Chromium installed, no
// NSS database yet) creates the database and adds the root, and puts it
// into the system store; headless Chromium with that HOME and no
// certificate flag then loads https://localhost from edge as secure.
// Again is a no-op; `edge untrust` takes the root out of both stores and
// the same Chromium refuses the page.
func TestTrustChromium(t *testing.T) {
	for _, bin := range []string{"chromium", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command installs it (make test)", bin)
		}
	}
	npmDeps(t, "testdata/browser")
	e := newTrustEnv(t, t.TempDir())
	httpAddr, httpsAddr, adminAddr := freePort(t), freePort(t), freePort(t)
	e.writeConfig(t, httpAddr, httpsAddr, adminAddr)
	nssdb := filepath.Join(e.home, ".pki", "nssdb")

	out, code := e.run(t, nil, nil, "trust")
	if code != 0 {
		t.Fatalf("edge trust exited %d", code)
	}
	for _, want := range []string{"system store " + e.sysDir + ": added edge-local-ca-", "NSS database " + nssdb + ": created", "NSS database " + nssdb + ": added"} {
		if !strings.Contains(out, want) {
			t.Errorf("edge trust output lacks %q", want)
		}
	}
	if !nssHas(t, nssdb) || !e.bundleHas(t) {
		t.Fatalf("after edge trust: NSS has the root %v, system bundle has it %v; want both", nssHas(t, nssdb), e.bundleHas(t))
	}
	if out, _ := e.run(t, nil, nil, "trust"); strings.Count(out, "already has") != 2 {
		t.Errorf("edge trust a second time: want two stores that already have it")
	}

	p := startEdgeAt(t, e.dir, e.cfg)
	p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
	_, port, _ := strings.Cut(httpsAddr, ":")
	url := "https://localhost:" + port + "/"
	status, body, security, navErr := chromiumOpens(t, url, e.home)
	if navErr != "" || status != 200 || body != "trusted by chromium" || security != "secure" {
		t.Fatalf("Chromium after edge trust: status %d body %q security %q error %q; want 200, secure", status, body, security, navErr)
	}

	if _, code := e.run(t, nil, nil, "untrust"); code != 0 {
		t.Fatalf("edge untrust exited %d", code)
	}
	if nssHas(t, nssdb) || e.bundleHas(t) {
		t.Errorf("after edge untrust: NSS has the root %v, system bundle has it %v; want neither", nssHas(t, nssdb), e.bundleHas(t))
	}
	if links, _ := filepath.Glob(filepath.Join(e.etcDir, "edge-local-ca-*")); len(links) > 0 {
		t.Errorf("after edge untrust: %v left in the system store", links)
	}
	_, _, _, navErr = chromiumOpens(t, url, e.home)
	if !strings.Contains(navErr, "ERR_CERT_AUTHORITY_INVALID") {
		t.Errorf("Chromium after edge untrust: %q, want ERR_CERT_AUTHORITY_INVALID", navErr)
	}
}

// TestTrustWithoutPermission runs edge trust as an unprivileged user
// (nobody, without sudo): when one store cannot be changed, the command
// fails naming that store and how to fix it, and the other store, which it
// could change, is left as it was.
func TestTrustWithoutPermission(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test switches to the user nobody and needs root (CI runs as root)")
	}
	const nobody = 65534
	cred := &syscall.Credential{Uid: nobody, Gid: nobody}
	// A PATH with certutil and without sudo.
	setup := func(t *testing.T) *trustEnv {
		dir, err := os.MkdirTemp("", "edge-trust-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		e := newTrustEnv(t, dir)
		e.writeConfig(t, "127.0.0.1:0", "127.0.0.1:0", "")
		copyFile(t, edgeBin, filepath.Join(dir, "edge"), 0o755)
		certutil, _ := exec.LookPath("certutil")
		if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(certutil, filepath.Join(dir, "bin", "certutil")); err != nil {
			t.Fatal(err)
		}
		db := filepath.Join(e.home, ".pki", "nssdb")
		os.MkdirAll(db, 0o700)
		if out, err := exec.Command("certutil", "-N", "-d", "sql:"+db, "--empty-password").CombinedOutput(); err != nil {
			t.Fatalf("certutil -N: %v\n%s", err, out)
		}
		// Everything belongs to nobody; each case takes one store back.
		if out, err := exec.Command("chown", "-R", fmt.Sprint(nobody)+":"+fmt.Sprint(nobody), dir).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v\n%s", err, out)
		}
		return e
	}
	env := func(e *trustEnv) []string { return []string{"PATH=" + filepath.Join(e.dir, "bin")} }

	t.Run("system store not writable", func(t *testing.T) {
		e := setup(t)
		os.Chown(e.sysDir, 0, 0)
		out, code := e.run(t, cred, env(e), "trust")
		if code == 0 || !strings.Contains(out, "changed nothing") ||
			!strings.Contains(out, "system store "+e.sysDir+": not writable by this user, and no sudo: run it as root (sudo edge trust), or leave this store out with -stores nss") {
			t.Errorf("edge trust as nobody with a root-owned system store: exit %d, want 1 and the store named with the fix", code)
		}
		if nssHas(t, filepath.Join(e.home, ".pki", "nssdb")) {
			t.Error("the NSS database was changed although the system store failed")
		}
		// Leaving that store out works.
		if _, code := e.run(t, cred, env(e), "trust", "-stores", "nss"); code != 0 || !nssHas(t, filepath.Join(e.home, ".pki", "nssdb")) {
			t.Errorf("edge trust -stores nss as nobody: exit %d, want the root in the NSS database", code)
		}
	})
	t.Run("NSS database not writable", func(t *testing.T) {
		e := setup(t)
		db := filepath.Join(e.home, ".pki", "nssdb")
		exec.Command("chown", "-R", "0:0", db).Run()
		os.Chmod(db, 0o755)
		out, code := e.run(t, cred, env(e), "trust")
		if code == 0 || !strings.Contains(out, "Chromium and Chrome NSS database "+db+": "+db+" is not writable by this user") {
			t.Errorf("edge trust as nobody with a root-owned NSS database: exit %d, want 1 and the database named", code)
		}
		if files, _ := os.ReadDir(e.sysDir); len(files) > 0 {
			t.Errorf("the system store was changed although the NSS database failed: %v", files)
		}
	})
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
