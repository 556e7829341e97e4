package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// An included file (top-level include, nginx's "include sites-enabled/*")
// holds sites and, optionally, includes of its own; everything else stays
// in the main file. Its sites are appended to the main file's in include
// order, each glob's matches sorted by name. Problems in it name it, with
// the key path of the merged configuration ("sites[3].routes[0].path").
// Relative paths inside its sites (static roots, certificates) are relative
// to the main file's directory, as nginx's are to its prefix: moving a site
// into an included file does not change what it means.

// maxIncludeSize bounds an included file: a configuration, not a data
// file (and never /dev/zero).
const maxIncludeSize = 4 << 20

// includer reads the includes of one Parse.
type includer struct {
	c     *Config
	probs Problems
	seen  map[string]bool // absolute paths already read (the main file too)
}

// includes reads the files matched by patterns, written in file (whose
// directory relative patterns start from) at key path "include"; stack
// holds the absolute paths of the files including file, itself last.
func (in *includer) includes(file string, patterns []string, pos map[string]Pos, stack []string) {
	for i, pat := range patterns {
		ip := fmt.Sprintf("include[%d]", i)
		at := posIn(pos, ip)
		prob := func(warn bool, format string, args ...any) {
			in.probs = append(in.probs, Problem{File: file, Line: at.Line, Col: at.Col, Path: ip,
				Msg: fmt.Sprintf(format, args...), Warning: warn})
		}
		if pat == "" {
			prob(false, "empty path")
			continue
		}
		full := pat
		if !filepath.IsAbs(full) {
			full = filepath.Join(filepath.Dir(file), full)
		}
		var files []string
		if strings.ContainsAny(pat, "*?[") {
			m, err := filepath.Glob(full)
			if err != nil {
				prob(false, "invalid pattern %q: %v", pat, err)
				continue
			}
			if len(m) == 0 {
				prob(true, "%q matches no file", pat)
			}
			files = m // sorted by Glob
		} else {
			files = []string{full}
		}
		for _, f := range files {
			abs, err := filepath.Abs(f)
			if err != nil {
				abs = f
			}
			for j, s := range stack {
				if s == abs {
					chain := append(append([]string{}, stack[j:]...), abs)
					prob(false, "include cycle: %s", strings.Join(chain, " -> "))
					abs = ""
					break
				}
			}
			if abs == "" || in.seen[abs] {
				continue // a cycle (reported) or a file two patterns match
			}
			in.seen[abs] = true
			if msg := in.read(f, append(stack, abs)); msg != "" {
				prob(false, "%s", msg)
			}
		}
	}
}

// read merges one included file; a problem reaching it (missing, not a
// regular file) is returned for the include line to report.
func (in *includer) read(file string, stack []string) string {
	st, err := os.Stat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("included file %s does not exist", file)
	case err != nil:
		return fmt.Sprintf("included file %s: %v", file, unwrapPathErr(err))
	case !st.Mode().IsRegular():
		return fmt.Sprintf("included file %s is not a regular file", file)
	case st.Size() > maxIncludeSize:
		return fmt.Sprintf("included file %s is larger than %d bytes", file, maxIncludeSize)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Sprintf("included file %s: %v", file, unwrapPathErr(err))
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		in.probs = append(in.probs, syntaxProblem(file, err))
		return ""
	}
	if root.Kind == 0 || len(root.Content) == 0 {
		return "" // an empty file adds nothing
	}
	doc := root.Content[0]
	if doc.Kind != yaml.MappingNode {
		in.probs = append(in.probs, Problem{File: file, Line: doc.Line, Col: doc.Column,
			Msg: "an included file is a mapping with sites (and include)"})
		return ""
	}
	var sites, nested *yaml.Node
	for i := 0; i+1 < len(doc.Content); i += 2 {
		k, v := doc.Content[i], doc.Content[i+1]
		switch k.Value {
		case "sites":
			sites = v
		case "include":
			nested = v
		default:
			in.probs = append(in.probs, Problem{File: file, Line: k.Line, Col: k.Column, Path: k.Value,
				Msg: fmt.Sprintf("not allowed in an included file, which holds only sites and include: %s belongs in the main file %s", k.Value, in.c.File)})
		}
	}
	if sites != nil {
		items := sites.Content
		if sites.Kind != yaml.SequenceNode {
			items = []*yaml.Node{sites} // one site, as decodeSlice allows
		}
		d := &decoder{file: file, pos: in.c.pos}
		for _, item := range items {
			sp := fmt.Sprintf("sites[%d]", len(in.c.Sites))
			var s Site
			d.decode(item, reflect.ValueOf(&s).Elem(), sp)
			in.c.Sites = append(in.c.Sites, s)
			in.c.files[sp] = file
		}
		in.probs = append(in.probs, d.probs...)
	}
	if nested != nil {
		var pats []string
		d := &decoder{file: file, pos: map[string]Pos{}}
		d.decode(nested, reflect.ValueOf(&pats).Elem(), "include")
		in.probs = append(in.probs, d.probs...)
		in.includes(file, pats, d.pos, stack)
	}
	return ""
}

// posIn is Config.Pos over a bare position map.
func posIn(pos map[string]Pos, path string) Pos {
	return (&Config{pos: pos}).Pos(path)
}

// fileOf names the file the key path was written in: an included file for
// the sites that came from one, else the main file.
func (c *Config) fileOf(path string) string {
	if strings.HasPrefix(path, "sites[") {
		if i := strings.IndexByte(path, ']'); i > 0 {
			if f, ok := c.files[path[:i+1]]; ok {
				return f
			}
		}
	}
	return c.File
}

// where names a key path for a message about another key: with its file
// and line when it was written in another file than path.
func (c *Config) where(other, path string) string {
	f := c.fileOf(other)
	if f == c.fileOf(path) {
		return other
	}
	p := c.Pos(other)
	return fmt.Sprintf("%s (%s:%d)", other, f, p.Line)
}
