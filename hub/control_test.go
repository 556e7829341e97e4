package hub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"edge/internal/testpeer"
	"edge/internal/wsframe"
)

// adminPost posts body to the env's admin API and returns the status and
// the decoded answer.
func (e *env) adminPost(t *testing.T, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(e.http+path, "application/json", bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

// userConn connects as sub to the jwt route u with channels.
func userConn(t *testing.T, u string, secret []byte, sub string, channels ...string) *websocket.Conn {
	t.Helper()
	q := "?token=" + sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": sub})
	for _, ch := range channels {
		q += "&channel=" + ch
	}
	c := dial(t, u+q, nil)
	expect(t, c, "welcome")
	for range channels {
		expect(t, c, "subscribed")
	}
	return c
}

func jwtRoute(t *testing.T, e *env, extra string) (string, []byte) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	return e.route(t, "/u/", fmt.Sprintf(`{ %s auth: { mode: jwt, secret_file: %q } }`, extra, writeFile(t, "s", secret)), nil), secret
}

// TestDisconnectBySub: the admin API disconnects every connection of one
// user, with the code and reason given and a disconnect message first
// that tells client.js whether to reconnect; other users stay.
func TestDisconnectBySub(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	u, secret := jwtRoute(t, e, "")
	a1 := userConn(t, u, secret, "alice", "room")
	a2 := userConn(t, u, secret, "alice")
	bob := userConn(t, u, secret, "bob", "room")

	status, res := e.adminPost(t, "/hub/disconnect", `{"sub":"alice","code":4403,"reason":"banned","reconnect":false}`)
	if status != http.StatusAccepted || res["op"] != "disconnect" {
		t.Fatalf("disconnect: %d %v", status, res)
	}
	for _, c := range []*websocket.Conn{a1, a2} {
		f := expect(t, c, "disconnect")
		if f["code"] != float64(4403) || f.str("reason") != "banned" || f["reconnect"] != false {
			t.Errorf("disconnect message %v", f)
		}
		if code, reason := expectClose(t, c, 5*time.Second); code != 4403 || reason != "banned" {
			t.Errorf("close %d %q, want 4403 banned", code, reason)
		}
	}
	e.publish(t, "room", `"still here"`)
	if f := expect(t, bob, "message"); f["data"] != "still here" {
		t.Errorf("bob got %v", f)
	}
}

// TestDisconnectByChannelAndConn: a channel selects its subscribers, and
// a connection id from GET /hub/connections selects exactly that one.
func TestDisconnectByChannelAndConn(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	u, secret := jwtRoute(t, e, "")
	inRoom := userConn(t, u, secret, "carol", "room")
	other := userConn(t, u, secret, "carol", "lobby")
	e.adminPost(t, "/hub/disconnect", `{"channel":"room"}`)
	if f := expect(t, inRoom, "disconnect"); f["code"] != float64(DisconnectCode) || f["reconnect"] != true {
		t.Errorf("default disconnect message %v", f)
	}
	if code, _ := expectClose(t, inRoom, 5*time.Second); code != DisconnectCode {
		t.Errorf("close code %d, want %d", code, DisconnectCode)
	}

	waitFor(t, 5*time.Second, "one connection left", func() bool { return len(e.n.LocalConnections("carol")) == 1 })
	resp, err := http.Get(e.http + "/hub/connections?sub=carol")
	if err != nil {
		t.Fatal(err)
	}
	var list struct{ Connections []ConnInfo }
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Connections) != 1 || fmt.Sprint(list.Connections[0].Channels) != "[lobby]" || list.Connections[0].Route != "/u/" {
		t.Fatalf("connections of carol: %+v", list.Connections)
	}
	extra := userConn(t, u, secret, "carol", "lobby")
	e.adminPost(t, "/hub/disconnect", fmt.Sprintf(`{"conn":%q}`, list.Connections[0].ID))
	expect(t, other, "disconnect")
	expectClose(t, other, 5*time.Second)
	send(t, extra, map[string]any{"type": "ping"})
	expect(t, extra, "pong") // the other connection of the same user stays
}

// TestServerUnsubscribe: the admin API takes a user out of a channel; the
// client is told and receives nothing more from it, and may not be
// confused into thinking it is still subscribed.
func TestServerUnsubscribe(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	u, secret := jwtRoute(t, e, "")
	dave := userConn(t, u, secret, "dave", "room", "lobby")
	if status, res := e.adminPost(t, "/hub/unsubscribe", `{"sub":"dave","channel":"room"}`); status != http.StatusAccepted {
		t.Fatalf("unsubscribe: %d %v", status, res)
	}
	if f := expect(t, dave, "unsubscribed"); f.str("channel") != "room" || f.str("reason") != "server" {
		t.Errorf("unsubscribed message %v", f)
	}
	e.publish(t, "room", `"gone"`)
	e.publish(t, "lobby", `"here"`)
	if f := expect(t, dave, "message"); f.str("channel") != "lobby" {
		t.Errorf("got %v, want only the lobby message", f)
	}
	// Subscribing again is a fresh subscription.
	send(t, dave, map[string]any{"type": "subscribe", "channel": "room"})
	expect(t, dave, "subscribed")
	e.publish(t, "room", `"back"`)
	if f := expect(t, dave, "message"); f["data"] != "back" {
		t.Errorf("got %v", f)
	}
}

// TestControlBadInput: orders that select nothing, bad codes, unknown
// keys and junk are refused with 400 and change nothing.
func TestControlBadInput(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	c := e.connect(t, "room")
	for _, tc := range []struct{ path, body string }{
		{"/hub/disconnect", `{}`},
		{"/hub/disconnect", `{"all":true,"code":1000}`},
		{"/hub/disconnect", `{"all":true,"code":5000}`},
		{"/hub/disconnect", `{"all":true,"sub":"x"}`},
		{"/hub/disconnect", `{"all":true,"reason":"` + string(bytes.Repeat([]byte("x"), 200)) + `"}`},
		{"/hub/disconnect", `{"all":true,"typo":1}`},
		{"/hub/disconnect", `{"op":"unsubscribe","all":true}`},
		{"/hub/disconnect", `not json`},
		{"/hub/disconnect", `{"channel":"a b"}`},
		{"/hub/unsubscribe", `{"all":true}`},
		{"/hub/unsubscribe", `{"channel":"room"}`},
		{"/hub/unsubscribe", `{"channel":"room","all":true,"code":4000}`},
	} {
		if status, res := e.adminPost(t, tc.path, tc.body); status != http.StatusBadRequest || res["error"] == "" {
			t.Errorf("%s %s: %d %v, want 400 with an error", tc.path, tc.body, status, res)
		}
	}
	send(t, c, map[string]any{"type": "ping"})
	expect(t, c, "pong")
	// A client cannot publish control orders: the channel name is not
	// one a client may use.
	send(t, c, map[string]any{"type": "publish", "channel": controlChannel, "data": map[string]any{"op": "disconnect", "all": true}})
	if f := expect(t, c, "error"); f.str("code") != errInvalidChannel {
		t.Errorf("publishing to the control channel: %v", f)
	}
}

// TestDisconnectAcrossNodes: an order given to one node reaches the
// user's connections on another node through Redis, and the connection
// list covers both nodes.
func TestDisconnectAcrossNodes(t *testing.T) {
	s := testpeer.StartRedis(t)
	secret := []byte("0123456789abcdef0123456789abcdef")
	hubYAML := fmt.Sprintf(`{ auth: { mode: jwt, secret_file: %q } }`, writeFile(t, "s", secret))
	e1 := newEnv(t, redisNode(s, "n1"), hubYAML)
	e2 := newEnv(t, redisNode(s, "n2"), hubYAML)
	on1 := userConn(t, e1.ws, secret, "erin", "room")
	on2 := userConn(t, e2.ws, secret, "erin", "room")
	keep := userConn(t, e2.ws, secret, "frank", "room")

	waitFor(t, 10*time.Second, "erin's connections on both nodes", func() bool {
		list, err := e1.n.Connections(t.Context(), "erin")
		return err == nil && len(list) == 2 && list[0].Node != list[1].Node
	})
	if status, _ := e1.adminPost(t, "/hub/disconnect", `{"sub":"erin","reconnect":false}`); status != http.StatusAccepted {
		t.Fatalf("disconnect: %d", status)
	}
	for _, c := range []*websocket.Conn{on1, on2} {
		if f := expect(t, c, "disconnect"); f["reconnect"] != false {
			t.Errorf("disconnect message %v", f)
		}
		expectClose(t, c, 5*time.Second)
	}
	send(t, keep, map[string]any{"type": "ping"})
	expect(t, keep, "pong")
}

// TestTokenRefresh: a refreshed token keeps the connection open past the
// first token's exp; a refresh for another sub closes with 1008; a bad
// token is an error and the connection keeps its old token; a token with
// fewer channels ends the subscriptions it no longer allows.
func TestTokenRefresh(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	u, secret := jwtRoute(t, e, "")
	tok := func(claims jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, secret, claims) }
	soon := time.Now().Add(time.Second).Unix()
	later := time.Now().Add(time.Hour).Unix()

	c := dial(t, u+"?channel=room&channel=news&token="+tok(jwt.MapClaims{"sub": "gina", "exp": soon}), nil)
	expect(t, c, "welcome")
	expect(t, c, "subscribed")
	expect(t, c, "subscribed")
	send(t, c, map[string]any{"type": "refresh", "token": "garbage", "id": 1})
	if f := expect(t, c, "error"); f.str("code") != errRefreshFailed || f.str("message") != "invalid token" {
		t.Errorf("bad refresh: %v", f)
	}
	send(t, c, map[string]any{"type": "refresh", "id": 2,
		"token": tok(jwt.MapClaims{"sub": "gina", "exp": later, "channels": []string{"news"}})})
	if f := expect(t, c, "unsubscribed"); f.str("channel") != "room" || f.str("reason") != "forbidden" {
		t.Errorf("got %v, want room unsubscribed as forbidden", f)
	}
	if f := expect(t, c, "refreshed"); f["exp"] != float64(later) || f["id"] != float64(2) {
		t.Errorf("refreshed: %v", f)
	}
	// Past the first token's exp (and the 5 s leeway is not what keeps
	// it: the hub closes at exp, see TestTokenExpiryClosesConnection).
	time.Sleep(time.Until(time.Unix(soon, 0)) + 500*time.Millisecond)
	e.publish(t, "news", `"after exp"`)
	e.publish(t, "room", `"not for gina"`)
	if f := expect(t, c, "message"); f["data"] != "after exp" {
		t.Errorf("got %v", f)
	}
	send(t, c, map[string]any{"type": "ping"})
	expect(t, c, "pong") // and nothing from room came before it

	send(t, c, map[string]any{"type": "refresh", "token": tok(jwt.MapClaims{"sub": "mallory", "exp": later})})
	if code, reason := expectClose(t, c, 5*time.Second); code != wsframe.ClosePolicy || reason != "refresh token for another sub" {
		t.Errorf("close %d %q, want 1008", code, reason)
	}

	open := e.connect(t)
	send(t, open, map[string]any{"type": "refresh", "token": "x"})
	if f := expect(t, open, "error"); f.str("code") != errBadRequest {
		t.Errorf("refresh on a route without tokens: %v", f)
	}
}
