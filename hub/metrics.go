package hub

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// registerMetrics exposes the node's counters. The metrics read the same
// atomics as Stats, so the hot path pays nothing extra for them.
func (n *Node) registerMetrics(reg prometheus.Registerer) error {
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	cs := []prometheus.Collector{
		gauge("edge_hub_connections", "Open hub WebSocket connections.",
			func() float64 { return float64(n.stats.conns.Load()) }),
		gauge("edge_hub_broker_up", "1 when the broker subscription is live (Redis: subscribed and the canary comes back).",
			func() float64 {
				if n.up.Load() {
					return 1
				}
				return 0
			}),
		counter("edge_hub_connections_accepted_total", "Hub connections upgraded.", n.stats.accepted.Load),
		reasonCollector{
			desc: prometheus.NewDesc("edge_hub_connections_refused_total",
				"Hub upgrades refused, by reason (origin, auth, per_ip_limit, ...).", []string{"reason"}, nil),
			counts: n.stats.refusedBy[:], names: refuseReasonNames[:],
		},
		counter("edge_hub_messages_total", "Messages received from the broker and fanned out.", n.stats.published.Load),
		counter("edge_hub_frames_written_total", "Frames written to hub clients.", n.stats.written.Load),
		counter("edge_hub_writes_total", "Write calls to hub clients; frames_written/writes is the coalescing factor.", n.stats.writes.Load),
		counter("edge_hub_frames_written_direct_total", "Frames written by the fan-out without a writer goroutine (its fast path).", n.stats.direct.Load),
		reasonCollector{
			desc: prometheus.NewDesc("edge_hub_frames_dropped_total",
				"Frames discarded, by reason: queue_full (a slow client), write_error, closed.", []string{"reason"}, nil),
			counts: n.stats.droppedBy[:], names: dropReasonNames[:],
		},
		counter("edge_hub_slow_clients_total", "Clients closed with 1013 because their queue was full.", n.stats.slow.Load),
		counter("edge_hub_gaps_total", "Gap notices sent to clients.", n.stats.gaps.Load),
		counter("edge_hub_messages_compressed_total", "Messages compressed for permessage-deflate clients (once per message, not per client).", n.stats.compressed.Load),
		counter("edge_hub_compressed_bytes_saved_total", "Bytes each message compression saved, summed per message (not per delivery).", n.stats.compressedSaved.Load),
		counter("edge_hub_messages_inflated_total", "Compressed messages received from clients and inflated.", n.stats.inflated.Load),
		counter("edge_hub_broker_lost_total", "Losses of the broker subscription.", n.stats.brokerLost.Load),
		counter("edge_hub_tokens_expired_total", "Connections closed with 1008 because their token's exp passed.", n.stats.expired.Load),
		gauge("edge_hub_history_bytes", "Bytes held by the history of every channel (bounded by hub.history.max_bytes).",
			func() float64 { return float64(n.hist.bytes.Load()) }),
		counter("edge_hub_history_evicted_total", "History messages evicted to stay within hub.history.max_bytes.", n.hist.evicted.Load),
	}
	if n.redis != nil {
		cs = append(cs,
			counter("edge_hub_redis_canary_failures_total", "Redis canaries that did not come back.", n.redis.canaryFailures.Load),
			counter("edge_hub_redis_invalid_channel_total", "Redis messages dropped because the channel name is invalid.", n.redis.invalid.Load))
	}
	var errs []error
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
