// Command backend is the upstream of the proxy benchmarks: it answers every
// request with a fixed 1 KiB body, and upgrades /ws to a WebSocket that
// echoes each message back. It is deliberately minimal so that the proxy in
// front of it, not the backend, is what a benchmark measures.
package main

import (
	"bytes"
	"flag"
	"log"
	"net/http"
	"strconv"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:24000", "listen address")
	size := flag.Int("size", 1024, "body size of plain responses")
	flag.Parse()

	body := bytes.Repeat([]byte("x"), *size)
	length := strconv.Itoa(len(body))
	up := websocket.Upgrader{
		// Small buffers: the backend holds as many idle sockets as the
		// proxy under test, and its memory is not what is measured.
		ReadBufferSize:  1024,
		WriteBufferSize: 1024,
		CheckOrigin:     func(*http.Request) bool { return true },
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			t, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(t, msg); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", length)
		w.Write(body)
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Fatal(srv.ListenAndServe())
}
