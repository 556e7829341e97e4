package hub

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"edge/internal/wsframe"
)

func TestConnectSubscribeDeliver(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	a := e.connect(t, "orders", "visits")
	b := e.connect(t, "visits")

	seq := e.publish(t, "orders", `{"id":1}`)
	if seq == 0 {
		t.Fatal("in-memory Publish returned seq 0")
	}
	m := expect(t, a, "message")
	if m.str("channel") != "orders" || m.seq() != seq {
		t.Errorf("message = %v, want channel orders seq %d", m, seq)
	}
	if d, _ := m["data"].(map[string]any); d["id"] != 1.0 {
		t.Errorf("data = %v, want the JSON payload verbatim", m["data"])
	}

	e.publish(t, "visits", "not json")
	for _, c := range []*websocket.Conn{a, b} {
		m := expect(t, c, "message")
		if m.str("channel") != "visits" || m.str("data") != "not json" {
			t.Errorf("message = %v, want visits with a JSON string", m)
		}
	}
}

func TestWireFormatExact(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	c := e.connect(t, "orders")
	seq := e.publish(t, "orders", `{"a": [1, 2]}`)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"channel":"orders","seq":` + jsonNum(seq) + `,"data":{"a": [1, 2]}}`
	if string(data) != want {
		t.Errorf("frame = %s, want %s", data, want)
	}
}

func jsonNum(n uint64) string { b, _ := json.Marshal(n); return string(b) }

func TestClientMessages(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ channels: ["pub*", "room:*"], allow_publish: true, max_subscriptions: 3 }`)
	c := e.connect(t)

	send(t, c, map[string]any{"type": "ping", "id": 7})
	if f := expect(t, c, "pong"); f["id"] != 7.0 {
		t.Errorf("pong = %v, want id 7 echoed", f)
	}

	cases := []struct {
		name string
		msg  string
		code string
	}{
		{"invalid JSON", `{"type":`, errInvalidJSON},
		{"not an object", `[1,2]`, errBadRequest},
		{"missing type", `{}`, errBadRequest},
		{"unknown type", `{"type":"dance"}`, errUnknownType},
		{"invalid channel", `{"type":"subscribe","channel":"a b"}`, errInvalidChannel},
		{"empty channel", `{"type":"subscribe","channel":""}`, errInvalidChannel},
		{"forbidden channel", `{"type":"subscribe","channel":"secret"}`, errForbidden},
		{"publish without data", `{"type":"publish","channel":"pub1"}`, errBadRequest},
		{"publish forbidden channel", `{"type":"publish","channel":"secret","data":1}`, errPublishForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.SetWriteDeadline(time.Now().Add(time.Second))
			if err := c.WriteMessage(websocket.TextMessage, []byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			f := expect(t, c, "error")
			if f.str("code") != tc.code {
				t.Errorf("error code = %q, want %q (%v)", f.str("code"), tc.code, f)
			}
		})
	}

	// Still connected and working after all of that.
	send(t, c, map[string]any{"type": "subscribe", "channel": "room:1", "id": "s1"})
	if f := expect(t, c, "subscribed"); f.str("channel") != "room:1" || f["id"] != "s1" {
		t.Errorf("subscribed = %v", f)
	}
	send(t, c, map[string]any{"type": "publish", "channel": "room:1", "data": map[string]int{"x": 1}, "id": 9})
	f1, f2 := read(t, c, 5*time.Second), read(t, c, 5*time.Second)
	if f1.str("type") == "published" {
		f1, f2 = f2, f1
	}
	if f1.str("channel") != "room:1" || f2.str("type") != "published" || f2["id"] != 9.0 {
		t.Errorf("after publish got %v and %v, want the message and a published reply", f1, f2)
	}

	// The subscription limit (3) counts channels, not requests.
	for _, ch := range []string{"room:2", "room:3"} {
		send(t, c, map[string]any{"type": "subscribe", "channel": ch})
		expect(t, c, "subscribed")
	}
	send(t, c, map[string]any{"type": "subscribe", "channel": "room:1"})
	expect(t, c, "subscribed") // already subscribed: confirmed, no error
	send(t, c, map[string]any{"type": "subscribe", "channel": "room:4"})
	if f := expect(t, c, "error"); f.str("code") != errTooManySubs {
		t.Errorf("4th subscription: %v, want %s", f, errTooManySubs)
	}
	send(t, c, map[string]any{"type": "unsubscribe", "channel": "room:1"})
	expect(t, c, "unsubscribed")
	e.publish(t, "room:1", "x")
	e.publish(t, "room:2", "y")
	if f := expect(t, c, "message"); f.str("channel") != "room:2" {
		t.Errorf("after unsubscribe got %v, want only room:2", f)
	}
}

func TestPublishRateLimit(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ allow_publish: true, publish_rate: 2 }`)
	c := e.connect(t)
	for i := range 5 {
		send(t, c, map[string]any{"type": "publish", "channel": "x", "data": i, "id": i})
	}
	limited := 0
	for range 5 {
		f := read(t, c, 5*time.Second)
		if f.str("code") == errRateLimited {
			limited++
		}
	}
	if limited != 3 {
		t.Errorf("%d of 5 publishes rate limited, want 3 (burst 2)", limited)
	}
}

func TestBinaryFrameCloses1003(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	c := e.connect(t)
	c.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
	if code, _ := expectClose(t, c, 5*time.Second); code != wsframe.CloseUnsupported {
		t.Errorf("close code %d, want 1003", code)
	}
	waitFor(t, 5*time.Second, "connection released", func() bool { return e.n.stats.conns.Load() == 0 })
}

func TestOversizedMessageCloses1009(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ max_message_size: 1KiB }`)
	c := e.connect(t)
	big := `{"type":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`
	c.WriteMessage(websocket.TextMessage, []byte(big))
	if code, _ := expectClose(t, c, 5*time.Second); code != wsframe.CloseTooBig {
		t.Errorf("close code %d, want 1009", code)
	}
	waitFor(t, 5*time.Second, "connection released", func() bool { return e.n.stats.conns.Load() == 0 })
}

func TestNotAnUpgrade(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	resp, err := http.Get(e.http + "/socket/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired {
		t.Errorf("plain GET: %d, want 426", resp.StatusCode)
	}
}

// TestRawRoute: a raw route sends bare payloads and no protocol chatter,
// for legacy clients that only listen.
func TestRawRoute(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/raw/", `{ raw: true }`, nil)
	c := dial(t, u+"?channel=legacy", nil)
	// No acknowledgement on a raw route: the subscription may still be
	// under way when the handshake's response arrives.
	waitFor(t, 5*time.Second, "subscribed", func() bool { return e.n.LocalPresence().Channels["legacy"].Subscribers == 1 })
	e.publish(t, "legacy", `{"a":1}`)
	e.publish(t, "legacy", "plain text")
	e.publish(t, "legacy", "\xff\xfe")
	want := []struct {
		typ  int
		data string
	}{{websocket.TextMessage, `{"a":1}`}, {websocket.TextMessage, "plain text"}, {websocket.BinaryMessage, "\xff\xfe"}}
	for _, w := range want {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, data, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if typ != w.typ || string(data) != w.data {
			t.Errorf("got type %d %q, want type %d %q (no welcome, no subscribed)", typ, data, w.typ, w.data)
		}
	}
	// Requests still get their replies.
	send(t, c, map[string]string{"type": "ping"})
	expect(t, c, "pong")
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newEnv(t, NodeOptions{Registerer: reg}, "")
	c := e.connect(t, "m")
	e.publish(t, "m", "1")
	expect(t, c, "message")
	got := map[string]float64{}
	gather := func() bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			m := mf.GetMetric()[0]
			if m.Gauge != nil {
				got[mf.GetName()] = m.Gauge.GetValue()
			} else {
				got[mf.GetName()] = m.Counter.GetValue()
			}
		}
		// The writer counts a frame once its write returned, which may be
		// after the client has read it.
		return got["edge_hub_frames_written_total"] >= 3
	}
	waitFor(t, 5*time.Second, "3 frames counted", gather)
	for name, want := range map[string]float64{
		"edge_hub_connections": 1, "edge_hub_broker_up": 1, "edge_hub_messages_total": 1,
		"edge_hub_connections_accepted_total": 1,
	} {
		if got[name] != want {
			t.Errorf("%s = %v, want %v", name, got[name], want)
		}
	}
	if got["edge_hub_frames_written_total"] < 3 || got["edge_hub_writes_total"] < 1 {
		t.Errorf("written %v writes %v, want welcome+subscribed+message written", got["edge_hub_frames_written_total"], got["edge_hub_writes_total"])
	}
	if _, err := NewNode(NodeOptions{Registerer: reg}); err == nil {
		t.Error("a second node registering the same metrics should fail")
	}
}

// TestRawHeartbeat: page scripts written for hand-made Swoole servers send
// a literal "ping" and expect "pong"; a raw route with raw_heartbeat
// answers them and keeps delivering.
func TestRawHeartbeat(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	u := e.route(t, "/legacy/", `{ raw: true, raw_heartbeat: { ping: "PING?", pong: "PONG!" } }`, nil)
	c := dial(t, u+"?channel=legacy", nil)
	waitFor(t, 5*time.Second, "subscribed", func() bool { return e.n.LocalPresence().Channels["legacy"].Subscribers == 1 })
	for i := range 4 {
		if err := c.WriteMessage(websocket.TextMessage, []byte("PING?")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, data, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("ping %d: %v", i, err)
		}
		if typ != websocket.TextMessage || string(data) != "PONG!" {
			t.Fatalf("ping %d: got %d %q, want the text PONG!", i, typ, data)
		}
	}
	e.publish(t, "legacy", "still here")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, data, err := c.ReadMessage(); err != nil || string(data) != "still here" {
		t.Fatalf("delivery after the heartbeats: %q %v", data, err)
	}
	// Anything else is still the protocol: "ping" in other letters is not
	// the heartbeat.
	c.WriteMessage(websocket.TextMessage, []byte("ping?"))
	expect(t, c, "error")
}
