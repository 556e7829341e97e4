package hub

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// refuseReason says why an upgrade was refused, so that an operator can
// tell hostile or broken clients (origin, auth, limits) from a hub that
// cannot serve (shutting down, auth backend down). It labels
// edge_hub_connections_refused_total and /hub/stats refused_by.
type refuseReason uint8

const (
	refuseNotWebSocket    refuseReason = iota // not an upgrade (426)
	refuseHandshake                           // a malformed WebSocket handshake
	refuseUnavailable                         // shutting down, route retired or not configured (503)
	refuseOrigin                              // Origin not allowed (403)
	refuseBadRequest                          // invalid channel name, too many channels (400)
	refusePerIP                               // max_connections_per_ip (429)
	refuseAuth                                // token or auth backend said no (401, 403)
	refuseAuthUnavailable                     // the auth backend failed or is unreachable (503)
	refuseChannel                             // a channel the grant or route does not allow (403)
	numRefuseReasons
)

var refuseReasonNames = [numRefuseReasons]string{
	"not_websocket", "bad_handshake", "unavailable", "origin", "bad_request",
	"per_ip_limit", "auth", "auth_unavailable", "channel_forbidden",
}

func (r refuseReason) String() string { return refuseReasonNames[r] }

// dropReason says why frames were discarded: a slow client (its queue
// was full), a write that failed, or a client already gone. It labels
// edge_hub_frames_dropped_total and /hub/stats dropped_by.
type dropReason uint8

const (
	dropQueueFull  dropReason = iota // the client fell queue_size behind (closed with 1013)
	dropWriteError                   // writing to the client failed
	dropClosed                       // queued for a client that closed or went away
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{"queue_full", "write_error", "closed"}

// drop counts k frames discarded for why.
func (s *stats) drop(why dropReason, k int) {
	if k <= 0 {
		return
	}
	s.dropped.Add(uint64(k))
	s.droppedBy[why].Add(uint64(k))
}

// byReason returns the non-zero counts by name.
func byReason(counts []atomic.Uint64, names []string) map[string]uint64 {
	m := map[string]uint64{}
	for i := range counts {
		if v := counts[i].Load(); v > 0 {
			m[names[i]] = v
		}
	}
	return m
}

// reasonCollector exposes counts by reason as one counter with a reason
// label, every reason included (zeros too, so that rate() sees the first
// event).
type reasonCollector struct {
	desc   *prometheus.Desc
	counts []atomic.Uint64
	names  []string
}

func (c reasonCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c reasonCollector) Collect(ch chan<- prometheus.Metric) {
	for i := range c.counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(c.counts[i].Load()), c.names[i])
	}
}
