package main

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

// TestRedisTLSStorageNodes runs real edge processes with tls.storage
// redis. Redis is down when node 1 starts: it serves HTTP, /readyz says
// 503 naming the tls storage, and turns 200 when Redis is back. Node 2
// then serves a certificate from the same local CA (kept in Redis), and a
// browser-like client that handshook with node 1 resumes its TLS session
// on node 2.
func TestRedisTLSStorageNodes(t *testing.T) {
	srv := testpeer.StartRedis(t)
	srv.Kill()
	node := func() (*edgeProc, string, string) {
		httpAddr, httpsAddr, adminAddr := freePort(t), freePort(t), freePort(t)
		p := startEdge(t, fmt.Sprintf(`
listen: { http: "%s", https: "%s" }
admin: "%s"
tls: { ca: internal, storage: redis }
redis: { url: "%s" }
sites:
  - hosts: [localhost]
    http_redirect: false
    routes: [{ path: /, respond: { status: 200, body: "ok" } }]
`, httpAddr, httpsAddr, adminAddr, srv.URL()))
		p.waitHTTP("http://"+adminAddr+"/healthz", 20*time.Second)
		return p, httpsAddr, adminAddr
	}
	_, https1, admin1 := node()
	for deadline := time.Now().Add(10 * time.Second); ; {
		code, body := httpGet(t, nil, "http://"+admin1+"/readyz")
		if code == 503 && strings.Contains(body, "tls storage in redis unreachable") && strings.Contains(body, "localhost") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz with Redis down = %d %q, want 503 naming the tls storage and localhost", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	srv.Restart()
	waitReady := func(admin, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, body := httpGet(t, nil, "http://"+admin+"/readyz")
			if code == 200 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: readyz still %d %q", what, code, body)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitReady(admin1, "node 1 after Redis came back")
	// A node that starts with Redis up becomes ready once its hub
	// subscription is established (a few ms after its listeners).
	_, https2, admin2 := node()
	waitReady(admin2, "node 2")

	rdb := redis.NewClient(srv.Options())
	defer rdb.Close()
	rootPEM, err := rdb.HGet(context.Background(), "edge:certmagic:data", "edge/local_ca/root.crt").Bytes()
	if err != nil {
		t.Fatalf("local CA root in redis: %v", err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	cache := cryptotls.NewLRUClientSessionCache(4)
	get := func(addr string) *cryptotls.ConnectionState {
		tr := &http.Transport{TLSClientConfig: &cryptotls.Config{ServerName: "localhost", RootCAs: roots, ClientSessionCache: cache}, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/")
		if err != nil {
			t.Fatalf("GET %s (verified against the shared root): %v", addr, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.TLS
	}
	if get(https1).DidResume {
		t.Fatal("resumed with an empty session cache")
	}
	if !get(https2).DidResume {
		t.Error("a session from node 1 did not resume on node 2")
	}
}
