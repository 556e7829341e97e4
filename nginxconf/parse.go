// Package nginxconf reads nginx configuration files and converts them to
// edge's YAML configuration (the "edge import-nginx" command).
//
// The parser follows nginx's own tokenizer (src/core/ngx_conf_file.c):
// words separated by blanks, single- and double-quoted strings with
// backslash escapes, "#" comments, ";" ending a simple directive and
// "{" "}" around a block. Includes are expanded in place, so the
// converter sees one tree whose directives still name the file and line
// they came from.
package nginxconf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Directive is one nginx directive: its name, arguments (quotes removed,
// escapes resolved) and, for block directives, the directives inside.
type Directive struct {
	Name     string
	Args     []string
	Block    []*Directive
	HasBlock bool
	// File, Line and Col locate the directive's name.
	File      string
	Line, Col int
}

// Arg returns the i-th argument, or "" when there is none.
func (d *Directive) Arg(i int) string {
	if i < len(d.Args) {
		return d.Args[i]
	}
	return ""
}

// Pos is "FILE:LINE", how warnings name a directive.
func (d *Directive) Pos() string { return fmt.Sprintf("%s:%d", d.File, d.Line) }

// ParseError is a syntax error, an include cycle or an unreadable file,
// located as FILE:LINE:COL.
type ParseError struct {
	File      string
	Line, Col int
	Msg       string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Limits that keep a hostile or broken file from exhausting memory or the
// stack: nginx configurations are kilobytes, rarely a few megabytes.
const (
	MaxFileSize     = 16 << 20 // bytes of one file
	MaxTotalSize    = 64 << 20 // bytes of all files, includes included
	MaxDepth        = 50       // nested blocks
	MaxIncludeDepth = 16       // nested includes
)

// Options control Parse.
type Options struct {
	// Prefix is the directory relative include paths are resolved
	// against, as nginx's conf prefix (-p/-c). Default: the directory of
	// the main file.
	Prefix string
	// Notes receives a line for each well-known include that was skipped
	// because the file does not exist here (fastcgi_params, mime.types…).
	Notes func(d *Directive, msg string)
}

// wellKnownIncludes are the files nginx packages ship whose content edge
// does not need (it sets the FastCGI parameters and media types itself);
// a configuration copied without them still converts.
var wellKnownIncludes = map[string]bool{
	"fastcgi_params": true, "fastcgi.conf": true, "mime.types": true,
	"proxy_params": true, "uwsgi_params": true, "scgi_params": true,
	"snippets/fastcgi-php.conf": true, "koi-utf": true, "koi-win": true, "win-utf": true,
}

// Parse reads the configuration file at path with its includes.
func Parse(path string, opt Options) ([]*Directive, error) {
	if opt.Prefix == "" {
		opt.Prefix = filepath.Dir(path)
	}
	p := &parser{opt: opt}
	return p.file(path, nil, 0)
}

type parser struct {
	opt   Options
	total int
	stack []string // absolute paths of the files being read (include cycle check)
}

func (p *parser) file(path string, from *Directive, depth int) ([]*Directive, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	errAt := func(msg string) error {
		if from != nil {
			return &ParseError{File: from.File, Line: from.Line, Col: from.Col, Msg: msg}
		}
		return &ParseError{File: path, Msg: msg}
	}
	for _, s := range p.stack {
		if s == abs {
			return nil, errAt(fmt.Sprintf("include cycle: %s includes itself (%s)", path, strings.Join(append(p.stack, abs), " -> ")))
		}
	}
	if depth > MaxIncludeDepth {
		return nil, errAt(fmt.Sprintf("includes nested deeper than %d", MaxIncludeDepth))
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, errAt(fmt.Sprintf("open %s: %v", path, unwrap(err)))
	}
	if st.Size() > MaxFileSize {
		return nil, errAt(fmt.Sprintf("%s is %d bytes, more than the %d an nginx configuration file may have here", path, st.Size(), MaxFileSize))
	}
	p.total += int(st.Size())
	if p.total > MaxTotalSize {
		return nil, errAt(fmt.Sprintf("the included files hold more than %d bytes", MaxTotalSize))
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, errAt(fmt.Sprintf("read %s: %v", path, unwrap(err)))
	}
	p.stack = append(p.stack, abs)
	defer func() { p.stack = p.stack[:len(p.stack)-1] }()
	lx := &lexer{file: path, src: data, line: 1, col: 1}
	ds, err := p.block(lx, nil, 0)
	if err != nil {
		return nil, err
	}
	return p.expand(ds, depth)
}

// expand replaces include directives by the directives of the files they
// name, recursively into blocks.
func (p *parser) expand(ds []*Directive, depth int) ([]*Directive, error) {
	out := make([]*Directive, 0, len(ds))
	for _, d := range ds {
		if d.HasBlock {
			b, err := p.expand(d.Block, depth)
			if err != nil {
				return nil, err
			}
			d.Block = b
		}
		if d.Name != "include" || d.HasBlock {
			out = append(out, d)
			continue
		}
		if len(d.Args) != 1 {
			return nil, &ParseError{File: d.File, Line: d.Line, Col: d.Col, Msg: "include takes one file name or glob"}
		}
		pat := d.Args[0]
		if !filepath.IsAbs(pat) {
			pat = filepath.Join(p.opt.Prefix, pat)
		}
		var files []string
		if strings.ContainsAny(d.Args[0], "*?[") {
			m, err := filepath.Glob(pat)
			if err != nil {
				return nil, &ParseError{File: d.File, Line: d.Line, Col: d.Col, Msg: fmt.Sprintf("include %s: %v", d.Args[0], err)}
			}
			sort.Strings(m) // nginx reads a glob's files in order
			files = m
		} else {
			if _, err := os.Stat(pat); err != nil && errors.Is(err, os.ErrNotExist) && wellKnownIncludes[d.Args[0]] {
				if p.opt.Notes != nil {
					p.opt.Notes(d, fmt.Sprintf("%s is not here; edge needs nothing from it", d.Args[0]))
				}
				continue
			}
			files = []string{pat}
		}
		for _, f := range files {
			sub, err := p.file(f, d, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, sub...)
		}
	}
	return out, nil
}

// block reads directives until the "}" closing open (nil: end of file).
func (p *parser) block(lx *lexer, open *token, depth int) ([]*Directive, error) {
	if depth > MaxDepth {
		return nil, lx.errAt(open.line, open.col, fmt.Sprintf("blocks nested deeper than %d", MaxDepth))
	}
	var ds []*Directive
	for {
		t, err := lx.next()
		if err != nil {
			return nil, err
		}
		switch t.kind {
		case tokEOF:
			if open != nil {
				return nil, lx.errAt(t.line, t.col, fmt.Sprintf("unexpected end of file, expecting \"}\" to close the block opened at line %d", open.line))
			}
			return ds, nil
		case tokClose:
			if open == nil {
				return nil, lx.errAt(t.line, t.col, "unexpected \"}\"")
			}
			return ds, nil
		case tokSemi, tokOpen:
			return nil, lx.errAt(t.line, t.col, fmt.Sprintf("unexpected %q", t.text))
		}
		d := &Directive{Name: t.text, File: lx.file, Line: t.line, Col: t.col}
	args:
		for {
			a, err := lx.next()
			if err != nil {
				return nil, err
			}
			switch a.kind {
			case tokWord:
				d.Args = append(d.Args, a.text)
			case tokSemi:
				break args
			case tokOpen:
				d.HasBlock = true
				b, err := p.block(lx, &a, depth+1)
				if err != nil {
					return nil, err
				}
				d.Block = b
				break args
			case tokClose:
				return nil, lx.errAt(a.line, a.col, fmt.Sprintf("unexpected \"}\": directive %q is not terminated by \";\"", d.Name))
			case tokEOF:
				return nil, lx.errAt(a.line, a.col, fmt.Sprintf("unexpected end of file: directive %q is not terminated by \";\"", d.Name))
			}
		}
		ds = append(ds, d)
	}
}

func unwrap(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
