package proxy

import (
	"edge/internal/prom"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus collectors. Every Handler registered
// with the same Registerer shares them (a reload builds a new Handler while
// the old one still serves), so they are registered once and found again
// through prometheus.AlreadyRegisteredError.
type metrics struct {
	site, route string
	up          *upCollector
	requests    *prometheus.CounterVec // site, route, upstream, code
	errors      *prometheus.CounterVec // site, route, upstream, cause
	tunnels     *prometheus.GaugeVec   // site, route
	// counters caches the children of requests: servers × status codes.
	counters *prom.Counters[counterKey]
}

type counterKey struct {
	upstream string
	code     int
}

func newMetrics(reg prometheus.Registerer, site, route string) (*metrics, error) {
	m := &metrics{site: site, route: route}
	var err error
	if m.up, err = prom.Register(reg, newUpCollector()); err != nil {
		return nil, err
	}
	if m.requests, err = prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_proxy_requests_total",
		Help: "Proxied requests by site, route, upstream server and status code (499: the client went away; upstream is empty when no server was reached).",
	}, []string{"site", "route", "upstream", "code"})); err != nil {
		return nil, err
	}
	m.counters = prom.NewCounters(m.requests, func(k counterKey) []string {
		return []string{site, route, k.upstream, strconv.Itoa(k.code)}
	})
	if m.errors, err = prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_proxy_upstream_errors_total",
		Help: "Failed attempts to reach an upstream server by site, route, server and cause (connect_refused, connect_timeout, connect_error, tls, timeout, upstream_closed, upstream_error, bad_upgrade, no_upstream).",
	}, []string{"site", "route", "upstream", "cause"})); err != nil {
		return nil, err
	}
	if m.tunnels, err = prom.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "edge_proxy_tunnels_open",
		Help: "Open upgraded connections (WebSockets) by site and route.",
	}, []string{"site", "route"})); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) request(upstream string, code int) {
	if m == nil {
		return
	}
	m.counters.Get(counterKey{upstream, code}).Inc()
}

func (m *metrics) failure(upstream, cause string) {
	if m != nil {
		m.errors.WithLabelValues(m.site, m.route, upstream, cause).Inc()
	}
}

func (m *metrics) tunnel(delta float64) {
	if m != nil {
		m.tunnels.WithLabelValues(m.site, m.route).Add(delta)
	}
}

// upCollector reports edge_proxy_upstream_up from the live upstream sets at
// scrape time, so that a server coming back after fail_timeout shows at
// once.
// When a reload briefly leaves two sets with the same site, route and
// server, the newer one is reported.
type upCollector struct {
	desc *prometheus.Desc

	mu   sync.Mutex
	sets map[*upstreams]setEntry // guarded by mu
	seq  uint64                  // guarded by mu
}

type setEntry struct {
	site, route string
	seq         uint64
}

func newUpCollector() *upCollector {
	return &upCollector{
		desc: prometheus.NewDesc("edge_proxy_upstream_up",
			"Whether an upstream server gets traffic (1) or is down by passive or active health checks (0).",
			[]string{"site", "route", "upstream"}, nil),
		sets: map[*upstreams]setEntry{},
	}
}

func (c *upCollector) add(p *upstreams, site, route string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	c.sets[p] = setEntry{site: site, route: route, seq: c.seq}
}

func (c *upCollector) remove(p *upstreams) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.sets, p)
}

// Describe implements prometheus.Collector.
func (c *upCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *upCollector) Collect(ch chan<- prometheus.Metric) {
	type key struct{ site, route, upstream string }
	type val struct {
		seq uint64
		up  bool
	}
	c.mu.Lock()
	vals := map[key]val{}
	for p, e := range c.sets {
		for _, s := range p.list {
			k := key{e.site, e.route, s.name}
			if v, ok := vals[k]; !ok || e.seq > v.seq {
				vals[k] = val{e.seq, p.up(s)}
			}
		}
	}
	c.mu.Unlock()
	for k, v := range vals {
		up := 0.0
		if v.up {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, up, k.site, k.route, k.upstream)
	}
}
