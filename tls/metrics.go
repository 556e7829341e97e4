package tls

import (
	"edge/internal/prom"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the package's Prometheus metrics. A nil *metrics records
// nothing, so callers need no checks.
type metrics struct {
	reg             prometheus.Registerer
	issuedTotal     *prometheus.CounterVec
	errorsTotal     *prometheus.CounterVec
	handshakeTotal  *prometheus.CounterVec
	reloadsTotal    *prometheus.CounterVec
	expiryCollector *expiryCollector
}

// newMetrics registers the metrics on reg. Counters already registered by
// an earlier Manager (HTTPS turned off and on again by reloads) are
// reused, so they keep counting; the expiry collector reads the new
// Manager and must be unregistered by the old one's Close.
func newMetrics(reg prometheus.Registerer, expiries func() []expiry) (*metrics, error) {
	met := &metrics{
		reg: reg,
		issuedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_certificates_issued_total",
			Help: "Certificates obtained or renewed, by source (acme, local) and kind (obtain, renew).",
		}, []string{"source", "kind"}),
		errorsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_issuance_errors_total",
			Help: "Failed ACME certificate requests, by kind (obtain, renew) and reason (error, rate_limited, on_demand_rate_limited). Retried with backoff.",
		}, []string{"kind", "reason"}),
		handshakeTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_handshake_certificate_failures_total",
			Help: "TLS handshakes refused for want of a certificate, by reason (no_sni, unknown_name, not_ready, on_demand).",
		}, []string{"reason"}),
		reloadsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edge_tls_manual_reloads_total",
			Help: "Manual certificate files re-read after a change, by result (ok, error).",
		}, []string{"result"}),
		expiryCollector: &expiryCollector{expiries: expiries, desc: prometheus.NewDesc(
			"edge_tls_certificate_expiry_timestamp_seconds",
			"Unix time at which the certificate served for a configured name expires, by name and source (acme, local, manual). Alert on this minus time().",
			[]string{"name", "source"}, nil)},
	}
	for _, c := range []**prometheus.CounterVec{&met.issuedTotal, &met.errorsTotal, &met.handshakeTotal, &met.reloadsTotal} {
		var err error
		if *c, err = prom.Register(reg, *c); err != nil {
			return nil, fmt.Errorf("tls metrics: %w", err)
		}
	}
	if err := reg.Register(met.expiryCollector); err != nil {
		return nil, fmt.Errorf("tls metrics: %w", err)
	}
	return met, nil
}

// unregister removes the expiry collector, which reads this Manager.
func (met *metrics) unregister() {
	if met != nil {
		met.reg.Unregister(met.expiryCollector)
	}
}

func kind(renewal bool) string {
	if renewal {
		return "renew"
	}
	return "obtain"
}

func (met *metrics) issued(source string, renewal bool) {
	if met != nil {
		met.issuedTotal.WithLabelValues(source, kind(renewal)).Inc()
	}
}

func (met *metrics) issuanceError(renewal bool, reason string) {
	if met != nil {
		met.errorsTotal.WithLabelValues(kind(renewal), reason).Inc()
	}
}

func (met *metrics) handshakeFailure(reason string) {
	if met != nil {
		met.handshakeTotal.WithLabelValues(reason).Inc()
	}
}

func (met *metrics) manualReload(ok bool) {
	if met == nil {
		return
	}
	result := "ok"
	if !ok {
		result = "error"
	}
	met.reloadsTotal.WithLabelValues(result).Inc()
}

// expiryCollector reports certificate expiry at scrape time, from the
// certificates being served, so names removed by a reload disappear.
type expiryCollector struct {
	expiries func() []expiry
	desc     *prometheus.Desc
}

func (c *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	for _, e := range c.expiries() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(e.notAfter.Unix()), e.name, e.source)
	}
}
