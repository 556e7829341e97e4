package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"time"

	"edge/config"
	"edge/internal/redisconn"
)

// Set with -ldflags "-X main.version=… -X main.commit=…" by make build;
// otherwise read from the module build info.
var (
	version = ""
	commit  = ""
)

// errSilent reports failure after the details were already printed.
var errSilent = errors.New("failed")

const usage = `edge — one binary in front of a realtime web app

Usage:
  edge run      [-config FILE]               serve (default config: $EDGE_CONFIG or /etc/edge/config.yaml)
  edge validate [-config FILE]               check a configuration, like nginx -t
  edge reload   [-config FILE]               make the running edge re-read its configuration
  edge publish  [-config FILE] CHANNEL [PAYLOAD|-]   publish a message to hub subscribers
  edge trust    [-config FILE] [-print]      install the local development CA into the system store, Chromium and Firefox
  edge untrust  [-config FILE]               remove it again
  edge disconnect  [-config FILE] -sub USER|-conn ID|-channel NAME|-all [-code N] [-reason TEXT] [-no-reconnect]
                                             close hub connections on every node
  edge unsubscribe [-config FILE] -channel NAME -sub USER|-conn ID|-all
                                             take hub connections out of a channel
  edge connections [-config FILE] [-sub USER]   list hub connections (one user's, across nodes)
  edge import-nginx FILE [-o OUT]            convert an nginx configuration to edge's YAML
  edge version                               print version, commit and Go version

Run "edge COMMAND -h" for a command's flags.
`

func cli(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errSilent
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return cmdRun(rest, stderr)
	case "validate":
		return cmdValidate(rest, stdout, stderr)
	case "reload":
		return cmdReload(rest, stdout, stderr)
	case "publish":
		return cmdPublish(rest, stdout, stderr)
	case "trust":
		return cmdTrust(rest, stdout, stderr)
	case "untrust":
		return cmdUntrust(rest, stdout, stderr)
	case "disconnect":
		return cmdDisconnect(rest, stdout, stderr)
	case "unsubscribe":
		return cmdUnsubscribe(rest, stdout, stderr)
	case "connections":
		return cmdConnections(rest, stdout, stderr)
	case "version":
		return cmdVersion(rest, stdout, stderr)
	case "import-nginx":
		return cmdImportNginx(rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "edge: unknown command %q\n\n%s", cmd, usage)
	return errSilent
}

// newFlags returns a FlagSet for a subcommand with the -config flag.
func newFlags(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("edge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: edge %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs, fs.String("config", defaultConfigPath(), "configuration file ($EDGE_CONFIG)")
}

// defaultConfigPath is the configuration file of a command run without
// -config: $EDGE_CONFIG, else /etc/edge/config.yaml.
func defaultConfigPath() string {
	if p := os.Getenv("EDGE_CONFIG"); p != "" {
		return p
	}
	return "/etc/edge/config.yaml"
}

// parseFlags parses args; -h prints usage and ends the command successfully.
func parseFlags(fs *flag.FlagSet, args []string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return true, errSilent
	}
	return false, nil
}

func cmdValidate(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("validate", "validate [-config FILE]", stderr)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(stderr, w)
	}
	if cfg.TLS.RedisStorage() && cfg.Redis != nil {
		// edge run starts without it (and retries), but an operator
		// validating a cluster configuration wants to know now. The
		// problem line says it all; go-redis's own dial messages go.
		setRedisLogger(slog.New(slog.DiscardHandler))
		if err := redisconn.Check(cfg.Redis, 3*time.Second); err != nil {
			p := cfg.Pos("tls.storage")
			fmt.Fprintln(stderr, config.Problem{File: cfg.File, Line: p.Line, Col: p.Col, Path: "tls.storage", Msg: err.Error()})
			return errSilent
		}
	}
	fmt.Fprintln(stdout, "configuration OK")
	return nil
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "Usage: edge version\n\nPrints the version, commit and Go version.") }
	if done, err := parseFlags(fs, args); done {
		return err
	}
	v, c := buildInfo()
	fmt.Fprintf(stdout, "edge %s (commit %s, %s %s/%s)\n", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// buildInfo returns the version and commit, from -ldflags or from the VCS
// stamp Go puts into binaries built inside a git checkout.
func buildInfo() (ver, rev string) {
	ver, rev = version, commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if ver == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			ver = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && rev == "" {
				rev = s.Value
				if len(rev) > 12 {
					rev = rev[:12]
				}
			}
			if s.Key == "vcs.modified" && s.Value == "true" && rev != "" {
				rev += "-dirty"
			}
		}
	}
	if ver == "" {
		ver = "dev"
	}
	if rev == "" {
		rev = "unknown"
	}
	return ver, rev
}
