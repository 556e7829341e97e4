package main

import (
	"bufio"
	"errors"
	"fmt"
	"html"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// chartRatios are the summary columns drawn, one bar each per scenario.
var chartRatios = []struct{ column, label, color string }{
	{"edge/nginx", "edge / nginx", "#2b7bb9"},
	{"edge/caddy", "edge / Caddy", "#e08a1e"},
}

// chartRow is one scenario of the chart: its throughput metric and the
// ratios edge/X that the report has for it (NaN where it has none).
type chartRow struct {
	scenario, metric string
	ratios           []float64 // as chartRatios
}

// parseSummary reads the rows of a report's summary table (the text
// benchrun prints and bench/results/*.txt keep) that the chart draws: per
// scenario the first throughput metric (req/s, conn/s, msg/s, MiB/s; not
// latency, memory or the per-core figures), so that every bar reads
// "above 1: edge is faster".
func parseSummary(r io.Reader) (header string, rows []chartRow, err error) {
	sc := bufio.NewScanner(r)
	var cols []string
	inSummary := false
	seen := map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		if header == "" && strings.HasPrefix(line, "edge side-by-side benchmark, ") {
			header = strings.TrimPrefix(line, "edge side-by-side benchmark, ")
		}
		if strings.HasPrefix(line, "== summary") {
			inSummary = true
			continue
		}
		if !inSummary {
			continue
		}
		f := strings.Fields(line)
		if len(f) == 0 {
			break
		}
		if cols == nil {
			if len(f) < 3 || f[0] != "scenario" || f[1] != "metric" {
				return "", nil, fmt.Errorf("summary header %q: want scenario, metric, then servers", line)
			}
			cols = f[2:]
			continue
		}
		if len(f) < len(cols)+2 {
			return "", nil, fmt.Errorf("summary row %q: %d columns, want %d values", line, len(f), len(cols))
		}
		vals := f[len(f)-len(cols):]
		row := chartRow{scenario: f[0], metric: strings.Join(f[1:len(f)-len(cols)], " ")}
		if seen[row.scenario] || !strings.HasSuffix(row.metric, "/s") {
			continue
		}
		seen[row.scenario] = true
		for _, c := range chartRatios {
			v := math.NaN()
			for i, name := range cols {
				if name == c.column {
					if x, err := strconv.ParseFloat(vals[i], 64); err == nil && x > 0 {
						v = x
					}
				}
			}
			row.ratios = append(row.ratios, v)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return "", nil, err
	}
	if len(rows) == 0 {
		return "", nil, errors.New("no summary table with throughput rows in the report")
	}
	return header, rows, nil
}

// Chart geometry, in SVG user units (pixels).
const (
	chartWidth  = 760
	labelWidth  = 230 // scenario and metric names, left of the bars
	barHeight   = 14
	groupGap    = 12
	chartTop    = 58
	chartBottom = 34
)

// writeChart draws rows as a horizontal bar chart: a group per scenario, a
// bar per ratio, the value at its end, and a line at 1 (parity).
func writeChart(w io.Writer, title string, rows []chartRow) error {
	max := 1.0
	for _, r := range rows {
		for _, v := range r.ratios {
			if !math.IsNaN(v) && v > max {
				max = v
			}
		}
	}
	max = math.Ceil(max*2) / 2 // a half-step above the largest bar
	plot := float64(chartWidth - labelWidth - 50)
	x := func(v float64) float64 { return labelWidth + v/max*plot }
	group := len(chartRatios)*barHeight + groupGap
	height := chartTop + len(rows)*group + chartBottom

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartWidth, height, chartWidth, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="20" font-size="14" font-weight="bold">%s</text>`+"\n", html.EscapeString(title))
	for i, c := range chartRatios {
		lx := labelWidth + i*130
		fmt.Fprintf(&b, `<rect x="%d" y="32" width="12" height="12" fill="%s"/><text x="%d" y="43">%s</text>`+"\n", lx, c.color, lx+16, html.EscapeString(c.label))
	}
	axisBottom := chartTop + len(rows)*group
	// Grid every 0.5, the parity line at 1 drawn darker.
	for v := 0.0; v <= max+1e-9; v += 0.5 {
		stroke, width := "#dddddd", 1
		if v == 1 {
			stroke, width = "#333333", 2
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="%d"/>`+"\n", x(v), chartTop-4, x(v), axisBottom, stroke, width)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555555">%s</text>`+"\n", x(v), axisBottom+14, strconv.FormatFloat(v, 'f', 1, 64))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555555">edge throughput ÷ the other server's (above 1: edge is faster)</text>`+"\n", x(max/2), axisBottom+30)
	for i, r := range rows {
		y := chartTop + i*group
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelWidth-8, y+barHeight, html.EscapeString(r.scenario))
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end" fill="#777777" font-size="10">%s</text>`+"\n", labelWidth-8, y+2*barHeight, html.EscapeString(r.metric))
		for j, v := range r.ratios {
			if math.IsNaN(v) {
				continue
			}
			by := y + j*barHeight
			fmt.Fprintf(&b, `<rect class="bar" data-ratio="%s" data-scenario="%s" x="%d" y="%d" width="%.1f" height="%d" fill="%s"><title>%s %s: %.2f</title></rect>`+"\n",
				chartRatios[j].column, html.EscapeString(r.scenario), labelWidth, by+1, x(v)-labelWidth, barHeight-2, chartRatios[j].color,
				html.EscapeString(r.scenario), chartRatios[j].label, v)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" font-size="10">%.2f</text>`+"\n", x(v)+4, by+barHeight-2, v)
		}
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// chartFile is where the chart of a report file goes: beside it, .svg.
func chartFile(report string) string {
	return strings.TrimSuffix(report, ".txt") + ".svg"
}

// writeChartFile draws the chart of the report file and writes it beside
// the report, returning its path.
func writeChartFile(report string) (string, error) {
	f, err := os.Open(report)
	if err != nil {
		return "", err
	}
	defer f.Close()
	when, rows, err := parseSummary(f)
	if err != nil {
		return "", fmt.Errorf("%s: %w", report, err)
	}
	out := chartFile(report)
	g, err := os.Create(out)
	if err != nil {
		return "", err
	}
	if err := writeChart(g, "edge side-by-side, "+when, rows); err != nil {
		g.Close()
		return "", err
	}
	return out, g.Close()
}
