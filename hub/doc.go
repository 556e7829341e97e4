// Package hub is edge's embedded WebSocket broadcast hub (protocol v1,
// PROTOCOL.md).
//
// A Node is the hub of one edge process. Publishers reach it through a
// Broker — in memory on a single node, over Redis (one PSUBSCRIBE per
// node) across nodes — and it fans every message out to the subscribers of
// its channel on every hub route of the process. Clients are authorised
// (origin, none/jwt/request auth, channel patterns) before the upgrade;
// refusals are real 401/403 answers.
//
// Fan-out encodes a message once into a complete WebSocket frame (server
// frames are unmasked, so the same bytes serve every connection) and
// appends it to each subscriber's bounded queue without ever waiting. A
// few flushing goroutines then write those frames with non-blocking writes
// (flush.go); a connection gets a writer goroutine of its own only while
// its socket is full or frames pile up, and that writer gathers everything
// queued into as few write(2) calls as possible. A client whose queue
// overflows is closed with 1013 and counted. Client frames are read by the
// hub itself (reader.go, gorilla/websocket only does the handshake), by a
// reader goroutine that parks on a minimal stack and holds no buffer while
// the client is silent.
//
// Each channel keeps a bounded history so that a client reconnecting with
// "since" gets what it missed, or a "gap" notice when that is impossible —
// including after a broker outage, which a Redis canary detects even when
// the subscription dies silently. Without Redis the history and the
// sequence numbers are the node's own. With Redis they are the cluster's
// (history_redis.go): Redis numbers each message, keeps it in a Stream per
// channel and publishes it with its seq in one Function call, so every
// node delivers the same seq without a round trip per message, a client
// recovers on any node, and after an outage each node replays from Redis
// what its subscribers missed. The node's own history is then a cache that
// spares Redis the common reconnect.
//
// Lifecycle: NewNode starts nothing; Route returns the http.Handler of a
// hub route (and on reload stages its new configuration); Retire, at the
// reload's commit point, applies staged configurations in place and closes
// the clients of routes no longer configured; Run runs the broker
// subscription and periodic work until its context ends; Close disconnects
// every client with 1001.
package hub
