package hub

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/internal/wsframe"
)

// The deflate tests check the frames on the wire with a raw client and
// decode them with the standard library's inflater (not the hub's), and
// talk to real clients that implement RFC 7692: gorilla's and Node's ws.

const deflateAnswer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// dialExt performs the handshake at e's route path+query offering the
// extensions ext ("" offers none), sending extra in the same write as the
// request, and returns the client and the
// server's Sec-WebSocket-Extensions answer.
func dialExt(t *testing.T, e *env, pathQuery, ext string, extra ...[]byte) (*rawClient, string) {
	t.Helper()
	host := strings.TrimPrefix(e.http, "http://")
	nc, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	req := "GET " + pathQuery + " HTTP/1.1\r\nHost: " + host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + testKey +
		"\r\nSec-WebSocket-Version: 13\r\n"
	if ext != "" {
		req += "Sec-WebSocket-Extensions: " + ext + "\r\n"
	}
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	b := []byte(req + "\r\n")
	for _, x := range extra {
		b = append(b, x...)
	}
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	rc := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	resp, err := http.ReadResponse(rc.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: status %d", resp.StatusCode)
	}
	return rc, resp.Header.Get("Sec-WebSocket-Extensions")
}

// nextFrame returns the next server frame with its header (RSV included).
func (rc *rawClient) nextFrame() (wsframe.Header, []byte) {
	rc.t.Helper()
	rc.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	h, err := readFrameHeader(rc.br)
	if err != nil {
		rc.t.Fatalf("read frame: %v", err)
	}
	p := make([]byte, h.Len)
	if _, err := io.ReadFull(rc.br, p); err != nil {
		rc.t.Fatalf("read payload: %v", err)
	}
	return h, p
}

// message reads the next frame, which must be a data message, and returns
// whether it came compressed and its (inflated) payload.
func (rc *rawClient) message() (compressed bool, op byte, payload []byte) {
	rc.t.Helper()
	h, p := rc.nextFrame()
	if !h.Fin || h.Op != wsframe.OpText && h.Op != wsframe.OpBinary {
		rc.t.Fatalf("frame %+v %q: want a final data frame", h, p)
	}
	switch h.RSV {
	case 0:
		return false, h.Op, p
	case rsv1:
		return true, h.Op, stdInflate(rc.t, p)
	}
	rc.t.Fatalf("frame with RSV bits %#x", h.RSV)
	return
}

// stdInflate inflates an RFC 7692 message payload with compress/flate.
func stdInflate(t testing.TB, p []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(p), strings.NewReader(deflateTail)))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflate %d bytes: %v", len(p), err)
	}
	return out
}

// stdDeflate compresses a message payload as an RFC 7692 client does.
func stdDeflate(t testing.TB, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	w.Write(p)
	w.Flush()
	return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
}

// compressedFrame returns a masked client frame with RSV1 set.
func compressedFrame(fin bool, op byte, payload []byte) []byte {
	f := clientFrame(fin, op, payload)
	f[0] |= rsv1
	return f
}

// bigJSON is a compressible JSON payload of about n bytes.
func bigJSON(n int) string {
	var b strings.Builder
	b.WriteString(`{"rows":[`)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"id":%d,"name":"user-%d","status":"online","score":%d}`, i, i, i*7%100)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestDeflateNegotiation: permessage-deflate is answered, with no context
// takeover both ways, exactly to offers the hub can honour, and only on a
// route with compression: true.
func TestDeflateNegotiation(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	e.route(t, "/z/", `{ compression: true }`, nil)
	cases := []struct {
		path, offer string
		want        bool
	}{
		{"/z/", "permessage-deflate", true},
		{"/z/", "permessage-deflate; client_max_window_bits", true},                        // browsers, Node ws
		{"/z/", "permessage-deflate; client_max_window_bits=10", true},                     // the client's own window: any inflates
		{"/z/", `permessage-deflate; client_max_window_bits="12"`, true},                   // quoted value
		{"/z/", deflateAnswer, true},                                                       // gorilla
		{"/z/", "permessage-deflate; server_max_window_bits=10", false},                    // would need a smaller window
		{"/z/", "permessage-deflate; server_max_window_bits=10, permessage-deflate", true}, // the fallback offer
		{"/z/", "permessage-deflate; client_max_window_bits=16", false},
		{"/z/", "permessage-deflate; client_max_window_bits=08", false},
		{"/z/", "permessage-deflate; server_no_context_takeover=1", false},
		{"/z/", "permessage-deflate; client_no_context_takeover; client_no_context_takeover", false},
		{"/z/", "permessage-deflate; x-unknown", false},
		{"/z/", "x-webkit-deflate-frame", false},
		{"/z/", `foo; a=", permessage-deflate, "`, false}, // inside a quoted string
		{"/z/", "", false},
		{"/socket/", "permessage-deflate", false}, // compression off
	}
	for _, c := range cases {
		rc, got := dialExt(t, e, c.path, c.offer)
		rc.nc.Close()
		want := ""
		if c.want {
			want = deflateAnswer
		}
		if got != want {
			t.Errorf("%s offer %q: answer %q, want %q", c.path, c.offer, got, want)
		}
	}
}

// TestDeflateFanout: a 2 KiB message goes compressed (RSV1, valid
// deflate) to the clients that negotiated, plain to the others, and every
// client gets the same data; gorilla's client with compression decodes it.
func TestDeflateFanout(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ compression: true }`)
	z, _ := dialExt(t, e, "/socket/?channel=c", "permessage-deflate")
	z.expect("welcome")
	z.expect("subscribed")
	plain, _ := dialExt(t, e, "/socket/?channel=c", "")
	plain.expect("welcome")
	plain.expect("subscribed")
	gz, resp, err := (&websocket.Dialer{EnableCompression: true}).Dial(e.ws+"?channel=c", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer gz.Close()
	if got := resp.Header.Get("Sec-WebSocket-Extensions"); got != deflateAnswer {
		t.Fatalf("gorilla client: extensions %q", got)
	}
	expect(t, gz, "welcome")
	expect(t, gz, "subscribed")

	payload := bigJSON(2048)
	seq := e.publish(t, "c", payload)
	want := fmt.Sprintf(`{"channel":"c","seq":%d,"data":%s}`, seq, payload)

	compressed, _, got := z.message()
	if !compressed || string(got) != want {
		t.Errorf("negotiated client: compressed %v, %d bytes; want compressed %q", compressed, len(got), want)
	}
	compressed, _, got = plain.message()
	if compressed || string(got) != want {
		t.Errorf("plain client: compressed %v, %q; want plain %q", compressed, got, want)
	}
	if f := expect(t, gz, "message"); f.seq() != seq {
		t.Errorf("gorilla client got %v", f)
	}
	st := e.n.Stats(t.Context())
	if st.Compressed != 1 || st.CompressedBytesSaved == 0 {
		t.Errorf("stats compressed %d, saved %d; want 1 and some", st.Compressed, st.CompressedBytesSaved)
	}

	// Control messages and frames under compression_min_size go plain.
	send(t, gz, map[string]any{"type": "ping", "id": 1})
	expect(t, gz, "pong")
	z.send(textMsg(`{"type":"ping"}`))
	if h, p := z.nextFrame(); h.RSV != 0 {
		t.Errorf("pong frame %q with RSV %#x, want plain", p, h.RSV)
	}
	e.publish(t, "c", `{"small":true}`)
	if compressed, _, got := z.message(); compressed {
		t.Errorf("small message %q went compressed", got)
	}
	if st := e.n.Stats(t.Context()); st.Compressed != 1 {
		t.Errorf("stats compressed %d after a small message, want 1", st.Compressed)
	}
}

// TestDeflateOncePerMessage: 100 subscribers with compression get one
// message: it is compressed once, not 100 times.
func TestDeflateOncePerMessage(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ compression: true }`)
	d := &websocket.Dialer{EnableCompression: true}
	cs := make([]*websocket.Conn, 100)
	for i := range cs {
		c, _, err := d.Dial(e.ws+"?channel=many", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expect(t, c, "welcome")
		expect(t, c, "subscribed")
		cs[i] = c
	}
	payload := bigJSON(2048)
	seq := e.publish(t, "many", payload)
	var wg sync.WaitGroup
	errs := make(chan string, len(cs))
	for _, c := range cs {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, p, err := c.ReadMessage()
			var m struct {
				Seq  uint64          `json:"seq"`
				Data json.RawMessage `json:"data"`
			}
			if err != nil || json.Unmarshal(p, &m) != nil || m.Seq != seq || string(m.Data) != payload {
				errs <- fmt.Sprintf("got %.60q, %v", p, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if st := e.n.Stats(t.Context()); st.Compressed != 1 {
		t.Errorf("stats compressed %d for one message to 100 clients, want 1", st.Compressed)
	}
}

// TestDeflateReplay: a replay with since sends the compressed frame the
// history kept: compressed for the live subscriber, reused for the
// replays.
func TestDeflateReplay(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ compression: true, compression_min_size: 64 }`)
	live, _ := dialExt(t, e, "/socket/?channel=r", "permessage-deflate")
	live.expect("welcome")
	live.expect("subscribed")
	start := e.publish(t, "r", `"warm-up"`) - 1
	live.message()
	payload := bigJSON(700)
	seq := e.publish(t, "r", payload)
	if c, _, _ := live.message(); !c {
		t.Fatal("live message not compressed")
	}
	want := fmt.Sprintf(`{"channel":"r","seq":%d,"data":%s}`, seq, payload)
	for i := range 2 {
		rc, _ := dialExt(t, e, "/socket/", "permessage-deflate")
		rc.expect("welcome")
		rc.send(textMsg(fmt.Sprintf(`{"type":"subscribe","channel":"r","since":%d,"epoch":%q}`, start, e.n.Epoch())))
		if f := rc.expect("subscribed"); f["recovered"] != true {
			t.Fatalf("replay %d: %v", i, f)
		}
		if c, _, got := rc.message(); c || !strings.Contains(string(got), "warm-up") {
			t.Errorf("replay %d: first message compressed %v %q; want plain (under the minimum)", i, c, got)
		}
		if c, _, got := rc.message(); !c || string(got) != want {
			t.Errorf("replay %d: compressed %v, %q; want compressed %q", i, c, got, want)
		}
	}
	if st := e.n.Stats(t.Context()); st.Compressed != 1 {
		t.Errorf("stats compressed %d after two replays, want 1", st.Compressed)
	}
}

// TestDeflateRawRoute: on a raw route the bare payload goes compressed,
// text or binary as without compression.
func TestDeflateRawRoute(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	e.route(t, "/raw/", `{ raw: true, compression: true, compression_min_size: 100 }`, nil)
	rc, ext := dialExt(t, e, "/raw/?channel=raw", "permessage-deflate; client_max_window_bits")
	if ext != deflateAnswer {
		t.Fatalf("extensions %q", ext)
	}
	// A raw route sends no subscribed message: wait for the subscription
	// the connection made at connect before publishing.
	waitFor(t, 5*time.Second, "raw subscriber", func() bool { return e.n.LocalPresence().Channels["raw"].Subscribers == 1 })
	text := strings.Repeat("hello raw world ", 20)
	e.publish(t, "raw", text)
	if c, op, got := rc.message(); !c || op != wsframe.OpText || string(got) != text {
		t.Errorf("text: compressed %v op %d %q", c, op, got)
	}
	bin := append([]byte{0xff, 0xfe}, bytes.Repeat([]byte{0, 1, 2, 3}, 100)...)
	e.publish(t, "raw", string(bin))
	if c, op, got := rc.message(); !c || op != wsframe.OpBinary || !bytes.Equal(got, bin) {
		t.Errorf("binary: compressed %v op %d %x", c, op, got)
	}
}

// TestDeflateInbound: a client that negotiated may send compressed
// messages, fragmented or not, and uncompressed ones; a compressed
// publish reaches the other subscribers.
func TestDeflateInbound(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ compression: true, allow_publish: true }`)
	sub := e.connect(t, "in")
	rc, _ := dialExt(t, e, "/socket/", "permessage-deflate")
	rc.expect("welcome")

	rc.send(compressedFrame(true, wsframe.OpText, stdDeflate(t, []byte(`{"type":"ping","id":"z"}`))))
	if f := rc.expect("pong"); f.str("id") != "z" {
		t.Errorf("pong %v", f)
	}
	rc.send(textMsg(`{"type":"ping","id":"plain"}`))
	if f := rc.expect("pong"); f.str("id") != "plain" {
		t.Errorf("pong %v", f)
	}
	data := bigJSON(3000)
	z := stdDeflate(t, []byte(`{"type":"publish","channel":"in","id":1,"data":`+data+`}`))
	half := len(z) / 2
	rc.send(compressedFrame(false, wsframe.OpText, z[:half]), clientFrame(true, wsframe.OpPing, nil), clientFrame(true, 0, z[half:]))
	if h, _ := rc.nextFrame(); h.Op != wsframe.OpPong {
		t.Fatalf("got %+v, want the pong", h)
	}
	rc.expect("published")
	if f := expect(t, sub, "message"); f.str("channel") != "in" {
		t.Errorf("subscriber got %v", f)
	}
	if st := e.n.Stats(t.Context()); st.Inflated != 2 {
		t.Errorf("stats inflated %d, want 2", st.Inflated)
	}
}

// TestHostileDeflate: what a client can do wrong with compression.
func TestHostileDeflate(t *testing.T) {
	e := newEnv(t, NodeOptions{}, `{ compression: true, max_message_size: 4KiB }`)
	e.route(t, "/plain/", `{}`, nil)
	zclient := func(t *testing.T, path string) *rawClient {
		rc, _ := dialExt(t, e, path, "permessage-deflate")
		rc.expect("welcome")
		return rc
	}
	t.Run("compression bomb", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		bomb := stdDeflate(t, []byte(`{"type":"ping","id":"`+strings.Repeat("0", 2<<20)+`"}`))
		if len(bomb) > 4<<10 {
			t.Fatalf("bomb of %d bytes does not fit the limit on the wire", len(bomb))
		}
		rc.send(compressedFrame(true, wsframe.OpText, bomb))
		rc.expectClose(wsframe.CloseTooBig)
	})
	t.Run("just under the limit inflates", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		msg := `{"type":"ping","id":"` + strings.Repeat("0", 4<<10-len(`{"type":"ping","id":""}`)) + `"}`
		rc.send(compressedFrame(true, wsframe.OpText, stdDeflate(t, []byte(msg))))
		rc.expect("pong")
	})
	t.Run("invalid deflate data", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		rc.send(compressedFrame(true, wsframe.OpText, []byte{0xff, 0xff, 0xff, 0xff, 0x00, 0x13}))
		rc.expectClose(wsframe.CloseProtocolError)
	})
	t.Run("truncated deflate data", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		z := stdDeflate(t, []byte(bigJSON(2000)))
		rc.send(compressedFrame(true, wsframe.OpText, z[:len(z)/2]))
		rc.expectClose(wsframe.CloseProtocolError)
	})
	t.Run("inflates to invalid UTF-8", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		rc.send(compressedFrame(true, wsframe.OpText, stdDeflate(t, []byte{'"', 0xff, 0xfe, '"'})))
		rc.expectClose(wsframe.CloseInvalidData)
	})
	t.Run("RSV1 on a continuation", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		rc.send(clientFrame(false, wsframe.OpText, []byte(`{"type":`)), compressedFrame(true, 0, []byte(`"ping"}`)))
		rc.expectClose(wsframe.CloseProtocolError)
	})
	t.Run("RSV1 on a ping", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		rc.send(compressedFrame(true, wsframe.OpPing, nil))
		rc.expectClose(wsframe.CloseProtocolError)
	})
	t.Run("RSV2 and RSV3", func(t *testing.T) {
		rc := zclient(t, "/socket/")
		f := compressedFrame(true, wsframe.OpText, stdDeflate(t, []byte(`{"type":"ping"}`)))
		f[0] |= 0x20
		rc.send(f)
		rc.expectClose(wsframe.CloseProtocolError)
	})
	t.Run("RSV1 without negotiation", func(t *testing.T) {
		rc, ext := dialExt(t, e, "/plain/", "permessage-deflate") // route without compression
		if ext != "" {
			t.Fatalf("negotiated %q", ext)
		}
		rc.expect("welcome")
		rc.send(compressedFrame(true, wsframe.OpText, stdDeflate(t, []byte(`{"type":"ping"}`))))
		rc.expectClose(wsframe.CloseProtocolError)
	})
}

// TestDeflateNodeWS runs testdata/node/deflate.test.mjs: Node's ws with
// perMessageDeflate gets the messages compressed (fewer bytes read) and
// decodes them right, ws without it gets them plain, and a message ws
// sends compressed is inflated and fanned out.
func TestDeflateNodeWS(t *testing.T) {
	for _, bin := range []string{"node", "npm"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found: the README test command (make test or .ci/run) installs Node 20 and npm", bin)
		}
	}
	npmCI(t)
	e := newEnv(t, NodeOptions{}, "")
	e.route(t, "/z/", `{ compression: true, allow_publish: true }`, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "deflate.test.mjs")
	cmd.Dir = nodeDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "EDGE_HTTP="+e.http)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node deflate.test.mjs: %v\n%s", err, out)
	}
	if st := e.n.Stats(t.Context()); st.Compressed != 1 || st.Inflated != 1 {
		t.Errorf("stats compressed %d, inflated %d; want 1 and 1", st.Compressed, st.Inflated)
	}
}

// FuzzReaderDeflate is FuzzReader on a connection that negotiated
// permessage-deflate: compressed, fragmented, truncated or bomb-like
// messages never panic the hub, never get more than max_message_size
// inflated, and leave it serving.
//
//	go test -run '^$' -fuzz FuzzReaderDeflate -fuzzminimizetime 0 ./hub
func FuzzReaderDeflate(f *testing.F) {
	e := newEnv(f, NodeOptions{}, `{ compression: true, max_message_size: 1KiB }`)
	for _, seed := range [][]byte{
		compressedFrame(true, wsframe.OpText, stdDeflate(f, []byte(`{"type":"ping","id":1}`))),
		compressedFrame(true, wsframe.OpText, stdDeflate(f, bytes.Repeat([]byte("0"), 1<<20))),
		append(compressedFrame(false, wsframe.OpText, []byte{0x2a}), clientFrame(true, 0, []byte{0xca, 0x4c})...),
		compressedFrame(true, wsframe.OpText, []byte{0xff, 0x00}),
		compressedFrame(true, wsframe.OpPing, nil),
		compressedFrame(true, wsframe.OpBinary, stdDeflate(f, []byte{1, 2})),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc, _ := dialExt(t, e, "/socket/", "permessage-deflate", data)
		drainServerFrames(t, rc)
		ok, _ := dialExt(t, e, "/socket/", "permessage-deflate")
		ok.expect("welcome")
		ok.send(compressedFrame(true, wsframe.OpText, stdDeflate(t, []byte(`{"type":"ping","id":7}`))))
		ok.expect("pong")
	})
}
