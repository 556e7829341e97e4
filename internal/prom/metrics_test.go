package prom

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
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
