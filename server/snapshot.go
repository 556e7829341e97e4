package server

import (
	"sort"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// RouteStats is one route's request counters since the process started,
// read from the live collectors (the admin dashboard turns them into
// rates by difference).
type RouteStats struct {
	Site  string `json:"site"`
	Route string `json:"route"`
	// Classes counts responses by status class: "1xx" (upgrades), "2xx",
	// "3xx", "4xx", "5xx".
	Classes map[string]uint64 `json:"classes"`
	// Buckets are the cumulative counts of the request duration histogram
	// at each upper bound of Bounds (seconds); Count is every observed
	// request (upgrades excluded), the last, infinite bucket.
	Bounds  []float64 `json:"bounds"`
	Buckets []uint64  `json:"buckets"`
	Count   uint64    `json:"count"`
}

// Routes returns the counters of every route that has served a request,
// sorted by site and route. Safe for concurrent use; m may be nil.
func (m *Metrics) Routes() []RouteStats {
	if m == nil {
		return nil
	}
	type key struct{ site, route string }
	byKey := map[key]*RouteStats{}
	get := func(site, route string) *RouteStats {
		k := key{site, route}
		if rs := byKey[k]; rs != nil {
			return rs
		}
		rs := &RouteStats{Site: site, Route: route, Classes: map[string]uint64{}}
		byKey[k] = rs
		return rs
	}
	for _, d := range collect(m.requests) {
		l := labels(d)
		code, _ := strconv.Atoi(l["code"])
		if code < 100 || code > 599 {
			continue
		}
		get(l["site"], l["route"]).Classes[strconv.Itoa(code/100)+"xx"] += uint64(d.GetCounter().GetValue())
	}
	for _, d := range collect(m.duration) {
		l := labels(d)
		rs := get(l["site"], l["route"])
		h := d.GetHistogram()
		rs.Count = h.GetSampleCount()
		for _, b := range h.GetBucket() {
			rs.Bounds = append(rs.Bounds, b.GetUpperBound())
			rs.Buckets = append(rs.Buckets, b.GetCumulativeCount())
		}
	}
	out := make([]RouteStats, 0, len(byKey))
	for _, rs := range byKey {
		out = append(out, *rs)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Site != out[j].Site {
			return out[i].Site < out[j].Site
		}
		return out[i].Route < out[j].Route
	})
	return out
}

// InFlight is the number of requests being served now.
func (m *Metrics) InFlight() int64 {
	if m == nil {
		return 0
	}
	var d dto.Metric
	m.inflight.Write(&d)
	return int64(d.GetGauge().GetValue())
}

// collect reads every child of a collector.
func collect(c prometheus.Collector) []*dto.Metric {
	ch := make(chan prometheus.Metric, 64)
	go func() {
		c.Collect(ch)
		close(ch)
	}()
	var out []*dto.Metric
	for pm := range ch {
		d := &dto.Metric{}
		if pm.Write(d) == nil {
			out = append(out, d)
		}
	}
	return out
}

func labels(d *dto.Metric) map[string]string {
	l := make(map[string]string, len(d.GetLabel()))
	for _, p := range d.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

// OpenConns is the number of open client connections on the capped
// listeners (every site listener; the admin listener is not counted).
func (s *Server) OpenConns() int {
	s.limits.mu.Lock()
	defer s.limits.mu.Unlock()
	return s.limits.open
}
