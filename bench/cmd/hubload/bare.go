package main

// The bare anchor: the least a Redis-to-WebSocket fan-out can do. One
// goroutine reads the Redis pattern subscription (as edge's hub does) and,
// for each message, builds one websocket.PreparedMessage and writes it to
// every connection in turn: one write(2) per delivery, no queues, no
// coalescing, no per-connection goroutine (a connection is only its socket;
// it is never read, so a peer's close is noticed when a write fails). This
// is the "bare one-write-per-delivery loop" of DESIGN.md's targets.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

type bareServer struct {
	up atomic.Bool

	mu    sync.Mutex
	conns []*websocket.Conn // guarded by mu

	messages, writes, failed atomic.Uint64
}

func runBare(args []string) error {
	fs := flag.NewFlagSet("bare", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:21801", "listen address (WebSocket on every path but /healthz, /stats, /metrics)")
	redisAddr := fs.String("redis", "127.0.0.1:6379", "Redis address")
	pattern := fs.String("pattern", "edge:*", "Redis pattern to PSUBSCRIBE")
	fs.Parse(args)
	raiseNofile()

	s := &bareServer{}
	up := websocket.Upgrader{
		ReadBufferSize:  256,          // never read after the handshake
		WriteBufferPool: &sync.Pool{}, // prepared frames are written directly
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.Handler())
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if !s.up.Load() {
			http.Error(w, "redis subscription not up", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		n := len(s.conns)
		s.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]uint64{
			"connections": uint64(n), "messages": s.messages.Load(),
			"writes": s.writes.Load(), "failed": s.failed.Load(),
		})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		// The confirmation goes before the registration (after it, the
		// fan-out loop may write concurrently, which gorilla forbids): a
		// message published in between is missed, but the load publishes
		// only once every connection is confirmed.
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribed"}`)); err != nil {
			c.Close()
			return
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
	})

	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})
	go s.fanout(context.Background(), rdb, *pattern)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return srv.ListenAndServe()
}

// fanout writes every message of the subscription to every connection,
// resubscribing if Redis goes away.
func (s *bareServer) fanout(ctx context.Context, rdb *redis.Client, pattern string) {
	for {
		ps := rdb.PSubscribe(ctx, pattern)
		if _, err := ps.Receive(ctx); err == nil {
			s.up.Store(true)
			for {
				msg, err := ps.Receive(ctx)
				if err != nil {
					break
				}
				if m, ok := msg.(*redis.Message); ok {
					s.broadcast([]byte(m.Payload))
				}
			}
		}
		s.up.Store(false)
		ps.Close()
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *bareServer) broadcast(payload []byte) {
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, payload)
	if err != nil {
		return
	}
	s.messages.Add(1)
	s.mu.Lock()
	conns := s.conns // appends never touch the elements seen here
	s.mu.Unlock()
	var dead map[*websocket.Conn]bool
	for _, c := range conns {
		if err := c.WritePreparedMessage(pm); err != nil {
			if dead == nil {
				dead = map[*websocket.Conn]bool{}
			}
			dead[c] = true
			c.Close()
		}
	}
	s.writes.Add(uint64(len(conns) - len(dead)))
	if len(dead) == 0 {
		return
	}
	s.failed.Add(uint64(len(dead)))
	s.mu.Lock()
	kept := s.conns[:0:0]
	for _, c := range s.conns {
		if !dead[c] {
			kept = append(kept, c)
		}
	}
	s.conns = kept
	s.mu.Unlock()
}
