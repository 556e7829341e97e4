package nginxconf

import "strings"

type tokKind int

const (
	tokWord tokKind = iota
	tokSemi
	tokOpen
	tokClose
	tokEOF
)

type token struct {
	kind      tokKind
	text      string
	line, col int
}

// lexer splits an nginx configuration into tokens as ngx_conf_read_token
// does. Positions are 1-based; columns count bytes.
type lexer struct {
	file      string
	src       []byte
	i         int
	line, col int
}

func (lx *lexer) errAt(line, col int, msg string) error {
	return &ParseError{File: lx.file, Line: line, Col: col, Msg: msg}
}

func (lx *lexer) advance() byte {
	c := lx.src[lx.i]
	lx.i++
	if c == '\n' {
		lx.line++
		lx.col = 1
	} else {
		lx.col++
	}
	return c
}

func (lx *lexer) next() (token, error) {
	// Blanks and comments.
	for lx.i < len(lx.src) {
		c := lx.src[lx.i]
		if c == ' ' || c == '\t' || c == '\r' || c == '\n' {
			lx.advance()
			continue
		}
		if c == '#' {
			for lx.i < len(lx.src) && lx.src[lx.i] != '\n' {
				lx.advance()
			}
			continue
		}
		break
	}
	line, col := lx.line, lx.col
	if lx.i >= len(lx.src) {
		return token{kind: tokEOF, line: line, col: col}, nil
	}
	switch c := lx.src[lx.i]; c {
	case ';':
		lx.advance()
		return token{kind: tokSemi, text: ";", line: line, col: col}, nil
	case '{':
		lx.advance()
		return token{kind: tokOpen, text: "{", line: line, col: col}, nil
	case '}':
		lx.advance()
		return token{kind: tokClose, text: "}", line: line, col: col}, nil
	case '"', '\'':
		lx.advance()
		var b strings.Builder
		for {
			if lx.i >= len(lx.src) {
				return token{}, lx.errAt(line, col, "unterminated quoted string")
			}
			ch := lx.advance()
			if ch == c {
				break
			}
			if ch == '\\' && lx.i < len(lx.src) {
				b.WriteString(unescape(lx.advance()))
				continue
			}
			b.WriteByte(ch)
		}
		// nginx wants a separator after a closing quote.
		if lx.i < len(lx.src) {
			switch lx.src[lx.i] {
			case ' ', '\t', '\r', '\n', ';', '{', '}':
			default:
				return token{}, lx.errAt(lx.line, lx.col, "unexpected character after a quoted string")
			}
		}
		return token{kind: tokWord, text: b.String(), line: line, col: col}, nil
	}
	var b strings.Builder
	for lx.i < len(lx.src) {
		ch := lx.src[lx.i]
		switch ch {
		case ' ', '\t', '\r', '\n', ';':
			return token{kind: tokWord, text: b.String(), line: line, col: col}, nil
		case '{':
			// "${var}" keeps its brace; any other "{" ends the word.
			if b.Len() == 0 || !strings.HasSuffix(b.String(), "$") {
				return token{kind: tokWord, text: b.String(), line: line, col: col}, nil
			}
			for lx.i < len(lx.src) && lx.src[lx.i] != '}' {
				b.WriteByte(lx.advance())
			}
			if lx.i < len(lx.src) {
				b.WriteByte(lx.advance())
			}
			continue
		case '}':
			return token{kind: tokWord, text: b.String(), line: line, col: col}, nil
		case '\\':
			lx.advance()
			if lx.i < len(lx.src) {
				b.WriteString(unescape(lx.advance()))
			}
			continue
		}
		b.WriteByte(lx.advance())
	}
	return token{kind: tokWord, text: b.String(), line: line, col: col}, nil
}

// unescape is what nginx makes of a backslash followed by c: quotes,
// backslashes and t/r/n are resolved, anything else keeps its backslash
// (regular expressions such as "\.php$").
func unescape(c byte) string {
	switch c {
	case '"', '\'', '\\':
		return string(c)
	case 't':
		return "\t"
	case 'r':
		return "\r"
	case 'n':
		return "\n"
	}
	return "\\" + string(c)
}
