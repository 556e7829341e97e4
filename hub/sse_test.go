package hub

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id, event, data string
}

// sseStream is an open SSE response read event by event.
type sseStream struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
}

// openSSE GETs url with headers and fails unless it answers 200 with an
// event stream.
func openSSE(t *testing.T, url string, h http.Header) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &sseStream{t: t, resp: resp, events: make(chan sseEvent, 100), cancel: cancel}
	go s.read()
	t.Cleanup(s.close)
	return s
}

func (s *sseStream) close() {
	s.cancel()
	s.resp.Body.Close()
}

// read parses the stream into events (the SSE format of the HTML
// standard: field lines, a blank line ends an event, data lines joined).
func (s *sseStream) read() {
	defer close(s.events)
	sc := bufio.NewScanner(s.resp.Body)
	var ev sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data != nil {
				ev.data = strings.Join(data, "\n")
				s.events <- ev
			}
			ev, data = sseEvent{}, nil
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id = value
		case "event":
			ev.event = value
		case "data":
			data = append(data, value)
		}
	}
}

// next returns the next event that is not a ping.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatal("stream ended")
			}
			if ev.event != "ping" {
				return ev
			}
		case <-time.After(5 * time.Second):
			s.t.Fatal("no event within 5s")
		}
	}
}

// expectType reads the next event and checks its message type ("message"
// for data messages).
func (s *sseStream) expectType(typ string) (sseEvent, frame) {
	s.t.Helper()
	ev := s.next()
	var f frame
	if err := json.Unmarshal([]byte(ev.data), &f); err != nil {
		s.t.Fatalf("event data %q is not JSON", ev.data)
	}
	got := f.str("type")
	if got == "" {
		got = "message"
	}
	if got != typ || ev.event != "" {
		s.t.Fatalf("got event %+v, want a %q message", ev, typ)
	}
	return ev, f
}

// TestSSEStream: the SSE transport delivers the WebSocket protocol's
// messages as events, data messages with id channel:seq@epoch; the client
// counts as a connection and a subscriber; when it goes away it is gone.
func TestSSEStream(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	s := openSSE(t, e.http+"/socket/sse?channel=news&channel=room", nil)
	if _, f := s.expectType("welcome"); f.str("epoch") != e.n.Epoch() {
		t.Errorf("welcome %v", f)
	}
	s.expectType("subscribed")
	s.expectType("subscribed")
	if p := e.n.LocalPresence(); p.Connections != 1 || p.Channels["news"].Subscribers != 1 {
		t.Errorf("presence %+v, want the SSE client counted", p)
	}
	seq := e.publish(t, "news", "{\n  \"headline\": \"multi-line JSON\"\n}")
	ev, f := s.expectType("message")
	if want := fmt.Sprintf("news:%d@%s", seq, e.n.Epoch()); ev.id != want {
		t.Errorf("id %q, want %q", ev.id, want)
	}
	if fmt.Sprint(f["data"]) != "map[headline:multi-line JSON]" || f.seq() != seq {
		t.Errorf("data message %v", f)
	}
	s.close()
	waitFor(t, 5*time.Second, "SSE client gone", func() bool { return e.n.stats.conns.Load() == 0 })
}

// TestSSEResume: a reconnecting EventSource's Last-Event-ID replays what
// it missed on every channel of the stream, each channel in order; one from another
// epoch gets a gap; a malformed one is a 400.
func TestSSEResume(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	s := openSSE(t, e.http+"/socket/sse?channel=a&channel=b", nil)
	s.expectType("welcome")
	s.expectType("subscribed")
	s.expectType("subscribed")
	e.publish(t, "a", `"a1"`)
	ev, _ := s.expectType("message")
	s.close()
	e.publish(t, "b", `"b1"`)
	e.publish(t, "a", `"a2"`)

	s2 := openSSE(t, e.http+"/socket/sse?channel=a&channel=b", http.Header{"Last-Event-ID": {ev.id}})
	s2.expectType("welcome")
	var got []string
	for len(got) < 2 {
		ev, f := s2.next(), frame{}
		json.Unmarshal([]byte(ev.data), &f)
		if f.str("type") == "" {
			got = append(got, fmt.Sprint(f["data"]))
		}
	}
	// Each channel replays in order, one channel after the other.
	if fmt.Sprint(got) != "[a2 b1]" {
		t.Errorf("replayed %v, want [a2 b1]", got)
	}

	s3 := openSSE(t, e.http+"/socket/sse?channel=a&last_event_id=a:1@otherepoch", nil)
	s3.expectType("welcome")
	s3.expectType("subscribed")
	if _, f := s3.expectType("gap"); f.str("reason") != "epoch" {
		t.Errorf("gap %v, want reason epoch", f)
	}
	if status, body := getStatus(t, e.http+"/socket/sse?channel=a&last_event_id=nonsense"); status != 400 || !strings.Contains(body, "Last-Event-ID") {
		t.Errorf("bad Last-Event-ID: %d %q", status, body)
	}
}

// TestSSEChecks: the SSE transport is admitted like a WebSocket: too many
// channels is 400, a missing token 401, a raw route 400, the per-IP cap
// counts SSE clients; and the admin API's disconnect reaches them.
func TestSSEChecks(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ max_subscriptions: 2, max_connections_per_ip: 1 }`)
	if status, body := getStatus(t, e.http+"/socket/sse?channel=a&channel=b&channel=c"); status != 400 || !strings.Contains(body, "too many channels") {
		t.Errorf("too many channels: %d %q", status, body)
	}
	u, secret := jwtRoute(t, e, "")
	httpU := "http" + strings.TrimPrefix(u, "ws")
	if status, _ := getStatus(t, httpU+"sse?channel=a"); status != 401 {
		t.Errorf("no token: %d, want 401", status)
	}
	raw := "http" + strings.TrimPrefix(e.route(t, "/raw/", `{ raw: true }`, nil), "ws")
	if status, _ := getStatus(t, raw+"sse?channel=a"); status != 400 {
		t.Errorf("raw route: %d, want 400", status)
	}

	tok := sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "sam"})
	s := openSSE(t, httpU+"sse?channel=a&token="+tok, nil)
	s.expectType("welcome")
	s.expectType("subscribed")
	s1 := openSSE(t, e.http+"/socket/sse?channel=a", nil)
	s1.expectType("welcome")
	if status, _ := getStatus(t, e.http+"/socket/sse?channel=a"); status != 429 {
		t.Errorf("second SSE stream from one address: %d, want 429", status)
	}
	e.adminPost(t, "/hub/disconnect", `{"sub":"sam","reason":"bye","reconnect":false}`)
	if _, f := s.expectType("disconnect"); f.str("reason") != "bye" || f["reconnect"] != false {
		t.Errorf("disconnect %v", f)
	}
	if ev := s.next(); ev.event != "close" || ev.data != `{"code":4000,"reason":"bye"}` {
		t.Errorf("close event %+v", ev)
	}
	select {
	case _, ok := <-s.events:
		if ok {
			t.Error("stream goes on after close")
		}
	case <-time.After(5 * time.Second):
		t.Error("stream not ended after close")
	}
}

// TestSSEPublish: POST <route>publish publishes like a connection's
// publish message, with its permissions and rate.
func TestSSEPublish(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ allow_publish: true, publish_rate: 2 }`)
	watcher := e.connect(t, "chat")
	post := func(body string) (int, frame) {
		resp, err := http.Post(e.http+"/socket/publish", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var f frame
		json.NewDecoder(resp.Body).Decode(&f)
		return resp.StatusCode, f
	}
	if status, f := post(`{"channel":"chat","data":{"hi":1},"id":7}`); status != 200 || f.str("type") != "published" || f["id"] != float64(7) {
		t.Errorf("publish: %d %v", status, f)
	}
	if f := expect(t, watcher, "message"); fmt.Sprint(f["data"]) != "map[hi:1]" {
		t.Errorf("watcher got %v", f)
	}
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`not json`, 400, errInvalidJSON},
		{`{"channel":"a b","data":1}`, 400, errInvalidChannel},
		{`{"channel":"chat"}`, 400, errBadRequest},
		{`{"channel":"chat","data":"` + strings.Repeat("x", 70<<10) + `"}`, 413, errBadRequest},
		{`{"channel":"chat","data":"` + strings.Repeat("x", 1<<20) + `"}`, 413, errBadRequest},
		{`{"channel":"chat","data":2}`, 200, ""},
		{`{"channel":"chat","data":3}`, 429, errRateLimited},
	} {
		if status, f := post(tc.body); status != tc.status || f.str("code") != tc.code {
			t.Errorf("%s: %d %v, want %d %s", tc.body, status, f, tc.status, tc.code)
		}
	}
	closed := "http" + strings.TrimPrefix(e.route(t, "/ro/", "{}", nil), "ws")
	resp, err := http.Post(closed+"publish", "application/json", strings.NewReader(`{"channel":"chat","data":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Errorf("publish on a route without allow_publish: %d, want 403", resp.StatusCode)
	}
}

// getStatus GETs url and returns the status and the body's first line.
func getStatus(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	line, _, _ := strings.Cut(string(b), "\n")
	return resp.StatusCode, line
}

// TestSSESlowClientDropped: an SSE client that stops reading is dropped
// as slow once its queue is full, and the others (and the publisher) are
// not held up: the same rule as for WebSockets.
func TestSSESlowClientDropped(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ queue_size: 48 }`)
	fast := e.connect(t, "feed")
	host := strings.TrimPrefix(e.http, "http://")
	slow, err := smallBufferDialer.NetDial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "GET /socket/sse?channel=feed HTTP/1.1\r\nHost: %s\r\n\r\n", host)
	waitFor(t, 5*time.Second, "SSE subscriber", func() bool { return e.n.LocalPresence().Channels["feed"].Subscribers == 2 })

	const n = 300
	payload := `"` + strings.Repeat("x", 32<<10) + `"`
	got := make(chan int, 1)
	go func() {
		count := 0
		for count < n {
			fast.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := fast.ReadMessage()
			if err != nil {
				break
			}
			if strings.HasPrefix(string(data), `{"channel"`) {
				count++
			}
		}
		got <- count
	}()
	start := time.Now()
	for range n {
		e.publish(t, "feed", payload)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("publishing %d messages took %s: the hub waited on the SSE client", n, d)
	}
	if c := <-got; c != n {
		t.Fatalf("fast client got %d of %d messages", c, n)
	}
	waitFor(t, 10*time.Second, "slow SSE client dropped", func() bool {
		return e.n.stats.slow.Load() == 1 && e.n.stats.conns.Load() == 1
	})
}
