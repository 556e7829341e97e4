package hub

import (
	"strings"
	"testing"

	"edge/config"
)

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"orders", "orders", true},
		{"orders", "orders2", false},
		{"*", "anything:at/all", true},
		{"room:*", "room:1", true},
		{"room:*", "room:", true},
		{"room:*", "rooms:1", false},
		{"*:admin", "x:y:admin", true},
		{"a*b*c", "aXXbYYc", true},
		{"a*b*c", "aXXbYY", false},
		{"a*b*c", "abc", true},
		{"a**", "a", true},
		{"user/*/feed", "user/42/feed", true},
		{"user/*/feed", "user/42/feed/x", false},
	}
	for _, tc := range cases {
		if got := matchPattern(tc.pattern, tc.name); got != tc.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestValidChannel(t *testing.T) {
	for name, want := range map[string]bool{
		"orders": true, "room:1": true, "a/b-c_d.e": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "a b": false, "a*": false, "!canary:x": false, "é": false,
	} {
		if got := config.ValidChannel(name); got != want {
			t.Errorf("config.ValidChannel(%q) = %v, want %v", name, got, want)
		}
	}
}
