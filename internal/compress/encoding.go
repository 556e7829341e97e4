// Package compress holds what static and proxy share to compress
// responses on the fly: the content codings edge speaks (zstd, br, gzip),
// Accept-Encoding negotiation (RFC 9110 §12.5.3), media type matching
// against a compress block's types, and pooled encoders. One copy, so a
// client gets the same coding from a file and from a proxied page.
package compress

import "strings"

// Encoding is a content coding edge can send. The zero value is identity
// (no coding).
type Encoding uint8

// The codings, in the order of AcceptQ's entries.
const (
	Identity Encoding = iota
	Brotli
	Zstd
	Gzip
	NumEncodings
)

// tokens are the Content-Encoding tokens of each coding.
var tokens = [NumEncodings]string{"", "br", "zstd", "gzip"}

// String returns the Content-Encoding token: "br", "zstd", "gzip", or ""
// for identity.
func (e Encoding) String() string { return tokens[e] }

// Parse maps a config token (zstd, br, gzip) to its coding.
func Parse(s string) (Encoding, bool) {
	for e := Brotli; e < NumEncodings; e++ {
		if tokens[e] == s {
			return e, true
		}
	}
	return Identity, false
}

// AcceptQ holds the quality (0..1000) an Accept-Encoding header gives each
// coding, identity included. 0 means "not acceptable".
type AcceptQ [NumEncodings]int16

// ParseAccept evaluates an Accept-Encoding header value as RFC 9110
// §12.5.3 says: a coding named explicitly gets its own q (default 1); one
// not named gets the q of "*", or is not acceptable when there is no "*";
// identity stays acceptable unless "identity;q=0", or "*;q=0" without an
// identity entry, refuses it. Identity not named gets the lowest q (0.001),
// so "br;q=0.5" still means "br rather than nothing". An absent or empty
// header accepts identity only. An element with a malformed q counts as
// q=0. It does not allocate, and its time is linear in the header's length
// (net/http bounds a header at 1 MiB).
func ParseAccept(header string) AcceptQ {
	var q AcceptQ
	for i := range q {
		q[i] = -1 // not named
	}
	star := int16(-1)
	for header != "" {
		var elem string
		elem, header, _ = strings.Cut(header, ",")
		coding, params, _ := strings.Cut(elem, ";")
		coding = strings.TrimSpace(coding)
		if coding == "" {
			continue
		}
		qv := parseQParams(params)
		switch {
		case coding == "*":
			star = qv
		case strings.EqualFold(coding, "identity"):
			q[Identity] = qv
		case strings.EqualFold(coding, "br"):
			q[Brotli] = qv
		case strings.EqualFold(coding, "zstd"):
			q[Zstd] = qv
		case strings.EqualFold(coding, "gzip"), strings.EqualFold(coding, "x-gzip"):
			q[Gzip] = qv
		}
	}
	for e := range q {
		if q[e] >= 0 {
			continue
		}
		switch {
		case star >= 0:
			q[e] = star
		case Encoding(e) == Identity:
			q[e] = 1 // acceptable, but after any coding the client names
		default:
			q[e] = 0
		}
	}
	return q
}

// parseQParams returns the q parameter among ";"-separated params, 1000 when
// absent and 0 when malformed.
func parseQParams(params string) int16 {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, val, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		return parseQValue(strings.TrimSpace(val))
	}
	return 1000
}

// parseQValue parses a qvalue (RFC 9110 §12.4.2: "0" or "1" with up to
// three decimals) into thousandths; anything else yields 0.
func parseQValue(s string) int16 {
	if s == "" || len(s) > 5 || (s[0] != '0' && s[0] != '1') {
		return 0
	}
	v := int16(s[0]-'0') * 1000
	if len(s) > 1 {
		if s[1] != '.' {
			return 0
		}
		scale := int16(100)
		for _, c := range s[2:] {
			if c < '0' || c > '9' {
				return 0
			}
			v += int16(c-'0') * scale
			scale /= 10
		}
	}
	if v > 1000 {
		return 0
	}
	return v
}

// Choose picks the coding to send among the available ones, listed in the
// server's order of preference: the acceptable coding with the highest q
// wins, ties going to the earlier one; identity is sent when no coding is
// acceptable or identity has a strictly higher q. Identity is also the answer
// when the client refuses it and nothing else is acceptable: RFC 9110
// §12.5.3 lets a server send an uncoded response rather than a 406.
func (q *AcceptQ) Choose(available []Encoding) Encoding {
	best, bestQ := Identity, int16(0)
	for _, e := range available {
		if q[e] > bestQ {
			best, bestQ = e, q[e]
		}
	}
	if q[Identity] > bestQ {
		return Identity
	}
	return best
}

// TypeMatches reports whether the media type of ctype (parameters ignored)
// matches one of the patterns: an exact type, or "family/*", in any case.
// It does not allocate: it runs for every proxied response of a route
// with compress on.
func TypeMatches(ctype string, patterns []string) bool {
	mt, _, _ := strings.Cut(ctype, ";")
	mt = strings.TrimSpace(mt)
	for _, p := range patterns {
		if family, ok := strings.CutSuffix(p, "/*"); ok {
			if len(mt) > len(family) && mt[len(family)] == '/' && strings.EqualFold(mt[:len(family)], family) {
				return true
			}
		} else if strings.EqualFold(mt, p) {
			return true
		}
	}
	return false
}
