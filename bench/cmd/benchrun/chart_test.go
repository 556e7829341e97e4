package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
)

// svgBar is a <rect class="bar"> of the chart.
type svgBar struct {
	scenario, ratio string
	width           float64
}

// parseSVG decodes the whole document (failing on malformed XML) and
// returns its bars.
func parseSVG(t *testing.T, svg []byte) []svgBar {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var bars []svgBar
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("chart is not well-formed XML: %v\n%s", err, svg)
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if root == "" {
			root = se.Name.Space + " " + se.Name.Local
		}
		attr := map[string]string{}
		for _, a := range se.Attr {
			attr[a.Name.Local] = a.Value
		}
		if se.Name.Local == "rect" && attr["class"] == "bar" {
			w, err := strconv.ParseFloat(attr["width"], 64)
			if err != nil {
				t.Fatalf("bar width %q", attr["width"])
			}
			bars = append(bars, svgBar{attr["data-scenario"], attr["data-ratio"], w})
		}
	}
	if root != "http://www.w3.org/2000/svg svg" {
		t.Fatalf("root element %q, want svg in the SVG namespace", root)
	}
	return bars
}

// TestChartFromReport draws the summary of a real report (2026-12-07,
// every scenario): one bar per edge/nginx and edge/Caddy ratio of each
// scenario's throughput row, none for latency or memory rows, and bar
// lengths proportional to the ratios.
func TestChartFromReport(t *testing.T) {
	report := "testdata/report.txt"
	when, rows, err := parseSummary(strings.NewReader(mustRead(t, report)))
	if err != nil {
		t.Fatal(err)
	}
	if when != "2026-12-07 12:26 UTC" {
		t.Errorf("title date %q", when)
	}
	var buf bytes.Buffer
	if err := writeChart(&buf, "edge <&> test", rows); err != nil {
		t.Fatal(err)
	}
	bars := parseSVG(t, buf.Bytes())
	// 10 scenarios with a rate (ws-idle-mem has only memory), 2 ratios each.
	if len(bars) != 20 {
		t.Fatalf("%d bars, want 20 (10 scenarios x edge/nginx, edge/caddy)", len(bars))
	}
	want := map[string]float64{ // from the report's summary
		"static-1k edge/nginx": 0.87, "static-1k edge/caddy": 2.87,
		"static-1m edge/nginx": 1.25, "h2-static-1k edge/caddy": 3.57, "ws-echo edge/caddy": 0.81,
	}
	unit := bars[0].width / 0.87
	for _, b := range bars {
		if b.scenario == "ws-idle-mem" {
			t.Errorf("a bar for ws-idle-mem, which has no throughput row")
		}
		if r, ok := want[b.scenario+" "+b.ratio]; ok {
			if math.Abs(b.width/unit-r) > 0.01 {
				t.Errorf("%s %s bar is %.2f units long, want %.2f", b.scenario, b.ratio, b.width/unit, r)
			}
			delete(want, b.scenario+" "+b.ratio)
		}
	}
	if len(want) > 0 {
		t.Errorf("no bars for %v", want)
	}
	if !strings.Contains(buf.String(), "edge &lt;&amp;&gt; test") {
		t.Error("the title is not escaped")
	}
}

// TestChartMissingRatio: a scenario measured against nginx only ("-"
// under edge/caddy) gets one bar, not a zero-length or NaN one.
func TestChartMissingRatio(t *testing.T) {
	in := `== summary (medians)
         scenario   metric    edge   nginx   caddy  edge/nginx  edge/caddy
  static-1k-limit    req/s   53293   50274       0        1.06           -
  static-1k-limit   p99 ms    3.73    2.39       0        1.56           -
`
	_, rows, err := parseSummary(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	writeChart(&buf, "t", rows)
	bars := parseSVG(t, buf.Bytes())
	if len(bars) != 1 || bars[0].ratio != "edge/nginx" {
		t.Errorf("bars %+v, want one edge/nginx bar", bars)
	}
	if strings.Contains(buf.String(), "NaN") {
		t.Error("NaN in the chart")
	}
}

// TestChartBadReport: a report cut before its summary, or with a summary
// in another shape, is an error that says so, not an empty picture.
func TestChartBadReport(t *testing.T) {
	for name, in := range map[string]string{
		"no summary":   "edge side-by-side benchmark, 2026-12-07 12:26 UTC\n== static-1k: ...\n",
		"bad header":   "== summary\nfoo bar\n",
		"short row":    "== summary\nscenario metric edge nginx edge/nginx\nstatic-1k req/s 1\n",
		"only latency": "== summary\nscenario metric edge nginx edge/nginx\nstatic-1k p99 ms 1 2 0.5\n",
	} {
		if _, _, err := parseSummary(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func mustRead(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
