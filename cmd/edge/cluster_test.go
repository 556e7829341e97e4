package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/internal/testpeer"
)

// TestClusterNodeKilled: three edge processes on one Redis. A client of
// node 1 sees a message; node 1 is killed with SIGKILL (no cleanup); five
// messages are published through node 3's admin API and `edge publish`;
// the client reconnects to node 2 with since and gets exactly those five,
// in order, with the seqs node 3's clients saw.
func TestClusterNodeKilled(t *testing.T) {
	redis := testpeer.StartRedis(t)
	type node struct {
		p           *edgeProc
		http, admin string
	}
	var nodes []node
	for range 3 {
		n := node{http: freePort(t), admin: freePort(t)}
		n.p = startEdge(t, fmt.Sprintf(`
listen: { http: "%s" }
admin: "%s"
redis: { url: "%s" }
sites: [{ routes: [{ path: /socket/, hub: {} }] }]
`, n.http, n.admin, redis.URL()))
		nodes = append(nodes, n)
	}
	for _, n := range nodes {
		n.p.waitHTTP("http://"+n.admin+"/healthz", 20*time.Second)
		deadline := time.Now().Add(20 * time.Second)
		for {
			if code, _ := httpGet(t, nil, "http://"+n.admin+"/readyz"); code == 200 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("node not ready")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	dial := func(n node, query string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial("ws://"+n.http+"/socket/"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	next := func(c *websocket.Conn) map[string]any {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m map[string]any
		json.Unmarshal(data, &m)
		return m
	}
	publish := func(n node, payload string) {
		resp, err := http.Post("http://"+n.admin+"/publish/room", "application/json", strings.NewReader(payload))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("publish: %d", resp.StatusCode)
		}
	}

	c := dial(nodes[0], "?channel=room")
	welcome := next(c)
	next(c) // subscribed
	watcher := dial(nodes[2], "?channel=room")
	next(watcher)
	next(watcher)
	publish(nodes[1], `"before"`)
	m := next(c)
	next(watcher)
	since := uint64(m["seq"].(float64))

	nodes[0].p.signal(syscall.SIGKILL)
	nodes[0].p.wait(5 * time.Second)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("client still connected to the killed node")
	}

	var want []string
	var seqs []float64
	for i := range 5 {
		p := fmt.Sprintf(`"m%d"`, i)
		if i%2 == 0 {
			publish(nodes[2], p)
		} else if _, stderr, code := runEdge(t, "publish", "-config", nodes[1].p.cfgPath, "room", p); code != 0 {
			t.Fatalf("edge publish: %d %s", code, stderr)
		}
		want = append(want, fmt.Sprintf("m%d", i))
		seqs = append(seqs, next(watcher)["seq"].(float64))
	}

	c2 := dial(nodes[1], "")
	next(c2) // welcome
	c2.WriteJSON(map[string]any{"type": "subscribe", "channel": "room", "since": since, "epoch": welcome["epoch"]})
	if ack := next(c2); ack["type"] != "subscribed" || ack["recovered"] != true {
		t.Fatalf("subscribe with since on node 2: %v, want recovered", ack)
	}
	for i := range 5 {
		m := next(c2)
		if m["data"] != want[i] || m["seq"] != seqs[i] {
			t.Errorf("recovered %v, want %s with seq %.0f", m, want[i], seqs[i])
		}
	}
}
