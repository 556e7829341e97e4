package proxy

import (
	"fmt"
	"hash/fnv"
	"math"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/idna"

	"edge/config"
)

// upstream is one server of a route's upstreams.
type upstream struct {
	// Static after construction.
	name        string // as configured: "http://10.0.0.1:9000", "unix:/run/app.sock"
	scheme      string // "http" or "https"
	host        string // URL host the Transport dials; a made-up name for unix sockets
	addr        string // host:port dialled (the port filled in from the scheme)
	sock        string // unix socket path, or ""
	weight      int
	backup      bool
	maxFails    int           // passive health; 0: off
	failTimeout time.Duration // passive health window and down time
	hash        uint64        // of name, for ip_hash

	// active counts requests in flight plus open tunnels, for least_conn.
	active atomic.Int64

	// Guarded by upstreams.mu.
	current   int       // smooth weighted round robin state
	fails     int       // passive failures in the current window
	failStart time.Time // start of the current window
	downUntil time.Time // passive: unavailable until then
	healthy   bool      // active health verdict; true without checks
	hcFails   int       // consecutive failed probes
	hcPasses  int       // consecutive good probes
	failures  uint64    // every failed attempt and probe, for the dashboard
	lastErr   string    // the latest failure's cause and error; "" before any
	lastErrAt time.Time // when lastErr happened
}

// upstreams is the set of a route's servers: it picks one per attempt
// and keeps their health. Safe for concurrent use.
type upstreams struct {
	// Static after construction.
	balance string
	list    []*upstream // in configuration order
	passive bool        // passive health applies: more than one server, as nginx
	now     func() time.Time

	mu   sync.Mutex
	next int // guarded by mu: rotates least_conn ties
}

func newUpstreams(cfg *config.Proxy) (*upstreams, error) {
	p := &upstreams{balance: cfg.Balance, now: time.Now, passive: len(cfg.Upstreams) > 1}
	for i, u := range cfg.Upstreams {
		s, err := newUpstream(i, u, cfg)
		if err != nil {
			return nil, err
		}
		p.list = append(p.list, s)
	}
	if len(p.list) == 0 {
		return nil, fmt.Errorf("no upstreams")
	}
	return p, nil
}

func newUpstream(i int, u config.Upstream, cfg *config.Proxy) (*upstream, error) {
	s := &upstream{name: u.URL, weight: u.Weight, backup: u.Backup, healthy: true}
	// config gives every upstream its weight and the pool's max_fails and
	// fail_timeout unless it sets its own.
	s.maxFails, s.failTimeout = *u.MaxFails, u.FailTimeout
	h := fnv.New64a()
	h.Write([]byte(u.URL))
	s.hash = h.Sum64()
	if sock, ok := config.UnixSocket(u.URL); ok {
		if sock == "" {
			return nil, fmt.Errorf("upstream %q: missing socket path", u.URL)
		}
		// The Transport needs a host to key its connection pool by; the
		// dialer maps this name back to the socket.
		s.scheme, s.host, s.sock = "http", fmt.Sprintf("unix-socket-%d.edge.invalid:80", i), sock
		s.addr = s.host
		return s, nil
	}
	if addr, ok := config.FastCGIAddr(u.URL); ok {
		// A fastcgi route's TCP server: dialled as it is written.
		s.scheme, s.host, s.addr = "http", addr, addr
		return s, nil
	}
	pu, err := url.Parse(u.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %w", u.URL, err)
	}
	if (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return nil, fmt.Errorf("upstream %q: want http://host:port, https://host:port or unix:/path", u.URL)
	}
	s.scheme, s.host = pu.Scheme, pu.Host
	s.addr = dialAddr(pu)
	return s, nil
}

// dialAddr is the address a Transport dials for u: the host in ASCII
// (IDNA) and the port, the scheme's default when u has none.
func dialAddr(u *url.URL) string {
	host := u.Hostname()
	if !printableASCII(host) {
		if a, err := idna.Lookup.ToASCII(host); err == nil {
			host = a
		}
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(host, port)
}

// available reports whether s may get traffic. Called with p.mu held.
func (s *upstream) available(now time.Time) bool {
	return s.healthy && !now.Before(s.downUntil)
}

// pick chooses a server for a request from client, skipping the servers in
// tried. Backup servers are used only when no primary server is available
// (or all were tried), as nginx. It returns nil when none is left.
func (p *upstreams) pick(client netip.Addr, tried []*upstream) *upstream {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, backup := range [2]bool{false, true} {
		eligible := func(s *upstream) bool {
			return s.backup == backup && s.available(now) && !contains(tried, s)
		}
		var s *upstream
		switch p.balance {
		case "first":
			s = p.first(eligible)
		case "least_conn":
			s = p.leastConn(eligible)
		case "ip_hash":
			if client.IsValid() {
				s = p.ipHash(client, eligible)
			} else {
				s = p.roundRobin(eligible)
			}
		default:
			s = p.roundRobin(eligible)
		}
		if s != nil {
			return s
		}
	}
	return nil
}

func contains(list []*upstream, s *upstream) bool {
	for _, t := range list {
		if t == s {
			return true
		}
	}
	return false
}

func (p *upstreams) first(eligible func(*upstream) bool) *upstream {
	for _, s := range p.list {
		if eligible(s) {
			return s
		}
	}
	return nil
}

// roundRobin is nginx's smooth weighted round robin: with weights 5, 1, 1
// it sends a a b a c a a rather than a a a a a b c.
func (p *upstreams) roundRobin(eligible func(*upstream) bool) *upstream {
	var best *upstream
	total := 0
	for _, s := range p.list {
		if !eligible(s) {
			continue
		}
		s.current += s.weight
		total += s.weight
		if best == nil || s.current > best.current {
			best = s
		}
	}
	if best != nil {
		best.current -= total
	}
	return best
}

// leastConn picks the server with the fewest active requests and tunnels
// per weight; ties rotate so that an idle pool is used evenly.
func (p *upstreams) leastConn(eligible func(*upstream) bool) *upstream {
	var best *upstream
	var bestActive int64
	n := len(p.list)
	start := p.next % n
	p.next++
	for i := range n {
		s := p.list[(start+i)%n]
		if !eligible(s) {
			continue
		}
		a := s.active.Load()
		// a/s.weight < bestActive/best.weight without division.
		if best == nil || a*int64(best.weight) < bestActive*int64(s.weight) {
			best, bestActive = s, a
		}
	}
	return best
}

// ipHash picks by weighted rendezvous hashing of the client address: each
// server scores every client, the highest score wins. A client therefore
// stays on its server while that server is up, moves only when it goes
// down, and comes back when it returns; every edge node computes the same
// choice, because the hash depends only on the address and the server URL.
func (p *upstreams) ipHash(client netip.Addr, eligible func(*upstream) bool) *upstream {
	h := fnv.New64a()
	b := client.Unmap().AsSlice()
	h.Write(b)
	key := h.Sum64()
	var best *upstream
	bestScore := math.Inf(-1)
	for _, s := range p.list {
		if !eligible(s) {
			continue
		}
		if score := rendezvousScore(key, s.hash, s.weight); best == nil || score > bestScore {
			best, bestScore = s, score
		}
	}
	return best
}

// rendezvousScore is weight / -ln(u) with u uniform in (0,1) drawn from
// the two hashes, so that a server of weight 2 wins twice as many clients.
func rendezvousScore(key, server uint64, weight int) float64 {
	x := mix64(key ^ server)
	u := (float64(x>>11) + 0.5) / (1 << 53)
	return float64(weight) / -math.Log(u)
}

// mix64 is the SplitMix64 finaliser: it spreads every input bit over the
// whole output.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// fail records a passive failure of s: max_fails failures within
// fail_timeout mark it down for fail_timeout. It reports whether s was just
// marked down.
func (p *upstreams) fail(s *upstream) bool {
	if !p.passive || s.maxFails <= 0 {
		return false
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if now.Sub(s.failStart) > s.failTimeout {
		s.failStart, s.fails = now, 0
	}
	s.fails++
	if s.fails < s.maxFails {
		return false
	}
	s.fails, s.failStart = 0, time.Time{}
	s.downUntil = now.Add(s.failTimeout)
	return true
}

// probed records an active health check result and reports whether the
// server's verdict changed, and the new verdict.
func (p *upstreams) probed(s *upstream, ok bool, fails, passes int) (changed, healthy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		s.hcFails = 0
		s.hcPasses++
		if !s.healthy && s.hcPasses >= passes {
			s.healthy = true
			return true, true
		}
		return false, s.healthy
	}
	s.hcPasses = 0
	s.hcFails++
	if s.healthy && s.hcFails >= fails {
		s.healthy = false
		return true, false
	}
	return false, s.healthy
}

// up reports whether s is available now.
func (p *upstreams) up(s *upstream) bool {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.available(now)
}

// noteError records a failed attempt or probe of s for Upstreams: the
// count, and the latest error with its time.
func (p *upstreams) noteError(s *upstream, msg string) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	s.failures++
	s.lastErr, s.lastErrAt = msg, now
}

// UpstreamState is one upstream server's health as the admin dashboard
// shows it.
type UpstreamState struct {
	Name   string `json:"name"`
	Backup bool   `json:"backup"`
	// Up reports whether the server gets traffic now: not down by passive
	// (max_fails) or active (health_check) health.
	Up bool `json:"up"`
	// Active is the number of requests in flight and open tunnels.
	Active int64 `json:"active"`
	// Failures counts failed attempts and failed health probes since the
	// route was built (a reload starts again from 0).
	Failures  uint64    `json:"failures"`
	LastError string    `json:"last_error,omitempty"`
	LastErrAt time.Time `json:"last_error_at,omitzero"`
}

// Upstreams returns the state of the route's servers, in configuration
// order. Safe for concurrent use.
func (h *Handler) Upstreams() []UpstreamState {
	p := h.upstreams
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]UpstreamState, 0, len(p.list))
	for _, s := range p.list {
		out = append(out, UpstreamState{
			Name: s.name, Backup: s.backup, Up: s.available(now), Active: s.active.Load(),
			Failures: s.failures, LastError: s.lastErr, LastErrAt: s.lastErrAt,
		})
	}
	return out
}
