package loadgen

import (
	"errors"
	"slices"
	"sync"
	"testing"
)

func TestErrCount(t *testing.T) {
	var e ErrCount
	if e.N() != 0 || e.First() != nil {
		t.Fatalf("zero value: %d, %v", e.N(), e.First())
	}
	first := errors.New("first")
	e.Add(first)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { e.Add(errors.New("later")) })
	}
	wg.Wait()
	if e.N() != 9 || e.First() != first {
		t.Errorf("N, First = %d, %v; want 9, first", e.N(), e.First())
	}
}

func TestSelect(t *testing.T) {
	all := []string{"a", "b", "c"}
	id := func(s string) string { return s }
	for _, tt := range []struct {
		args []string
		want []string
		err  string
	}{
		{nil, all, ""},
		{[]string{"c", "a"}, []string{"c", "a"}, ""},
		{[]string{"b", "all"}, all, ""},
		{[]string{"a", "x"}, nil, `unknown scenario "x" (have: a b c)`},
	} {
		got, err := Select(all, tt.args, id)
		var msg string
		if err != nil {
			msg = err.Error()
		}
		if msg != tt.err || !slices.Equal(got, tt.want) {
			t.Errorf("Select(%q) = %q, %q; want %q, %q", tt.args, got, msg, tt.want, tt.err)
		}
	}
}
