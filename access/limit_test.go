package access

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"

	"edge/config"
)

// limitOf parses a route's limit, as edge does.
func limitOf(t testing.TB, yaml string) *config.Limit {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(`
listen: { http: "127.0.0.1:0" }
sites:
  - routes:
      - path: /
        respond: { body: x }
        limit: `+yaml+`
`))
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Sites[0].Routes[0].Limit
}

func hit(h http.Handler, remote string, hdr map[string]string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = remote
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// A client gets its burst at once, then 429 with Retry-After; another
// client is not affected.
func TestLimitBurstThen429(t *testing.T) {
	h := Limit(ok, limitOf(t, `{ rate: 1/m, burst: 2 }`))
	for i := range 3 {
		if c := hit(h, "192.0.2.1:1", nil).Code; c != 200 {
			t.Fatalf("request %d of the burst: %d", i+1, c)
		}
	}
	w := hit(h, "192.0.2.1:1", nil)
	if w.Code != 429 || w.Header().Get("Retry-After") != "60" {
		t.Errorf("over the burst: %d Retry-After %q, want 429 and 60", w.Code, w.Header().Get("Retry-After"))
	}
	if c := hit(h, "192.0.2.2:1", nil).Code; c != 200 {
		t.Errorf("another client: %d", c)
	}
}

// Keys are the trusted client identity: clients behind a trusted load
// balancer have a bucket each, and an untrusted peer cannot get fresh
// buckets by inventing X-Forwarded-For values.
func TestLimitKeysFromClientIdentity(t *testing.T) {
	h := Limit(ok, limitOf(t, `{ rate: 1/m }`))
	via := func(remote, xff string) int { return behindBalancer(h, remote, xff) }
	for i := range 5 {
		if c := via("10.0.0.5:1", fmt.Sprintf("203.0.113.%d", i)); c != 200 {
			t.Errorf("client %d behind the balancer: %d, want its own bucket", i, c)
		}
	}
	if c := via("198.51.100.4:1", "203.0.113.50"); c != 200 {
		t.Fatalf("untrusted peer, first request: %d", c)
	}
	if c := via("198.51.100.4:1", "203.0.113.51"); c != 429 {
		t.Errorf("untrusted peer with a new X-Forwarded-For: %d, want 429 (its own address is the key)", c)
	}
}

func TestLimitHeaderKey(t *testing.T) {
	h := Limit(ok, limitOf(t, `{ rate: 1/m, key: "header:X-Api-Key", status: 503 }`))
	if c := hit(h, "192.0.2.1:1", map[string]string{"X-Api-Key": "a"}).Code; c != 200 {
		t.Fatal(c)
	}
	if c := hit(h, "192.0.2.2:1", map[string]string{"X-Api-Key": "a"}).Code; c != 503 {
		t.Errorf("same key from another address: %d, want 503", c)
	}
	if c := hit(h, "192.0.2.1:1", map[string]string{"X-Api-Key": "b"}).Code; c != 200 {
		t.Errorf("another key: %d", c)
	}
}

// limit_conn: requests in progress per key; a finished one frees its slot.
func TestLimitConnections(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
	})
	h := Limit(slow, limitOf(t, `{ connections: 2 }`))
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { hit(h, "192.0.2.1:1", nil) })
		<-entered
	}
	if w := hit(h, "192.0.2.1:1", nil); w.Code != 429 || w.Header().Get("Retry-After") == "" {
		t.Errorf("third request in progress: %d Retry-After %q, want 429", w.Code, w.Header().Get("Retry-After"))
	}
	close(release)
	wg.Wait()
	if c := hit(h, "192.0.2.1:1", nil).Code; c != 200 {
		t.Errorf("after the others finished: %d, want 200", c)
	}
}

// Memory stays bounded however many keys come by: the least recently
// seen are forgotten beyond max_keys.
func TestLimitMemoryBounded(t *testing.T) {
	h := Limit(ok, limitOf(t, `{ rate: 10/s, max_keys: 1000 }`)).(*limiter)
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	r := httptest.NewRequest("GET", "/", nil)
	w := httptest.NewRecorder()
	for i := range 200000 {
		r.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255)
		h.ServeHTTP(w, r)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	if n := h.size(); n != 1000 {
		t.Errorf("%d keys held, want the cap of 1000", n)
	}
	grown := int64(m1.HeapAlloc) - int64(m0.HeapAlloc)
	t.Logf("200,000 distinct keys, cap 1,000: heap grew %d KiB", grown>>10)
	if grown > 2<<20 {
		t.Errorf("heap grew %d KiB for 1,000 keys", grown>>10)
	}
}

// BenchmarkLimit measures what a rate limit adds to a request (compare with
// a 1 KiB static request: about 20 µs of CPU over HTTP/1.1 here).
func BenchmarkLimit(b *testing.B) {
	for _, name := range []string{"none", "rate"} {
		b.Run(name, func(b *testing.B) {
			var h http.Handler = ok
			if name == "rate" {
				h = Limit(ok, limitOf(b, `{ rate: 1000000/s, burst: 1000000 }`))
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = "192.0.2.1:1"
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for b.Loop() {
				w.Body.Reset()
				h.ServeHTTP(w, r)
			}
		})
	}
}
