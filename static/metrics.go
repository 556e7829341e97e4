package static

import (
	"edge/internal/prom"

	"github.com/prometheus/client_golang/prometheus"
)

// Option configures a Handler beyond its config block.
type Option func(*options)

type options struct {
	reg       prometheus.Registerer
	site      string
	scriptExt string
}

// WithRegisterer exports the route's cache metrics on reg:
// edge_static_cache_hits_total and edge_static_cache_misses_total
// (requests answered from memory or not), edge_static_cache_entries and
// edge_static_cache_bytes, each labelled {site, route} as the server's
// request metrics are: site is config's Site.Name(), route the route
// path. Two sites with the same route path therefore keep separate
// series. Handlers built on the same Registerer share the collectors, so a
// reload that builds new handlers keeps the counters. nil: no metrics (the
// default).
func WithRegisterer(reg prometheus.Registerer, site string) Option {
	return func(o *options) { o.reg, o.site = reg, site }
}

// metrics are one route's view of the shared collectors. A nil *metrics
// counts nothing.
type metrics struct {
	hits, misses    prometheus.Counter
	entries, nbytes prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, site, route string) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	hits, err := prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_static_cache_hits_total",
		Help: "Static GET and HEAD requests answered from the memory cache, by site and route.",
	}, []string{"site", "route"}))
	if err != nil {
		return nil, err
	}
	misses, err := prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "edge_static_cache_misses_total",
		Help: "Static GET and HEAD requests that went to the disk (not cached yet, changed, too large, missing), by site and route.",
	}, []string{"site", "route"}))
	if err != nil {
		return nil, err
	}
	entries, err := prom.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "edge_static_cache_entries",
		Help: "Files in the static memory cache, by site and route.",
	}, []string{"site", "route"}))
	if err != nil {
		return nil, err
	}
	nbytes, err := prom.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "edge_static_cache_bytes",
		Help: "Bytes held by the static memory cache (all variants), by site and route.",
	}, []string{"site", "route"}))
	if err != nil {
		return nil, err
	}
	return &metrics{
		hits:    hits.WithLabelValues(site, route),
		misses:  misses.WithLabelValues(site, route),
		entries: entries.WithLabelValues(site, route),
		nbytes:  nbytes.WithLabelValues(site, route),
	}, nil
}

func (m *metrics) hit(hit bool) {
	switch {
	case m == nil:
	case hit:
		m.hits.Inc()
	default:
		m.misses.Inc()
	}
}

// cacheSize records the cache's size; called with the cache locked.
func (m *metrics) cacheSize(n int, bytes int64) {
	if m != nil {
		m.entries.Set(float64(n))
		m.nbytes.Set(float64(bytes))
	}
}
