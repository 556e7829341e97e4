// Package truststore installs a CA root certificate into the trust stores
// of this machine and user, and removes it again, as mkcert and
// `caddy trust` do: the system store (update-ca-certificates on Debian and
// Ubuntu, update-ca-trust on Fedora and RHEL), the NSS database that
// Chromium and Chrome read (~/.pki/nssdb) and the NSS database of every
// Firefox profile (certutil). It is the engine of `edge trust` and
// `edge untrust`.
//
// Every store is checked before any is changed, so that a missing
// permission or tool stops the command with nothing done; a store that
// fails while being changed has the stores changed before it put back.
package truststore

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Store names accepted in Options.Stores.
const (
	StoreSystem = "system"
	StoreNSS    = "nss" // Chromium, Chrome and every Firefox profile
)

// Options says which stores to change and where they are. The zero value
// means every store found on this machine, at its usual place.
type Options struct {
	// Stores limits the change to these stores (StoreSystem, StoreNSS).
	// Empty: every store that exists; a store named here that does not
	// exist is an error rather than a silent skip.
	Stores []string
	// Home holds the user's NSS databases: Home/.pki/nssdb and the Firefox
	// profiles under Home/.mozilla/firefox. Empty: $HOME.
	Home string
	// SystemDir is the directory of locally added roots. Empty:
	// /usr/local/share/ca-certificates where update-ca-certificates
	// exists, else /etc/pki/ca-trust/source/anchors where update-ca-trust
	// exists.
	SystemDir string
	// SystemUpdate is the command that rebuilds the system bundle from
	// SystemDir. Empty: update-ca-certificates (with --fresh when
	// removing, so that the stale link goes too) or update-ca-trust.
	SystemUpdate []string
	// Out receives one line per store: what was changed, or why not.
	// Nil: io.Discard.
	Out io.Writer
}

// Root is a CA certificate to install.
type Root struct {
	Path string // PEM file
	// Name is the nickname in NSS databases: the certificate's common name.
	Name string
	// File is the name the root gets in the system directory:
	// edge-local-ca-<first 8 bytes of its SHA-256, hex>.crt, the same for
	// the same root, different for another edge's root.
	File string
	pem  []byte
}

// LoadRoot reads a PEM root certificate.
func LoadRoot(path string) (*Root, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Root{Path: path, Name: cert.Subject.CommonName, File: SystemFileName(cert.Raw), pem: data}, nil
}

// SystemFileName is the file name a root (DER) gets in the system store.
func SystemFileName(der []byte) string {
	sum := sha256.Sum256(der)
	return "edge-local-ca-" + hex.EncodeToString(sum[:8]) + ".crt"
}

// store is one trust store. check runs before anything is changed; add
// and remove report changed=false when there was nothing to do.
type store interface {
	String() string
	check(r *Root, adding bool) error
	add(r *Root, out io.Writer) (changed bool, err error)
	remove(r *Root, out io.Writer) (changed bool, err error)
}

// Install adds r to the selected stores and writes one line per store.
// Nothing is changed when a store cannot be changed (permission, missing
// tool): the error names each such store and how to fix it.
func Install(r *Root, o Options) error { return apply(r, o, true) }

// Uninstall removes r from the selected stores, with the same checks.
func Uninstall(r *Root, o Options) error { return apply(r, o, false) }

func apply(r *Root, o Options, adding bool) error {
	out := o.Out
	if out == nil {
		out = io.Discard
	}
	stores, notes, err := find(o, adding)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(out, n)
	}
	var problems []string
	for _, s := range stores {
		if err := s.check(r, adding); err != nil {
			problems = append(problems, fmt.Sprintf("  %s: %v", s, err))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("changed nothing, because:\n%s", strings.Join(problems, "\n"))
	}
	var done []store
	for _, s := range stores {
		var changed bool
		var err error
		if adding {
			changed, err = s.add(r, out)
		} else {
			changed, err = s.remove(r, out)
		}
		if err != nil {
			undo := undoAll(r, done, adding, out)
			return fmt.Errorf("%s: %w%s", s, err, undo)
		}
		if changed {
			done = append(done, s)
		}
	}
	return nil
}

// undoAll reverts the stores changed so far, newest first, and says what
// could not be reverted.
func undoAll(r *Root, done []store, adding bool, out io.Writer) string {
	var failed []string
	for i := len(done) - 1; i >= 0; i-- {
		s := done[i]
		var err error
		if adding {
			_, err = s.remove(r, out)
		} else {
			_, err = s.add(r, out)
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", s, err))
		}
	}
	if len(failed) > 0 {
		return "; could not put back: " + strings.Join(failed, "; ")
	}
	if len(done) > 0 {
		return " (the stores changed before it were put back)"
	}
	return ""
}

// find lists the stores to change, and notes on the ones skipped.
func find(o Options, adding bool) ([]store, []string, error) {
	want := func(name string) bool { return len(o.Stores) == 0 || slices.Contains(o.Stores, name) }
	for _, s := range o.Stores {
		if s != StoreSystem && s != StoreNSS {
			return nil, nil, fmt.Errorf("unknown store %q (want %s or %s)", s, StoreSystem, StoreNSS)
		}
	}
	var stores []store
	var notes []string
	if want(StoreSystem) {
		s, err := findSystem(o, adding)
		switch {
		case s != nil:
			stores = append(stores, s)
		case len(o.Stores) > 0:
			return nil, nil, err
		default:
			notes = append(notes, fmt.Sprintf("system store: skipped (%v)", err))
		}
	}
	if want(StoreNSS) {
		home := o.Home
		if home == "" {
			home = os.Getenv("HOME")
		}
		dbs := findNSS(home)
		if len(dbs) == 0 && len(o.Stores) > 0 {
			return nil, nil, fmt.Errorf("no NSS database under %s (no Chromium or Chrome installed, no Firefox profile)", home)
		}
		if len(dbs) == 0 {
			notes = append(notes, "NSS (Chromium, Firefox): skipped (no Chromium or Chrome installed, no Firefox profile under "+home+")")
		}
		stores = append(stores, dbs...)
	}
	return stores, notes, nil
}

// lookPath finds a command also in the sbin directories, which are not on
// an ordinary user's PATH on Debian.
func lookPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found", name)
}

// writable reports whether this process may create files in dir (or in
// the nearest directory above it that exists, when dir does not yet).
func writable(path string) bool {
	for {
		if _, err := os.Stat(path); err == nil {
			return syscall.Access(path, 2 /* W_OK */) == nil
		}
		parent := filepath.Dir(path)
		if parent == path {
			return false
		}
		path = parent
	}
}

// run runs a command and returns its combined output in the error.
func run(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// systemStore is the distribution's directory of local roots plus the
// command that rebuilds the bundle from it.
type systemStore struct {
	dir    string
	update []string
	sudo   bool // not root and dir not writable: every change goes through sudo
}

func (s *systemStore) String() string { return "system store " + s.dir }

func findSystem(o Options, adding bool) (*systemStore, error) {
	s := &systemStore{dir: o.SystemDir, update: o.SystemUpdate}
	if s.dir == "" || len(s.update) == 0 {
		debian, errDebian := lookPath("update-ca-certificates")
		fedora, errFedora := lookPath("update-ca-trust")
		switch {
		case errDebian == nil:
			s.dir = or(s.dir, "/usr/local/share/ca-certificates")
			if len(s.update) == 0 {
				s.update = []string{debian}
			}
		case errFedora == nil:
			s.dir = or(s.dir, "/etc/pki/ca-trust/source/anchors")
			if len(s.update) == 0 {
				s.update = []string{fedora, "extract"}
			}
		default:
			return nil, errors.New("neither update-ca-certificates (apt-get install ca-certificates) nor update-ca-trust found")
		}
	}
	if !adding && filepath.Base(s.update[0]) == "update-ca-certificates" && !slices.Contains(s.update, "--fresh") {
		// Without --fresh the link to a removed root stays in /etc/ssl/certs.
		s.update = append(slices.Clip(s.update), "--fresh")
	}
	return s, nil
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (s *systemStore) check(r *Root, adding bool) error {
	if _, err := lookPath(s.update[0]); err != nil {
		return fmt.Errorf("%v: install it, or leave this store out with -stores nss", err)
	}
	if writable(s.dir) {
		return nil
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("sudo"); err == nil {
			s.sudo = true
			return nil
		}
	}
	return errors.New("not writable by this user, and no sudo: run it as root (sudo edge trust), or leave this store out with -stores nss")
}

// cmd prefixes argv with sudo when the store needs it.
func (s *systemStore) cmd(argv ...string) []string {
	if s.sudo {
		return append([]string{"sudo"}, argv...)
	}
	return argv
}

func (s *systemStore) add(r *Root, out io.Writer) (bool, error) {
	dst := filepath.Join(s.dir, r.File)
	if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, r.pem) {
		fmt.Fprintf(out, "%s: already has %s\n", s, r.File)
		return false, nil
	}
	if s.sudo {
		fmt.Fprintf(out, "%s: not root, using sudo (it may ask for your password)\n", s)
		if err := run(s.cmd("install", "-D", "-m", "0644", r.Path, dst)...); err != nil {
			return false, err
		}
	} else {
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(dst, r.pem, 0o644); err != nil {
			return false, err
		}
	}
	if err := run(s.cmd(s.update...)...); err != nil {
		run(s.cmd("rm", "-f", dst)...)
		return false, err
	}
	fmt.Fprintf(out, "%s: added %s and ran %s\n", s, r.File, strings.Join(s.update, " "))
	return true, nil
}

func (s *systemStore) remove(r *Root, out io.Writer) (bool, error) {
	dst := filepath.Join(s.dir, r.File)
	if _, err := os.Stat(dst); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(out, "%s: %s is not there\n", s, r.File)
		return false, nil
	}
	if s.sudo {
		fmt.Fprintf(out, "%s: not root, using sudo (it may ask for your password)\n", s)
	}
	if err := run(s.cmd("rm", "-f", dst)...); err != nil {
		return false, err
	}
	if err := run(s.cmd(s.update...)...); err != nil {
		return true, err
	}
	fmt.Fprintf(out, "%s: removed %s and ran %s\n", s, r.File, strings.Join(s.update, " "))
	return true, nil
}

// nssDB is one NSS database (a directory with cert9.db), changed with
// certutil.
type nssDB struct {
	label  string // "Chromium and Chrome" or "Firefox profile NAME"
	dir    string
	create bool // the Chromium database, made when a Chromium-family browser is installed
}

func (d *nssDB) String() string { return d.label + " NSS database " + d.dir }

// findNSS lists the NSS databases of the user with that home directory:
// the one Chromium and Chrome share (created if one of them is installed
// and it does not exist yet, as their first start would) and one per
// Firefox profile, including the snap packages'.
func findNSS(home string) []store {
	var dbs []store
	for _, dir := range []string{filepath.Join(home, ".pki", "nssdb"), filepath.Join(home, "snap", "chromium", "current", ".pki", "nssdb")} {
		if exists(filepath.Join(dir, "cert9.db")) {
			dbs = append(dbs, &nssDB{label: "Chromium and Chrome", dir: dir})
		}
	}
	if len(dbs) == 0 && chromiumInstalled() {
		dbs = append(dbs, &nssDB{label: "Chromium and Chrome", dir: filepath.Join(home, ".pki", "nssdb"), create: true})
	}
	for _, pattern := range []string{
		filepath.Join(home, ".mozilla", "firefox", "*", "cert9.db"),
		filepath.Join(home, "snap", "firefox", "common", ".mozilla", "firefox", "*", "cert9.db"),
	} {
		found, _ := filepath.Glob(pattern)
		for _, f := range found {
			dir := filepath.Dir(f)
			dbs = append(dbs, &nssDB{label: "Firefox profile " + filepath.Base(dir), dir: dir})
		}
	}
	return dbs
}

func chromiumInstalled() bool {
	for _, b := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if _, err := exec.LookPath(b); err == nil {
			return true
		}
	}
	return false
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (d *nssDB) check(r *Root, adding bool) error {
	if _, err := exec.LookPath("certutil"); err != nil {
		return errors.New("certutil not found: apt-get install libnss3-tools, or leave NSS out with -stores system")
	}
	for _, p := range []string{d.dir, filepath.Join(d.dir, "cert9.db"), filepath.Join(d.dir, "key4.db")} {
		if exists(p) || p == d.dir {
			if !writable(p) {
				return fmt.Errorf("%s is not writable by this user: run edge trust as the user who owns it, or leave NSS out with -stores system", p)
			}
		}
	}
	return nil
}

func (d *nssDB) has(r *Root) bool {
	return exec.Command("certutil", "-L", "-d", "sql:"+d.dir, "-n", r.Name).Run() == nil
}

func (d *nssDB) add(r *Root, out io.Writer) (bool, error) {
	if !exists(filepath.Join(d.dir, "cert9.db")) {
		if err := os.MkdirAll(d.dir, 0o700); err != nil {
			return false, err
		}
		if err := run("certutil", "-N", "-d", "sql:"+d.dir, "--empty-password"); err != nil {
			return false, err
		}
		fmt.Fprintf(out, "%s: created\n", d)
	} else if d.has(r) {
		fmt.Fprintf(out, "%s: already has %q\n", d, r.Name)
		return false, nil
	}
	// C,, : a trusted CA for TLS servers, not for e-mail or code signing.
	if err := run("certutil", "-A", "-d", "sql:"+d.dir, "-t", "C,,", "-n", r.Name, "-i", r.Path); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "%s: added %q\n", d, r.Name)
	return true, nil
}

func (d *nssDB) remove(r *Root, out io.Writer) (bool, error) {
	if !exists(filepath.Join(d.dir, "cert9.db")) || !d.has(r) {
		fmt.Fprintf(out, "%s: %q is not there\n", d, r.Name)
		return false, nil
	}
	if err := run("certutil", "-D", "-d", "sql:"+d.dir, "-n", r.Name); err != nil {
		return false, err
	}
	fmt.Fprintf(out, "%s: removed %q\n", d, r.Name)
	return true, nil
}
