package hub

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"edge/internal/wsframe"
)

// TestFramesDecode checks the hand-built frames against gorilla's client
// reader at every length-encoding boundary.
func TestFramesDecode(t *testing.T) {
	var stream bytes.Buffer
	sizes := []int{0, 1, 125, 126, 127, 65535, 65536, 70000}
	for _, n := range sizes {
		payload := bytes.Repeat([]byte("a"), n)
		stream.Write(textFrame(payload))
		stream.Write(messageFrame("ch", 7, dataJSON(payload)))
	}
	stream.Write(wsframe.CloseFrame(wsframe.CloseTryLater, strings.Repeat("r", 200)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c.UnderlyingConn().Write(stream.Bytes())
		time.Sleep(time.Second)
		c.Close()
	}))
	defer srv.Close()
	c := dial(t, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	c.SetReadLimit(1 << 20)
	for _, n := range sizes {
		payload := bytes.Repeat([]byte("a"), n)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		typ, got, err := c.ReadMessage()
		if err != nil || typ != websocket.TextMessage || !bytes.Equal(got, payload) {
			t.Fatalf("len %d: text frame read as type %d, %d bytes, %v", n, typ, len(got), err)
		}
		_, got, err = c.ReadMessage()
		want := `{"channel":"ch","seq":7,"data":"` + string(payload) + `"}`
		if err != nil || string(got) != want {
			t.Fatalf("len %d: message frame %.60q, %v", n, got, err)
		}
	}
	_, _, err := c.ReadMessage()
	ce, ok := err.(*websocket.CloseError)
	if !ok || ce.Code != wsframe.CloseTryLater || len(ce.Text) != 123 {
		t.Fatalf("close frame gave %v, want 1013 with the reason cut to 123 bytes", err)
	}
}
