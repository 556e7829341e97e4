package config

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// decoder maps a yaml.Node tree onto the Config structs by reflection. It is
// written by hand rather than using Node.Decode because Node.Decode does not
// reject unknown keys (KnownFields applies only to yaml.Decoder) and stops at
// the first problem, while edge reports every problem with its key path, line
// and column in one run.
type decoder struct {
	file  string
	probs Problems
	pos   map[string]Pos // key path -> where it was written
}

// Pos is a line and column in the configuration file, both 1-based.
type Pos struct{ Line, Col int }

// scalarStruct is implemented by struct types that may also be written as a
// single scalar, such as an upstream given as a bare URL.
type scalarStruct interface {
	setScalar(s string) error
}

var (
	durationType = reflect.TypeOf(time.Duration(0))
	byteSizeType = reflect.TypeOf(ByteSize(0))
)

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.probs = append(d.probs, Problem{
		File: d.file, Line: n.Line, Col: n.Column, Path: path,
		Msg: fmt.Sprintf(format, args...),
	})
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// decode fills v from n, recording problems instead of stopping at them.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	if d.pos != nil {
		if _, seen := d.pos[path]; !seen {
			d.pos[path] = Pos{n.Line, n.Column}
		}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value keeps the default
	}
	switch v.Type() {
	case durationType:
		d.decodeDuration(n, v, path)
		return
	case byteSizeType:
		d.decodeByteSize(n, v, path)
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path, "a string"); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		s, ok := d.scalar(n, path, "true or false")
		if !ok {
			return
		}
		switch strings.ToLower(s) {
		case "true", "yes", "on":
			v.SetBool(true)
		case "false", "no", "off":
			v.SetBool(false)
		default:
			d.errorf(n, path, "expected true or false, got %q", s)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		s, ok := d.scalar(n, path, "an integer")
		if !ok {
			return
		}
		i, err := strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, v.Type().Bits())
		if err != nil {
			d.errorf(n, path, "expected an integer, got %q", s)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		s, ok := d.scalar(n, path, "a number")
		if !ok {
			return
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			d.errorf(n, path, "expected a number, got %q", s)
			return
		}
		v.SetFloat(f)
	default:
		d.errorf(n, path, "internal: cannot decode into %s", v.Type())
	}
}

func (d *decoder) scalar(n *yaml.Node, path, want string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected %s, got a %s", want, kindName(n))
		return "", false
	}
	return n.Value, true
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		return "scalar"
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.ScalarNode {
		if ss, ok := v.Addr().Interface().(scalarStruct); ok {
			if err := ss.setScalar(n.Value); err != nil {
				d.errorf(n, path, "%v", err)
			}
			return
		}
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got a %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		key := k.Value
		kp := joinPath(path, key)
		if seen[key] {
			d.errorf(k, kp, "duplicate key")
			continue
		}
		seen[key] = true
		idx, ok := fields[key]
		if !ok {
			d.errorf(k, kp, "unknown key %q%s", key, suggest(key, fields))
			continue
		}
		if d.pos != nil {
			d.pos[kp] = Pos{k.Line, k.Column}
		}
		d.decode(val, v.Field(idx), kp)
	}
}

// structFields maps yaml key names to field indexes.
func structFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, _, _ := strings.Cut(tag, ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

// suggest names the known keys, closest first, so a typo is easy to fix.
func suggest(key string, fields map[string]int) string {
	names := make([]string, 0, len(fields))
	for k := range fields {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		di, dj := editDistance(key, names[i]), editDistance(key, names[j])
		if di != dj {
			return di < dj
		}
		return names[i] < names[j]
	})
	if len(names) > 0 && editDistance(key, names[0]) <= 2 {
		return fmt.Sprintf(" (did you mean %q?)", names[0])
	}
	sort.Strings(names)
	return " (known keys: " + strings.Join(names, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		// A single value where a list is expected is a list of one:
		// "hosts: example.com" means what the writer thinks it means.
		if n.Kind == yaml.ScalarNode || n.Kind == yaml.MappingNode {
			s := reflect.MakeSlice(v.Type(), 1, 1)
			d.decode(n, s.Index(0), path+"[0]")
			v.Set(s)
			return
		}
		d.errorf(n, path, "expected a list, got a %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got a %s", kindName(n))
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		d.errorf(n, path, "internal: map key must be a string")
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		kp := joinPath(path, k.Value)
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, kp, "map keys must be scalars")
			continue
		}
		if m.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.errorf(k, kp, "duplicate key")
			continue
		}
		e := reflect.New(v.Type().Elem()).Elem()
		d.decode(val, e, kp)
		m.SetMapIndex(reflect.ValueOf(k.Value).Convert(v.Type().Key()), e)
	}
	v.Set(m)
}

func (d *decoder) decodeDuration(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, "a duration such as 30s")
	if !ok {
		return
	}
	dur, err := ParseDuration(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	v.SetInt(int64(dur))
}

func (d *decoder) decodeByteSize(n *yaml.Node, v reflect.Value, path string) {
	s, ok := d.scalar(n, path, "a size such as 1MiB")
	if !ok {
		return
	}
	b, err := ParseByteSize(s)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return
	}
	v.SetInt(int64(b))
}

// ParseDuration parses a Go duration ("90s", "1h30m") and also accepts a
// "d" suffix for days ("365d"), the unit HSTS and certificate settings use.
// A bare number is refused: "60" could mean seconds or nanoseconds.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseFloat(days, 64)
		if err != nil || n < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n * float64(24*time.Hour)), nil
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
			return 0, fmt.Errorf("duration %q needs a unit, such as %ss", s, s)
		}
		return 0, fmt.Errorf("invalid duration %q (use a unit: 500ms, 30s, 5m, 1h, 7d)", s)
	}
	if dur < 0 {
		return 0, fmt.Errorf("duration %q is negative", s)
	}
	return dur, nil
}

// ByteSize is a number of bytes, written in YAML as a plain integer or with a
// unit: "64KiB", "1MiB", "10MB", or nginx's "1m"/"512k" (binary multiples).
type ByteSize int64

// ParseByteSize parses a size with an optional unit. Units are
// case-insensitive; k, m and g (nginx style) are binary multiples.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" {
		return 0, fmt.Errorf("invalid size %q (use bytes or a unit: 512KiB, 1MiB, 1m)", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kb": 1e3, "kib": 1 << 10,
		"m": 1 << 20, "mb": 1e6, "mib": 1 << 20,
		"g": 1 << 30, "gb": 1e9, "gib": 1 << 30,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, unit)
	}
	if f*mult > 1<<62 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return ByteSize(f * mult), nil
}

// String formats the size in the largest binary unit that divides it.
func (b ByteSize) String() string {
	switch {
	case b >= 1<<30 && b%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", b>>30)
	case b >= 1<<20 && b%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", b>>20)
	case b >= 1<<10 && b%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", b>>10)
	}
	return strconv.FormatInt(int64(b), 10)
}
