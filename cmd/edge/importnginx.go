package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"edge/nginxconf"
)

// cmdImportNginx converts an nginx configuration to edge's: YAML on stdout
// or -o FILE, untranslated directives on stderr as FILE:LINE: directive:
// why. A file that does not parse writes nothing and exits 1.
func cmdImportNginx(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("edge import-nginx", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the edge configuration to this file (default: standard output)")
	prefix := fs.String("prefix", "", "directory relative include paths are read from, as nginx -p (default: the file's directory)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: edge import-nginx FILE [-o edge.yaml] [-prefix DIR]\n\nConverts an nginx configuration (with its includes) to edge's YAML.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if fs.NArg() < 1 {
		fs.Usage()
		return errSilent
	}
	file := fs.Arg(0)
	// Flags may follow FILE, as in "edge import-nginx nginx.conf -o edge.yaml".
	if done, err := parseFlags(fs, fs.Args()[1:]); done {
		return err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "edge import-nginx: one FILE only (got %q too)\n", fs.Args())
		return errSilent
	}
	res, err := nginxconf.Import(file, nginxconf.Options{Prefix: *prefix})
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errSilent
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(stderr, w)
	}
	if *out == "" {
		_, err := stdout.Write(res.YAML)
		return err
	}
	// Written whole or not at all: a temporary file renamed over the target.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".import-nginx-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(res.YAML); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %s (%d directives not translated); check it with: edge validate -config %s\n", *out, len(res.Warnings), *out)
	return nil
}
