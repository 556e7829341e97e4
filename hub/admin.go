package hub

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"edge/config"
)

// maxPublishBody bounds a payload posted to the publish API.
const maxPublishBody = 1 << 20

// AdminHandler serves the hub's admin API, for the admin listener:
//
//	POST /publish/{channel}  body = payload → 202 {"channel":…,"seq":…}
//	GET  /hub/stats          → 200 JSON (Stats)
//	POST /hub/disconnect     body = Control JSON without op → 202
//	POST /hub/unsubscribe    body = Control JSON without op → 202
//	GET  /hub/connections?sub=USER → 200 {"connections": [ConnInfo…]}
//
// It checks no credentials: the admin listener guards everything it
// serves in one place (Host, cross-site requests and the admin key, in
// cmd/edge), so that no endpoint can be forgotten. Mount it for the
// prefixes "/publish/" and "/hub/" behind that guard only.
func (n *Node) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /publish/{channel}", func(w http.ResponseWriter, r *http.Request) {
		channel := r.PathValue("channel")
		if !config.ValidChannel(channel) {
			adminError(w, http.StatusBadRequest, "invalid channel name")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPublishBody))
		if err != nil {
			var mb *http.MaxBytesError
			if errors.As(err, &mb) {
				adminError(w, http.StatusRequestEntityTooLarge, "payload too large")
				return
			}
			adminError(w, http.StatusBadRequest, "cannot read body")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), publishTimeout)
		defer cancel()
		seq, err := n.Publish(ctx, channel, body)
		if err != nil {
			n.log.Warn("hub publish failed", "channel", channel, "err", err)
			adminError(w, http.StatusServiceUnavailable, "publish failed: broker unavailable")
			return
		}
		res := struct {
			Channel string `json:"channel"`
			Seq     uint64 `json:"seq,omitempty"`
		}{channel, seq}
		writeJSON(w, http.StatusAccepted, res)
	})
	mux.HandleFunc("GET /hub/stats", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		writeJSON(w, http.StatusOK, n.Stats(ctx))
	})
	for _, op := range []string{"disconnect", "unsubscribe"} {
		mux.HandleFunc("POST /hub/"+op, func(w http.ResponseWriter, r *http.Request) {
			n.controlAPI(w, r, op)
		})
	}
	mux.HandleFunc("GET /hub/connections", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		list, err := n.Connections(ctx, r.URL.Query().Get("sub"))
		res := struct {
			Connections []ConnInfo `json:"connections"`
			// Partial says other nodes could not be read (Redis).
			Partial string `json:"partial,omitempty"`
		}{Connections: list}
		if err != nil {
			res.Partial = err.Error()
		}
		writeJSON(w, http.StatusOK, res)
	})
	return mux
}

// maxControlBody bounds a control order's JSON.
const maxControlBody = 4 << 10

// controlAPI serves POST /hub/disconnect and /hub/unsubscribe: the body is
// a Control without op.
func (n *Node) controlAPI(w http.ResponseWriter, r *http.Request, op string) {
	var o Control
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxControlBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&o); err != nil {
		adminError(w, http.StatusBadRequest, "body must be a JSON object: "+err.Error())
		return
	}
	if o.Op != "" && o.Op != op {
		adminError(w, http.StatusBadRequest, `"op" does not match the endpoint`)
		return
	}
	o.Op = op
	if err := o.check(); err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), publishTimeout)
	defer cancel()
	if err := n.Control(ctx, o); err != nil {
		n.log.Warn("hub control order not sent", "op", op, "err", err)
		adminError(w, http.StatusServiceUnavailable, "control order failed: broker unavailable")
		return
	}
	writeJSON(w, http.StatusAccepted, o)
}

func adminError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Stats is the hub's state, as GET /hub/stats returns it.
type Stats struct {
	Node    string `json:"node"`
	Epoch   string `json:"epoch"`
	Broker  string `json:"broker"` // "memory" or "redis"
	Healthy bool   `json:"healthy"`
	// Health is the reason when not healthy.
	Health string `json:"health,omitempty"`
	// Connections is the number of open connections on this node.
	Connections int64 `json:"connections"`
	// Accepted counts upgraded connections; Refused counts refused ones.
	Accepted uint64 `json:"accepted"`
	Refused  uint64 `json:"refused"`
	// RefusedBy splits Refused by reason ("origin", "auth",
	// "per_ip_limit", ...); reasons that never happened are left out.
	RefusedBy map[string]uint64 `json:"refused_by"`
	// TokensExpired counts connections closed with 1008 "token expired".
	TokensExpired uint64 `json:"tokens_expired"`
	// HistoryBytes is what every channel's history holds together;
	// HistoryEvicted counts messages evicted to stay within
	// history.max_bytes.
	HistoryBytes   int64  `json:"history_bytes"`
	HistoryEvicted uint64 `json:"history_evicted"`
	// Published counts messages this node received from the broker.
	Published uint64 `json:"published"`
	// Written counts frames written to clients (messages, replies, pings);
	// Writes counts the write calls that carried them, so Written/Writes
	// is the average number of frames coalesced into one write.
	Written uint64 `json:"written"`
	Writes  uint64 `json:"writes"`
	// WrittenDirect counts frames a flushing goroutine wrote without
	// starting a writer goroutine (the fan-out's fast path, ws and wss).
	WrittenDirect uint64 `json:"written_direct"`
	// Dropped counts frames discarded because a client was slow or gone.
	Dropped uint64 `json:"dropped"`
	// DroppedBy splits Dropped by reason: "queue_full" (slow clients),
	// "write_error", "closed" (queued for a client that went away).
	DroppedBy map[string]uint64 `json:"dropped_by"`
	// SlowClients counts clients closed with 1013 because their queue was
	// full.
	SlowClients uint64 `json:"slow_clients"`
	// Gaps counts gap notices sent.
	Gaps uint64 `json:"gaps"`
	// Compressed counts messages compressed for clients that negotiated
	// permessage-deflate: once per message (and per kind of frame, JSON
	// or raw), however many clients get it. CompressedBytesSaved sums
	// what each compression saved (per message, not per delivery).
	// Inflated counts compressed messages received from clients.
	Compressed           uint64 `json:"compressed"`
	CompressedBytesSaved uint64 `json:"compressed_bytes_saved"`
	Inflated             uint64 `json:"inflated"`
	// BrokerLost counts losses of the broker subscription; Reconnects and
	// CanaryFailures are the Redis broker's.
	BrokerLost     uint64 `json:"broker_lost"`
	Reconnects     uint64 `json:"broker_reconnects"`
	CanaryFailures uint64 `json:"canary_failures"`
	// Local is this node's presence; Cluster sums every node's (Redis
	// only; absent when Redis could not be read).
	Local   Presence  `json:"local"`
	Cluster *Presence `json:"cluster,omitempty"`
}

// Stats returns the hub's counters and presence.
func (n *Node) Stats(ctx context.Context) Stats {
	s := Stats{
		Node:           n.id,
		Epoch:          n.Epoch(),
		Broker:         "memory",
		Connections:    n.stats.conns.Load(),
		Accepted:       n.stats.accepted.Load(),
		Refused:        n.stats.refused.Load(),
		RefusedBy:      byReason(n.stats.refusedBy[:], refuseReasonNames[:]),
		TokensExpired:  n.stats.expired.Load(),
		HistoryBytes:   n.hist.bytes.Load(),
		HistoryEvicted: n.hist.evicted.Load(),
		Published:      n.stats.published.Load(),
		Written:        n.stats.written.Load(),
		Writes:         n.stats.writes.Load(),
		WrittenDirect:  n.stats.direct.Load(),
		Dropped:        n.stats.dropped.Load(),
		DroppedBy:      byReason(n.stats.droppedBy[:], dropReasonNames[:]),
		SlowClients:    n.stats.slow.Load(),
		Gaps:           n.stats.gaps.Load(),
		Compressed:     n.stats.compressed.Load(),
		Inflated:       n.stats.inflated.Load(),
		BrokerLost:     n.stats.brokerLost.Load(),
		Local:          n.LocalPresence(),
	}
	s.CompressedBytesSaved = n.stats.compressedSaved.Load()
	if err := n.Healthy(); err != nil {
		s.Health = err.Error()
	} else {
		s.Healthy = true
	}
	if n.redis != nil {
		s.Broker = "redis"
		s.Reconnects = n.redis.reconnects.Load()
		s.CanaryFailures = n.redis.canaryFailures.Load()
		if p, err := n.Presence(ctx); err == nil {
			s.Cluster = &p
		}
	}
	return s
}
