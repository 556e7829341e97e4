package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"edge/config"
	"edge/hub"
	"edge/internal/truststore"
	edgetls "edge/tls"
)

// loadConfig loads the configuration for a command, printing its problems.
func loadConfig(path string, stderr io.Writer) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return nil, errSilent
	}
	return cfg, nil
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("reload", "reload [-config FILE]", stderr)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "edge: not reloading: the configuration has errors; the running edge keeps its current one")
		return errSilent
	}
	if cfg.Admin != "" {
		body, err := adminRequest(cfg, http.MethodPost, "/-/reload", nil)
		if err == nil {
			fmt.Fprint(stdout, body)
			return nil
		}
		var ae *adminError
		if errors.As(err, &ae) {
			fmt.Fprint(stderr, ae.body)
			return errSilent
		}
		return fmt.Errorf("no running edge answers on the admin listener %s (%v)", cfg.Admin, err)
	}
	// Without an admin listener, signal the process serving this file.
	pids := findRunning(*cfgPath)
	if len(pids) == 0 {
		return fmt.Errorf("no running edge found for %s (admin listener off and no matching process)", *cfgPath)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return fmt.Errorf("signal pid %d: %w", pid, err)
		}
		fmt.Fprintf(stdout, "sent SIGHUP to edge (pid %d); its log reports the result\n", pid)
	}
	return nil
}

// findRunning returns the pids of "edge run" processes started with the
// same configuration file.
func findRunning(cfgPath string) []int {
	want, _ := filepath.Abs(cfgPath)
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if len(argv) < 2 || filepath.Base(argv[0]) != "edge" || argv[1] != "run" {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		got := configArg(argv[2:], cwd)
		if got == want {
			pids = append(pids, pid)
		}
	}
	return pids
}

// configArg returns the absolute configuration path of a running edge
// from its arguments (after the subcommand) and working directory, as its
// flags resolved it. Its environment is not read: $EDGE_CONFIG is assumed
// to be the same as ours.
func configArg(args []string, cwd string) string {
	var p string
	for i, a := range args {
		if v, ok := strings.CutPrefix(strings.TrimLeft(a, "-"), "config="); ok {
			p = v
		} else if strings.TrimLeft(a, "-") == "config" && i+1 < len(args) {
			p = args[i+1]
		}
	}
	if p == "" {
		p = defaultConfigPath()
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(cwd, p)
	}
	return filepath.Clean(p)
}

// adminError is a non-2xx answer of the admin listener.
type adminError struct {
	status int
	body   string
}

func (e *adminError) Error() string { return fmt.Sprintf("admin answered %d: %s", e.status, e.body) }

// adminRequest calls the running edge's admin listener.
func adminRequest(cfg *config.Config, method, path string, body []byte) (string, error) {
	host, port, err := net.SplitHostPort(cfg.Admin)
	if err != nil {
		return "", err
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	req, err := http.NewRequest(method, "http://"+net.JoinHostPort(host, port)+path, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	if cfg.AdminKeyFile != "" {
		key, err := os.ReadFile(cfg.AdminKeyFile)
		if err != nil {
			return "", err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(key)))
	}
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return "", &adminError{status: resp.StatusCode, body: string(b)}
	}
	return string(b), nil
}

func cmdPublish(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("publish", "publish [-config FILE] CHANNEL [PAYLOAD|-]\n\nPAYLOAD is sent verbatim; without it or with -, it is read from standard input.", stderr)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if fs.NArg() < 1 || fs.NArg() > 2 {
		fs.Usage()
		return errSilent
	}
	channel := fs.Arg(0)
	var payload []byte
	if fs.NArg() == 2 && fs.Arg(1) != "-" {
		payload = []byte(fs.Arg(1))
	} else {
		var err error
		if payload, err = io.ReadAll(os.Stdin); err != nil {
			return err
		}
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if cfg.Redis != nil {
		if err := hub.PublishRedis(ctx, cfg.Redis, channel, payload); err != nil {
			return fmt.Errorf("publish via redis: %w", err)
		}
		fmt.Fprintln(stdout, "published to", channel, "via redis")
		return nil
	}
	if cfg.Admin == "" {
		return errors.New("publish needs redis (url or sentinel) or the admin listener in the configuration")
	}
	body, err := adminRequest(cfg, http.MethodPost, "/publish/"+channel, payload)
	if err != nil {
		var ae *adminError
		if errors.As(err, &ae) {
			return fmt.Errorf("publish refused (%d): %s", ae.status, strings.TrimSpace(ae.body))
		}
		return fmt.Errorf("no running edge answers on the admin listener %s (%v)", cfg.Admin, err)
	}
	fmt.Fprint(stdout, body)
	return nil
}

func cmdTrust(args []string, stdout, stderr io.Writer) error {
	return trustCommand("trust", args, stdout, stderr)
}

func cmdUntrust(args []string, stdout, stderr io.Writer) error {
	return trustCommand("untrust", args, stdout, stderr)
}

// trustCommand is `edge trust` (install the local CA root into the system
// store and the NSS databases of Chromium and Firefox, or -print the
// commands) and `edge untrust` (remove it again).
func trustCommand(verb string, args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags(verb, verb+" [-config FILE] [-stores system,nss] [-system-dir DIR] [-system-update CMD]", stderr)
	var print *bool
	if verb == "trust" {
		print = fs.Bool("print", false, "only print where the root is and the commands that install it; change nothing")
	}
	stores := fs.String("stores", "", "comma-separated stores to change: system, nss (Chromium, Chrome, Firefox); default every store found")
	sysDir := fs.String("system-dir", "", "directory of local CA roots (default /usr/local/share/ca-certificates, or /etc/pki/ca-trust/source/anchors with update-ca-trust)")
	sysUpdate := fs.String("system-update", "", "command that rebuilds the system bundle from -system-dir (default update-ca-certificates, or update-ca-trust extract)")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	if print != nil && *print {
		return edgetls.Trust(cfg, stdout)
	}
	path, err := edgetls.LocalCARoot(cfg, verb == "trust")
	if err != nil {
		return err
	}
	root, err := truststore.LoadRoot(path)
	if err != nil {
		return err
	}
	o := truststore.Options{SystemDir: *sysDir, SystemUpdate: strings.Fields(*sysUpdate), Out: stdout}
	if *stores != "" {
		o.Stores = strings.Split(*stores, ",")
	}
	fmt.Fprintf(stdout, "root certificate %s (%q)\n", path, root.Name)
	if verb == "trust" {
		err = truststore.Install(root, o)
	} else {
		err = truststore.Uninstall(root, o)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", verb, err)
	}
	return nil
}
