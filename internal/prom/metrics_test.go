package prom

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestRegisterReusesExisting(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "edge_test_total", Help: "test"}
	first, err := Register(reg, prometheus.NewCounterVec(opts, []string{"l"}))
	if err != nil {
		t.Fatal(err)
	}
	second, err := Register(reg, prometheus.NewCounterVec(opts, []string{"l"}))
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Error("second registration returned a new, unregistered collector")
	}
	if _, err := Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edge_test_total", Help: "other"}, []string{"l"})); err == nil {
		t.Error("a conflicting collector registered without error")
	}
}

func TestCountersCacheChildren(t *testing.T) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edge_test_requests_total", Help: "test"}, []string{"route", "code"})
	calls := 0
	c := NewCounters(vec, func(code int) []string { calls++; return []string{"/", fmt.Sprint(code)} })
	c.Get(200).Inc()
	c.Get(200).Inc()
	c.Get(404).Inc()
	if got := value(vec.WithLabelValues("/", "200")); got != 2 {
		t.Errorf("code 200 counted %v, want 2", got)
	}
	if got := value(vec.WithLabelValues("/", "404")); got != 1 {
		t.Errorf("code 404 counted %v, want 1", got)
	}
	if calls != 2 {
		t.Errorf("label values built %d times for 2 keys, want 2", calls)
	}
}

func value(c prometheus.Counter) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}
