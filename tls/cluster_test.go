package tls

import (
	"context"
	cryptotls "crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"edge/internal/testpeer"
)

func withLockTTL(d time.Duration) Option { return func(o *options) { o.lockTTL = d } }
func withTickets(rotate, poll time.Duration) Option {
	return func(o *options) { o.ticketRotate, o.ticketPoll = rotate, poll }
}

// redisACMEYAML is acmeYAML with tls.storage redis on srv (HTTP-01 only);
// sites are more entries for the sites list.
func redisACMEYAML(p *pebble, srv *testpeer.RedisServer, hosts string, sites ...string) string {
	y := acmeYAML(p, hosts, "  tls_alpn_challenge: false")
	y = strings.Replace(y, `storage: "{dir}/storage"`, "storage: redis", 1)
	return fmt.Sprintf("redis: { url: %q }\n", srv.URL()) + y + strings.Join(sites, "")
}

// node is one edge node of a test cluster: listeners, manager, events.
type node struct {
	e  *edgeServer
	m  *Manager
	ev *events
}

func startNode(t *testing.T, e *edgeServer, yaml string, opts ...Option) *node {
	t.Helper()
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, e.parse(t, yaml), log, append(opts, ev.option())...)
	e.serve(t, m)
	return &node{e: e, m: m, ev: ev}
}

// TestRedisClusterOrdersOnce runs three nodes with tls.storage redis
// against Pebble, started together: each name is ordered exactly once at
// the CA, and all three nodes serve the same certificate. Pebble
// validates HTTP-01 on node 1 only, so the orders placed by nodes 2 and 3
// are answered by node 1 from the shared storage.
func TestRedisClusterOrdersOnce(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	names := []string{uniqueName("cluster-a"), uniqueName("cluster-b")}
	es := []*edgeServer{listen(t), listen(t), listen(t)}
	p := startPebble(t, es[0].httpPort, es[0].httpsPort, pebbleOpts{})
	var nodes []*node
	for _, e := range es {
		nodes = append(nodes, startNode(t, e, redisACMEYAML(p, srv, strings.Join(names, ", "))))
	}
	start := time.Now()
	for _, n := range nodes {
		run(t, n.m)
	}
	for i, n := range nodes {
		waitFor(t, 60*time.Second, fmt.Sprintf("node %d ready", i+1), func() bool { return n.m.Ready() == nil })
	}
	t.Logf("three nodes ready with %d names in %v", len(names), time.Since(start).Round(time.Millisecond))
	if got := p.orders.Load(); got != int32(len(names)) {
		t.Errorf("%d orders at the CA for %d names, want exactly one each", got, len(names))
	}
	for _, name := range names {
		var serials []string
		for _, n := range nodes {
			serials = append(serials, servedSerial(t, n.e.httpsAddr(), name, p.issuers))
		}
		if serials[0] != serials[1] || serials[1] != serials[2] {
			t.Errorf("%s: nodes serve different certificates: %v", name, serials)
		}
	}
	for _, name := range names {
		obtainedBy := 0
		for _, n := range nodes {
			obtainedBy += n.ev.count("cert_obtained " + name + " false")
		}
		if obtainedBy != 1 {
			t.Errorf("%s obtained %d times across nodes, want once", name, obtainedBy)
		}
	}
}

// TestRedisClusterDeadNodeLock: a node died holding the issuance lock of
// a name (its lock is in Redis, nobody extends it). Another node waits
// for the lock to expire, then completes the order; it is not blocked
// past the expiry.
func TestRedisClusterDeadNodeLock(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	name := uniqueName("deadlock")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	const ttl = 2 * time.Second
	rdb := redis.NewClient(srv.Options())
	defer rdb.Close()
	if err := rdb.Set(context.Background(), "edge:certmagic:lock:issue_cert_"+name, "killed-node", ttl).Err(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n := startNode(t, e, redisACMEYAML(p, srv, name), withLockTTL(ttl))
	run(t, n.m)
	obtained(t, n.m, n.ev, name)
	took := time.Since(start)
	t.Logf("obtained %v after the dead node's lock was set (TTL %v)", took.Round(time.Millisecond), ttl)
	if took < ttl/2 {
		t.Errorf("obtained after %v, before the dead node's lock (TTL %v) expired", took, ttl)
	}
	if p.orders.Load() != 1 {
		t.Errorf("%d orders, want 1", p.orders.Load())
	}
	servedSerial(t, e.httpsAddr(), name, p.issuers)
}

// TestRedisCorruptCertificate damages a certificate in Redis: a node that
// starts then logs it, deletes it, orders a new one and serves that; the
// damaged one is never served. (Node 1, which obtained the first one,
// keeps running: Pebble validates on its listener, which answers node 2's
// challenge from the shared storage.)
func TestRedisCorruptCertificate(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	name := uniqueName("corrupt")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	n := startNode(t, e, redisACMEYAML(p, srv, name))
	run(t, n.m)
	obtained(t, n.m, n.ev, name)
	first := servedSerial(t, e.httpsAddr(), name, p.issuers)

	rdb := redis.NewClient(srv.Options())
	defer rdb.Close()
	ctx := context.Background()
	keys, err := rdb.HKeys(ctx, "edge:certmagic:data").Result()
	if err != nil {
		t.Fatal(err)
	}
	damaged := ""
	for _, k := range keys {
		if strings.HasPrefix(k, "certificates/") && strings.HasSuffix(k, "/"+name+".crt") {
			damaged = k
			// Cut inside the leaf, as a torn write would (a cut in the
			// chain after the leaf would still make a certificate).
			v, _ := rdb.HGet(ctx, "edge:certmagic:data", k).Result()
			rdb.HSet(ctx, "edge:certmagic:data", k, v[:200])
		}
	}
	if damaged == "" {
		t.Fatalf("no stored certificate for %s among %v", name, keys)
	}

	e2 := listen(t)
	log, sink := newLogger(t)
	ev := newEvents()
	m2 := newManager(t, e2.parse(t, redisACMEYAML(p, srv, name)), log, ev.option())
	e2.serve(t, m2)
	if _, err := handshake(e2.httpsAddr(), name, p.issuers); err == nil {
		t.Fatal("node 2 served a certificate before loading any")
	}
	run(t, m2)
	obtained(t, m2, ev, name)
	if !sink.has("stored certificate is unusable", name) {
		t.Error("the damaged certificate was not logged")
	}
	second := servedSerial(t, e2.httpsAddr(), name, p.issuers)
	if second == first {
		t.Error("node 2 serves the first serial: the certificate was not obtained again")
	}
	if p.orders.Load() != 2 {
		t.Errorf("%d orders, want 2 (the first and the re-order)", p.orders.Load())
	}
	if v, _ := rdb.HGet(ctx, "edge:certmagic:data", damaged).Result(); !strings.Contains(v, "END CERTIFICATE") {
		t.Error("storage still holds the damaged certificate")
	}
}

// localRoot reads the local CA's root from Redis, where nodes share it.
func localRoot(t *testing.T, srv *testpeer.RedisServer) *x509.CertPool {
	t.Helper()
	rdb := redis.NewClient(srv.Options())
	defer rdb.Close()
	v, err := rdb.HGet(context.Background(), "edge:certmagic:data", localCAPrefix+rootCertFile).Bytes()
	if err != nil {
		t.Fatalf("local CA root in redis: %v", err)
	}
	b, _ := pem.Decode(v)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(c)
	return pool
}

const internalRedisYAML = `
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls: { ca: internal, storage: %s }
redis: { url: %q }
sites:
  - hosts: [app.cluster.test]
    routes: [{ path: /, static: { root: . } }]
`

// sessionClient is a TLS client with a session cache, as a browser.
type sessionClient struct {
	t     *testing.T
	roots *x509.CertPool
	cache cryptotls.ClientSessionCache
}

func newSessionClient(t *testing.T, roots *x509.CertPool) *sessionClient {
	return &sessionClient{t: t, roots: roots, cache: cryptotls.NewLRUClientSessionCache(8)}
}

// get makes one HTTPS request on a new connection to addr and returns its
// TLS state. A request, not just a handshake: TLS 1.3 tickets arrive
// after the handshake.
func (c *sessionClient) get(addr string) *cryptotls.ConnectionState {
	c.t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &cryptotls.Config{ServerName: "app.cluster.test", RootCAs: c.roots, ClientSessionCache: c.cache},
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/")
	if err != nil {
		c.t.Fatalf("GET %s: %v", addr, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.TLS
}

// resumes handshakes with node a, then with node b, and reports whether b
// resumed a's session.
func resumes(t *testing.T, a, b string, roots *x509.CertPool) bool {
	t.Helper()
	c := newSessionClient(t, roots)
	if c.get(a).DidResume {
		t.Fatal("first connection resumed with an empty session cache")
	}
	return c.get(b).DidResume
}

// TestRedisSessionResumption: a client handshakes with node 1 and resumes
// its session on node 2, since the nodes share ticket keys through Redis;
// both serve leaves of the one local CA kept in Redis. After a rotation,
// a ticket sealed with the previous key still resumes. With file storage
// (the default) the same client cannot resume on the other node.
func TestRedisSessionResumption(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	yaml := fmt.Sprintf(internalRedisYAML, "redis", srv.URL())
	const rotate = 2 * time.Second
	n1 := startNode(t, listen(t), yaml, withTickets(rotate, 100*time.Millisecond))
	n2 := startNode(t, listen(t), yaml, withTickets(rotate, 100*time.Millisecond))
	run(t, n1.m)
	run(t, n2.m)
	roots := localRoot(t, srv)
	rdb := redis.NewClient(srv.Options())
	defer rdb.Close()
	ctx := context.Background()
	newest := func() string { return rdb.LIndex(ctx, "edge:tls:ticket_keys", 0).Val() }
	waitFor(t, 5*time.Second, "ticket keys in redis", func() bool { return newest() != "" })
	if !resumes(t, n1.e.httpsAddr(), n2.e.httpsAddr(), roots) {
		t.Error("session from node 1 did not resume on node 2")
	}
	if !resumes(t, n2.e.httpsAddr(), n1.e.httpsAddr(), roots) {
		t.Error("session from node 2 did not resume on node 1")
	}

	// A ticket from before a rotation resumes after it on the other node.
	c := newSessionClient(t, roots)
	before := newest()
	c.get(n1.e.httpsAddr())
	waitFor(t, 10*time.Second, "a rotation", func() bool { return newest() != before })
	if !c.get(n2.e.httpsAddr()).DidResume {
		t.Error("a ticket from before the rotation did not resume on the other node")
	}

	// File storage: per-process keys, no resumption across nodes.
	f1e, f2e := listen(t), listen(t)
	f2e.dir = f1e.dir // the same local CA, so that only the ticket keys differ
	dirYAML := fmt.Sprintf(internalRedisYAML, filepath.Join(f1e.dir, "storage"), srv.URL())
	f1 := startNode(t, f1e, dirYAML)
	f2 := startNode(t, f2e, dirYAML)
	run(t, f1.m)
	run(t, f2.m)
	ca, err := openLocalCA(filepath.Join(f1e.dir, "storage", "ca"))
	if err != nil {
		t.Fatal(err)
	}
	fileRoots := x509.NewCertPool()
	fileRoots.AddCert(ca.root)
	if !resumes(t, f1.e.httpsAddr(), f1.e.httpsAddr(), fileRoots) {
		t.Error("with file storage a session does not even resume on the same node")
	}
	if resumes(t, f1.e.httpsAddr(), f2.e.httpsAddr(), fileRoots) {
		t.Error("with file storage a session resumed on another node: the test cannot tell shared keys apart")
	}
}

// TestTicketKeysRotate: a rotation puts a new key first and keeps the
// previous ones, at most ticketKeep; a non-rotating fetch changes nothing.
func TestTicketKeysRotate(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	rdb := redis.NewClient(srv.Options())
	defer rdb.Close()
	ctx := context.Background()
	slow := newTicketKeys(rdb, "edge:", time.Hour)
	k1, err := slow.fetch(ctx)
	if err != nil || len(k1) != 1 {
		t.Fatalf("first fetch = %d keys, %v", len(k1), err)
	}
	if k2, _ := slow.fetch(ctx); len(k2) != 1 || k2[0] != k1[0] {
		t.Fatal("a fetch before the rotation interval changed the keys")
	}
	fast := newTicketKeys(rdb, "edge:", time.Millisecond)
	prev := k1
	for rotations := 0; rotations < 2*ticketKeep; {
		keys, err := fast.fetch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > ticketKeep {
			t.Fatalf("%d keys kept, want at most %d", len(keys), ticketKeep)
		}
		if keys[0] == prev[0] {
			continue // same millisecond
		}
		rotations++
		if keys[1] != prev[0] {
			t.Fatal("after a rotation the previous key is not second")
		}
		prev = keys
	}
	if len(prev) != ticketKeep {
		t.Errorf("%d keys after many rotations, want %d", len(prev), ticketKeep)
	}
}

// TestRedisDownAtStart: with tls.storage redis and Redis down, the node
// starts and serves what needs no Redis (a manual certificate); /readyz
// (Ready) says Redis is unreachable and which names wait. When Redis
// comes back, the local CA (kept in Redis) issues and the ACME name is
// obtained without a restart.
func TestRedisDownAtStart(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	srv.Kill()
	acmeName := uniqueName("down")
	e := listen(t)
	p := startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{})
	dir := t.TempDir()
	ca, err := openLocalCA(filepath.Join(dir, "test-ca"))
	if err != nil {
		t.Fatal(err)
	}
	manualRoots := x509.NewCertPool()
	manualRoots.AddCert(ca.root)
	c, err := ca.issue("manual.example.com", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "site.crt"), filepath.Join(dir, "site.key")
	writeCertFiles(t, c, certFile, keyFile)
	yaml := redisACMEYAML(p, srv, acmeName, fmt.Sprintf(`
  - hosts: [manual.example.com]
    tls: { cert: %s, key: %s }
    routes: [{ path: /, static: { root: . } }]
  - hosts: [localhost]
    routes: [{ path: /, static: { root: . } }]
`, certFile, keyFile))

	log, sink := newLogger(t)
	ev := newEvents()
	m := newManager(t, e.parse(t, yaml), log, ev.option(), withPollInterval(100*time.Millisecond))
	e.serve(t, m)
	run(t, m)
	if _, err := handshake(e.httpsAddr(), "manual.example.com", manualRoots); err != nil {
		t.Errorf("the manual certificate is not served while redis is down: %v", err)
	}
	waitFor(t, 10*time.Second, "Ready to name redis", func() bool {
		err := m.Ready()
		return err != nil && strings.Contains(err.Error(), "redis unreachable")
	})
	err = m.Ready()
	for _, want := range []string{acmeName, "localhost (local CA not available)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Ready() = %v, want it to name %q", err, want)
		}
	}
	if !sink.has("tls storage in redis unreachable") {
		t.Error("the log does not say that redis is unreachable")
	}

	srv.Restart()
	start := time.Now()
	obtained(t, m, ev, acmeName)
	waitFor(t, 15*time.Second, "Ready after redis came back", func() bool { return m.Ready() == nil })
	t.Logf("ready %v after redis came back", time.Since(start).Round(time.Millisecond))
	servedSerial(t, e.httpsAddr(), acmeName, p.issuers)
	if _, err := handshake(e.httpsAddr(), "localhost", localRoot(t, srv)); err != nil {
		t.Errorf("localhost after redis came back: %v", err)
	}
}

// TestRedisClusterRenewal: when the certificate is due, one node renews
// it and the other nodes load the renewed one from Redis rather than
// ordering their own: all three converge on one new serial.
func TestRedisClusterRenewal(t *testing.T) {
	t.Parallel()
	srv := testpeer.StartRedis(t)
	name := uniqueName("cluster-renew")
	es := []*edgeServer{listen(t), listen(t), listen(t)}
	p := startPebble(t, es[0].httpPort, es[0].httpsPort, pebbleOpts{validity: 60})
	var nodes []*node
	for _, e := range es {
		// Renew with 80% of the lifetime left: due 12 s after issuance.
		nodes = append(nodes, startNode(t, e, redisACMEYAML(p, srv, name), withRenewalRatio(0.8)))
	}
	for _, n := range nodes {
		run(t, n.m)
	}
	for i, n := range nodes {
		waitFor(t, 60*time.Second, fmt.Sprintf("node %d ready", i+1), func() bool { return n.m.Ready() == nil })
	}
	first := servedSerial(t, nodes[0].e.httpsAddr(), name, p.issuers)
	renewals := func() int {
		r := 0
		for _, n := range nodes {
			r += n.ev.count("cert_obtained " + name + " true")
		}
		return r
	}
	waitFor(t, 40*time.Second, "a renewal", func() bool { return renewals() > 0 })
	var serials []string
	waitFor(t, 20*time.Second, "every node to serve the renewed certificate", func() bool {
		serials = serials[:0]
		for _, n := range nodes {
			serials = append(serials, servedSerial(t, n.e.httpsAddr(), name, p.issuers))
		}
		return serials[0] != first && serials[0] == serials[1] && serials[1] == serials[2]
	})
	r := renewals()
	t.Logf("renewals %d, orders %d", r, p.orders.Load())
	if r > 2 {
		t.Errorf("%d renewals by the nodes for one certificate, want one (two if its successor was due already)", r)
	}
	if int(p.orders.Load()) != 1+r {
		t.Errorf("%d orders at the CA, want %d (one issuance, %d renewals)", p.orders.Load(), 1+r, r)
	}
}

// TestTrustRedis: `edge trust` with tls.storage redis prints the root of
// the CA the nodes share (kept in Redis), copied to a file, and leaves no
// directory named redis behind.
func TestTrustRedis(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the root is copied; forbids t.Parallel
	srv := testpeer.StartRedis(t)
	e := listen(t)
	n := startNode(t, e, fmt.Sprintf(internalRedisYAML, "redis", srv.URL()))
	run(t, n.m)
	var out strings.Builder
	if err := Trust(e.parse(t, fmt.Sprintf(internalRedisYAML, "redis", srv.URL())), &out); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(tmp, "edge-local-ca-root.crt")
	if !strings.Contains(out.String(), file) {
		t.Errorf("trust output does not name %s:\n%s", file, out.String())
	}
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(data)
	if _, err := handshake(e.httpsAddr(), "app.cluster.test", pool); err != nil {
		t.Errorf("the node's certificate does not verify against the printed root: %v", err)
	}
	if _, err := os.Stat("redis"); err == nil {
		t.Error("a directory named redis was created")
	}
}
