package nginxconf

import (
	"bytes"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// mapping is an ordered YAML mapping under construction, with comments:
// the converter fills it in nginx's order and renders it with yaml.v3, so
// quoting is always right and the output keeps the reader's order.
type mapping struct {
	keys  []string
	vals  []any // string, int, bool, []string, []any, *mapping
	notes []string
	flow  bool
}

func newMap() *mapping { return &mapping{} }

// set replaces or appends key.
func (m *mapping) set(key string, val any) *mapping {
	for i, k := range m.keys {
		if k == key {
			m.vals[i] = val
			return m
		}
	}
	m.keys = append(m.keys, key)
	m.vals = append(m.vals, val)
	return m
}

func (m *mapping) get(key string) any {
	for i, k := range m.keys {
		if k == key {
			return m.vals[i]
		}
	}
	return nil
}

// sub returns the mapping under key, creating it.
func (m *mapping) sub(key string) *mapping {
	if s, ok := m.get(key).(*mapping); ok {
		return s
	}
	s := newMap()
	m.set(key, s)
	return s
}

func (m *mapping) del(key string) {
	for i, k := range m.keys {
		if k == key {
			m.keys = append(m.keys[:i], m.keys[i+1:]...)
			m.vals = append(m.vals[:i], m.vals[i+1:]...)
			return
		}
	}
}

func (m *mapping) note(s string) { m.notes = append(m.notes, s) }

func (m *mapping) node() *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, HeadComment: strings.Join(m.notes, "\n")}
	if m.flow {
		n.Style = yaml.FlowStyle
	}
	for i, k := range m.keys {
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, valueNode(m.vals[i]))
	}
	return n
}

func valueNode(v any) *yaml.Node {
	switch v := v.(type) {
	case *mapping:
		return v.node()
	case int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(v)}
	case bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(v)}
	case []string:
		n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
		for _, s := range v {
			n.Content = append(n.Content, strNode(s))
		}
		return n
	case []any:
		n := &yaml.Node{Kind: yaml.SequenceNode}
		for _, e := range v {
			n.Content = append(n.Content, valueNode(e))
		}
		return n
	case string:
		return strNode(v)
	}
	panic("nginxconf: unexpected YAML value")
}

// strNode is a string scalar, quoted where a reader could misread it
// (":80", "*.example.com", "", "10m" stays plain).
func strNode(s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	switch {
	case strings.ContainsAny(s, "\n\r\t"):
		n.Style = yaml.DoubleQuotedStyle
	case s == "" || strings.HasPrefix(s, ":") || strings.HasPrefix(s, "*") || strings.ContainsAny(s, "{}#$\\"):
		n.Style = yaml.SingleQuotedStyle
	}
	return n
}

// render encodes a document whose head comment is head.
func render(head string, m *mapping) []byte {
	doc := &yaml.Node{Kind: yaml.DocumentNode, HeadComment: head, Content: []*yaml.Node{m.node()}}
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		panic("nginxconf: encoding YAML: " + err.Error())
	}
	enc.Close()
	return b.Bytes()
}
