package tls

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var (
	challtestsrvOnce sync.Once
	challtestsrvDir  string // removed by TestMain
	challtestsrvBin  string
	challtestsrvErr  error
)

// buildChalltestsrv builds Pebble's pebble-challtestsrv command (pinned by
// go.mod) once per test binary: its management API (/set-txt,
// /clear-txt) is what a DNS hook talks to, as it would to a DNS host's API.
func buildChalltestsrv(t *testing.T) string {
	t.Helper()
	challtestsrvOnce.Do(func() {
		challtestsrvDir, challtestsrvErr = os.MkdirTemp("", "edge-challtestsrv")
		if challtestsrvErr != nil {
			return
		}
		challtestsrvBin = filepath.Join(challtestsrvDir, "pebble-challtestsrv")
		out, err := exec.Command("go", "build", "-o", challtestsrvBin, "github.com/letsencrypt/pebble/v2/cmd/pebble-challtestsrv").CombinedOutput()
		if err != nil {
			challtestsrvErr = fmt.Errorf("go build pebble-challtestsrv: %v\n%s", err, out)
		}
	})
	if challtestsrvErr != nil {
		t.Fatal(challtestsrvErr)
	}
	return challtestsrvBin
}

// challSrv is a running pebble-challtestsrv: Pebble's VA asks its DNS
// server, hooks set records through its management API.
type challSrv struct {
	dns  string // host:port, UDP and TCP
	mgmt string // http://host:port
}

func startChalltestsrv(t *testing.T) *challSrv {
	t.Helper()
	bin := buildChalltestsrv(t)
	for attempt := 0; attempt < 5; attempt++ {
		dnsAddr, mgmtAddr := freeAddr(t), freeAddr(t)
		cmd := exec.Command(bin, "-dnsserver", dnsAddr, "-management", mgmtAddr, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "",
			"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		if waitUp(exited, dnsAddr, mgmtAddr) {
			t.Cleanup(func() { cmd.Process.Kill(); <-exited })
			return &challSrv{dns: dnsAddr, mgmt: "http://" + mgmtAddr}
		}
		cmd.Process.Kill()
		<-exited // a port taken between freeAddr and the bind: try others
	}
	t.Fatal("pebble-challtestsrv did not start")
	return nil
}

// waitUp polls until the management port accepts and the DNS server
// answers, or the process exits.
func waitUp(exited chan error, dnsAddr, mgmtAddr string) bool {
	deadline := time.Now().Add(5 * time.Second)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			return false
		default:
		}
		conn, err := net.DialTimeout("tcp", mgmtAddr, 200*time.Millisecond)
		if err == nil {
			conn.Close()
			q := new(dns.Msg)
			q.SetQuestion("probe.edge-test.com.", dns.TypeA)
			if _, _, err := c.Exchange(q, dnsAddr); err == nil {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// soaFront is the DNS server edge's tls.dns.resolvers point at: it answers
// SOA queries with a zone of the last two labels (challtestsrv answers
// SOA with NOTIMP, where the real DNS hierarchy would name the zone) and
// forwards every other query to challtestsrv.
func soaFront(t *testing.T, upstream string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		if len(r.Question) == 1 && r.Question[0].Qtype == dns.TypeSOA {
			labels := dns.SplitDomainName(r.Question[0].Name)
			zone := dns.Fqdn(strings.Join(labels[max(0, len(labels)-2):], "."))
			m := new(dns.Msg)
			m.SetReply(r)
			m.Answer = []dns.RR{&dns.SOA{Hdr: dns.RR_Header{Name: zone, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
				Ns: "ns." + zone, Mbox: "hostmaster." + zone, Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60}}
			w.WriteMsg(m)
			return
		}
		in, err := dns.Exchange(r, upstream)
		if err != nil {
			in = new(dns.Msg)
			in.SetRcode(r, dns.RcodeServerFailure)
		}
		w.WriteMsg(in)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { srv.Shutdown(); <-done })
	return pc.LocalAddr().String()
}

// dnsSetup is Pebble validating DNS-01 against challtestsrv, and a hook
// script that edge runs.
type dnsSetup struct {
	e     *edgeServer
	p     *pebble
	cts   *challSrv
	front string
	hook  string // the hook script's path
	calls string // the file the hook appends "ACTION FQDN" to
}

func newDNSSetup(t *testing.T) *dnsSetup {
	t.Helper()
	e := listen(t)
	cts := startChalltestsrv(t)
	d := &dnsSetup{e: e, cts: cts, front: soaFront(t, cts.dns),
		hook: filepath.Join(e.dir, "dns-hook"), calls: filepath.Join(e.dir, "hook-calls")}
	d.p = startPebble(t, e.httpPort, e.httpsPort, pebbleOpts{dnsAddr: cts.dns})
	return d
}

// goodHook is a DNS hook as a user would write it for their DNS host's
// API: here challtestsrv's. Its clear-txt removes every value of a name,
// and the challenges of example.com and *.example.com share one name, so
// cleanup puts back the values still presented.
const goodHook = `#!/bin/sh
set -e
echo "$1 $2" >> %[1]q
exec 9>%[1]q.lock
flock 9
state=%[1]q.state
touch "$state"
case "$1" in
present)
	echo "$2 $3" >> "$state"
	curl -fsS -d "{\"host\":\"$2\",\"value\":\"$3\"}" %[2]q/set-txt ;;
cleanup)
	grep -vxF "$2 $3" "$state" > "$state.new" || true
	mv "$state.new" "$state"
	curl -fsS -d "{\"host\":\"$2\"}" %[2]q/clear-txt
	grep "^$2 " "$state" | while read -r host value; do
		curl -fsS -d "{\"host\":\"$host\",\"value\":\"$value\"}" %[2]q/set-txt
	done ;;
*)
	echo "unknown action $1" >&2
	exit 2 ;;
esac
`

func (d *dnsSetup) writeHook(t *testing.T, script string) {
	t.Helper()
	// Write then rename: the old file may be running (ETXTBSY).
	tmp := d.hook + ".tmp"
	if err := os.WriteFile(tmp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, d.hook); err != nil {
		t.Fatal(err)
	}
}

func (d *dnsSetup) yaml(hosts, dnsKeys string) string {
	return fmt.Sprintf(`
listen: { http: "127.0.0.1:{http}", https: "127.0.0.1:{https}" }
admin: ""
tls:
  ca: %q
  ca_root: %q
  storage: "{dir}/storage"
  profile: default
  dns: { resolvers: [%q], propagation_timeout: 10s, %s }
sites:
  - hosts: [%s]
    routes: [{ path: /, static: { root: . } }]
`, d.p.dirURL, d.p.caRoot, d.front, dnsKeys, hosts)
}

func (d *dnsSetup) hookCalls(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(d.calls)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

// checkWildcard connects with SNI sub.zone and checks that the wildcard
// certificate for zone, issued by Pebble, is served.
func checkWildcard(t *testing.T, m *Manager, addr, zone string, roots *x509.CertPool) {
	t.Helper()
	waitFor(t, 5*time.Second, "Ready", func() bool { return m.Ready() == nil })
	leaf, err := handshake(addr, "anything."+zone, roots)
	if err != nil {
		t.Fatalf("handshake for anything.%s: %v", zone, err)
	}
	if !slices.Contains(leaf.DNSNames, "*."+zone) {
		t.Errorf("served certificate covers %v, want *.%s", leaf.DNSNames, zone)
	}
}

// TestDNS01Wildcard obtains a wildcard certificate (and one for the bare
// name) over DNS-01 through an exec hook that sets TXT records with
// challtestsrv's management API, then removes them.
func TestDNS01Wildcard(t *testing.T) {
	t.Parallel()
	d := newDNSSetup(t)
	zone := uniqueName("wild")
	d.writeHook(t, fmt.Sprintf(goodHook, d.calls, d.cts.mgmt))
	cfg := d.e.parse(t, d.yaml(fmt.Sprintf(`"*.%s", %s`, zone, zone), fmt.Sprintf("exec: %q", d.hook)))
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, cfg, log, ev.option())
	d.e.serve(t, m)
	start := time.Now()
	run(t, m)
	ev.wait(t, "cert_obtained *."+zone+" false", 1, 30*time.Second)
	ev.wait(t, "cert_obtained "+zone+" false", 1, 30*time.Second)
	t.Logf("wildcard and bare certificates obtained over DNS-01 in %v", time.Since(start).Round(time.Millisecond))
	waitFor(t, 5*time.Second, "Ready", func() bool { return m.Ready() == nil })
	checkWildcard(t, m, d.e.httpsAddr(), zone, d.p.issuers)
	if leaf, err := handshake(d.e.httpsAddr(), zone, d.p.issuers); err != nil {
		t.Errorf("handshake for %s: %v", zone, err)
	} else if !slices.Contains(leaf.DNSNames, zone) {
		t.Errorf("served certificate for %s covers %v", zone, leaf.DNSNames)
	}
	fqdn := "_acme-challenge." + zone + "."
	waitFor(t, 5*time.Second, "cleanup hook calls", func() bool {
		return strings.Count(d.hookCalls(t), "cleanup "+fqdn) == 2
	})
	if calls := d.hookCalls(t); strings.Count(calls, "present "+fqdn) != 2 {
		t.Errorf("hook calls:\n%s\nwant two presents of %s (the wildcard and the bare name)", calls, fqdn)
	}
}

// TestDNS01HookFails: a hook that fails gives an error naming the hook,
// its exit status and what it printed; certmagic schedules a retry with
// backoff; a reload with a repaired hook retries at once and succeeds.
func TestDNS01HookFails(t *testing.T) {
	t.Parallel()
	d := newDNSSetup(t)
	zone := uniqueName("failing")
	d.writeHook(t, "#!/bin/sh\necho 'DNS API: token rejected' >&2\nexit 3\n")
	cfg := d.e.parse(t, d.yaml(fmt.Sprintf(`"*.%s"`, zone), fmt.Sprintf("exec: %q", d.hook)))
	log, sink := newLogger(t)
	ev := newEvents()
	m := newManager(t, cfg, log, ev.option())
	d.e.serve(t, m)
	run(t, m)
	ev.wait(t, "cert_failed *."+zone+" false", 1, 30*time.Second)
	want := "tls.dns present _acme-challenge." + zone + ".: " + d.hook + ": exit status 3: DNS API: token rejected"
	if !sink.has("certificate request failed; retrying with backoff", want) {
		t.Errorf("no error log containing %q", want)
	}
	waitFor(t, 5*time.Second, "certmagic's retry schedule", func() bool { return sink.has("will retry", "retrying_in=1m0s") })
	if err := m.Ready(); err == nil || !strings.Contains(err.Error(), "token rejected") {
		t.Errorf("Ready() = %v, want the hook's error", err)
	}

	d.writeHook(t, fmt.Sprintf(goodHook, d.calls, d.cts.mgmt))
	if err := m.Update(d.e.parse(t, d.yaml(fmt.Sprintf(`"*.%s"`, zone), fmt.Sprintf("exec: %q", d.hook)))); err != nil {
		t.Fatal(err)
	}
	ev.wait(t, "cert_obtained *."+zone+" false", 1, 30*time.Second)
	checkWildcard(t, m, d.e.httpsAddr(), zone, d.p.issuers)
}

// TestDNS01HookHangs: a hook that never returns is killed at
// tls.dns.timeout with the processes it started, and the log says so.
func TestDNS01HookHangs(t *testing.T) {
	t.Parallel()
	d := newDNSSetup(t)
	zone := uniqueName("hanging")
	pidFile := filepath.Join(d.e.dir, "sleep.pid")
	d.writeHook(t, fmt.Sprintf("#!/bin/sh\nsleep 300 &\necho $! > %q\nwait\n", pidFile))
	cfg := d.e.parse(t, d.yaml(fmt.Sprintf(`"*.%s"`, zone), fmt.Sprintf("exec: %q, timeout: 300ms", d.hook)))
	log, sink := newLogger(t)
	ev := newEvents()
	m := newManager(t, cfg, log, ev.option())
	d.e.serve(t, m)
	start := time.Now()
	run(t, m)
	ev.wait(t, "cert_failed *."+zone+" false", 1, 10*time.Second)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the failure came %v after start; the hook should have been killed after 300ms", took)
	}
	if !sink.has("dns hook killed at its timeout (tls.dns.timeout)", "fqdn=_acme-challenge."+zone+".", "timeout=300ms") {
		t.Error("no log line says the hook was killed at its timeout")
	}
	if !sink.has("certificate request failed", "killed after tls.dns.timeout (300ms)") {
		t.Error("the certificate error does not say the hook timed out")
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	waitFor(t, 5*time.Second, "the hook's child to be gone", func() bool { return processGone(pid) })
}

// processGone reports whether pid has exited (a zombie counts as gone).
func processGone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, rest, _ := strings.Cut(string(stat), ") ")
	return strings.HasPrefix(rest, "Z")
}

// TestDNS01Webhook obtains a wildcard certificate through tls.dns.webhook:
// a web service that receives {fqdn, value} on /present and /cleanup and
// sets the records with challtestsrv's management API.
func TestDNS01Webhook(t *testing.T) {
	t.Parallel()
	d := newDNSSetup(t)
	zone := uniqueName("webhook")
	var mu sync.Mutex
	var calls []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct{ FQDN, Value string }
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.NewDecoder(r.Body).Decode(&body) != nil {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		mu.Lock()
		calls = append(calls, r.URL.Path+" "+body.FQDN)
		mu.Unlock()
		op := map[string]string{"/dns/present": "/set-txt", "/dns/cleanup": "/clear-txt"}[r.URL.Path]
		if op == "" {
			http.NotFound(w, r)
			return
		}
		js, _ := json.Marshal(map[string]string{"host": body.FQDN, "value": body.Value})
		resp, err := http.Post(d.cts.mgmt+op, "application/json", bytes.NewReader(js))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
	}))
	t.Cleanup(hook.Close)
	cfg := d.e.parse(t, d.yaml(fmt.Sprintf(`"*.%s"`, zone), fmt.Sprintf("webhook: %q", hook.URL+"/dns/")))
	log, _ := newLogger(t)
	ev := newEvents()
	m := newManager(t, cfg, log, ev.option())
	d.e.serve(t, m)
	run(t, m)
	ev.wait(t, "cert_obtained *."+zone+" false", 1, 30*time.Second)
	checkWildcard(t, m, d.e.httpsAddr(), zone, d.p.issuers)
	fqdn := "_acme-challenge." + zone + "."
	waitFor(t, 5*time.Second, "the cleanup call", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(calls, "/dns/cleanup "+fqdn)
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(calls, "/dns/present "+fqdn) {
		t.Errorf("webhook calls %q, want /dns/present %s", calls, fqdn)
	}
}

// TestDNSWebhookRefusals: a webhook that answers an error status, or
// redirects (not followed: the record was not set), or hangs, fails the
// call with the URL, the status and the start of the body.
func TestDNSWebhookRefusals(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then net/http notices the client going away
		switch r.URL.Path {
		case "/locked/present":
			http.Error(w, "zone example.com is locked\n"+strings.Repeat("x", 4096), http.StatusConflict)
		case "/moved/present":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "/hang/present":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	defer srv.Close()
	defer close(release) // before Close, which waits for handlers
	log, sink := newLogger(t)
	for _, tc := range []struct{ base, want string }{
		{"/locked", srv.URL + "/locked/present answered 409 Conflict: zone example.com is locked"},
		{"/moved", srv.URL + "/moved/present answered 302 Found"},
		{"/hang", "killed after tls.dns.timeout (200ms)"},
	} {
		h := &dnsHook{webhook: srv.URL + tc.base, timeout: 200 * time.Millisecond, log: log, client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
		err := h.run(t.Context(), "present", "_acme-challenge.example.com.", "v")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("webhook %s: %v, want an error containing %q", tc.base, err, tc.want)
		} else if len(err.Error()) > 800 {
			t.Errorf("webhook %s: error of %d bytes; the body should be cut", tc.base, len(err.Error()))
		}
	}
	if !sink.has("dns hook killed at its timeout", "fqdn=_acme-challenge.example.com.") {
		t.Error("the hanging webhook was not logged")
	}
}
