// Package prom holds what edge's packages share about Prometheus.
package prom

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers c on reg, or returns the collector of the same type
// already registered under the same description. Handlers are rebuilt on
// every reload and several routes share one registry, so a second
// registration is normal and must reuse the live collector.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// Counters caches the children of a CounterVec by a small key, so that a
// request finds its counter without formatting and hashing label values.
// Keys must be few (status codes, servers × codes): entries are never
// removed. Safe for concurrent use.
type Counters[K comparable] struct {
	vec    *prometheus.CounterVec
	labels func(K) []string // the label values of a key
	m      sync.Map         // K -> prometheus.Counter
}

// NewCounters returns a cache over vec; labels gives a key's label values.
func NewCounters[K comparable](vec *prometheus.CounterVec, labels func(K) []string) *Counters[K] {
	return &Counters[K]{vec: vec, labels: labels}
}

// Get returns the counter of key.
func (c *Counters[K]) Get(key K) prometheus.Counter {
	if v, ok := c.m.Load(key); ok {
		return v.(prometheus.Counter)
	}
	v, _ := c.m.LoadOrStore(key, c.vec.WithLabelValues(c.labels(key)...))
	return v.(prometheus.Counter)
}
