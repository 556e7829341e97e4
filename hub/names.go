package hub

import (
	"strings"

	"edge/config"
)

// Channel names (PROTOCOL.md §1): the rule for a name is config's
// (config.ValidChannel), so that route patterns and names cannot disagree;
// here is how patterns match names.

// matchPattern reports whether name matches pattern, where "*" matches any
// run of characters (also "/" and ":") and everything else matches itself.
func matchPattern(pattern, name string) bool {
	// Iterative glob with one backtracking point, linear in practice.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchAny reports whether name matches one of patterns, "{sub}" in a
// pattern standing for sub, the connection's token subject. A pattern
// with "{sub}" never matches for a sub that is not itself a valid channel
// name (none, or one with "*" that would widen the pattern).
func matchAny(patterns []string, name, sub string) bool {
	for _, p := range patterns {
		if strings.Contains(p, config.SubPlaceholder) {
			if !config.ValidChannel(sub) {
				continue
			}
			p = strings.ReplaceAll(p, config.SubPlaceholder, sub)
		}
		if matchPattern(p, name) {
			return true
		}
	}
	return false
}
