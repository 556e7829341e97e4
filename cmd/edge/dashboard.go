package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"edge/config"
	"edge/hub"
	"edge/proxy"
	"edge/server"
	edgetls "edge/tls"
)

// dashboardHTML is the admin dashboard at / on the admin listener: one
// page with inline CSS and JavaScript (no build step, no external
// assets) that polls /-/dashboard.json every second.
//
//go:embed dashboard.html
var dashboardHTML []byte

// reloadEvent is one entry of the reload history the dashboard shows.
type reloadEvent struct {
	At    time.Time `json:"at"`
	By    string    `json:"by"` // "start", "signal" or "admin"
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// reloadLog keeps the last reloads, newest last. Safe for concurrent use.
type reloadLog struct {
	mu     sync.Mutex
	events []reloadEvent // guarded by mu; at most maxReloadEvents
}

const maxReloadEvents = 10

func (l *reloadLog) add(by string, err error) {
	e := reloadEvent{At: time.Now(), By: by, OK: err == nil}
	if err != nil {
		e.Error = err.Error()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, e)
	if len(l.events) > maxReloadEvents {
		l.events = l.events[len(l.events)-maxReloadEvents:]
	}
}

func (l *reloadLog) list() []reloadEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]reloadEvent(nil), l.events...)
}

// pool is a proxy handler of a generation with the site and route it
// serves, for the dashboard's upstream table.
type pool struct {
	site, route string
	h           *proxy.Handler
}

// dashboard is what GET /-/dashboard.json returns: the process's live
// numbers, read from the components' own accessors. Counters are totals
// since start; the page turns them into rates.
type dashboard struct {
	Time        time.Time           `json:"time"`
	Version     string              `json:"version"`
	Started     time.Time           `json:"started"`
	Config      string              `json:"config"`
	Connections dashConns           `json:"connections"`
	Routes      []server.RouteStats `json:"routes"`
	Upstreams   []dashPool          `json:"upstreams"`
	Hub         dashHub             `json:"hub"`
	Certs       []edgetls.CertInfo  `json:"certificates"`
	Reloads     []reloadEvent       `json:"reloads"`
	Sites       []dashSite          `json:"sites"`
}

type dashConns struct {
	Open     int   `json:"open"`      // client connections on the site listeners
	InFlight int64 `json:"in_flight"` // requests being served
	Tunnels  int   `json:"tunnels"`   // proxied upgraded connections
	Hub      int64 `json:"hub"`       // hub WebSocket and SSE clients
}

type dashPool struct {
	Site    string                `json:"site"`
	Route   string                `json:"route"`
	Servers []proxy.UpstreamState `json:"servers"`
}

type dashHub struct {
	Broker     string            `json:"broker"` // "memory" or "redis"
	Redis      string            `json:"redis,omitempty"`
	Healthy    bool              `json:"healthy"`
	Health     string            `json:"health,omitempty"`
	Reconnects uint64            `json:"reconnects"`
	Lost       uint64            `json:"lost"`
	Published  uint64            `json:"published"`
	Dropped    uint64            `json:"dropped"`
	Local      hub.Presence      `json:"local"`
	Cluster    *hub.Presence     `json:"cluster,omitempty"`
	Messages   map[string]uint64 `json:"messages"`
}

type dashSite struct {
	Name   string      `json:"name"`
	Hosts  []string    `json:"hosts"`
	Routes []dashRoute `json:"routes"`
}

type dashRoute struct {
	Path    string `json:"path"`
	Handler string `json:"handler"`
	Target  string `json:"target"`
}

// serveDashboardJSON writes the dashboard's data.
func (a *app) serveDashboardJSON(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	d := a.dashboardData(ctx)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(d)
}

func (a *app) dashboardData(ctx context.Context) dashboard {
	a.reloadMu.Lock()
	cfg, gen, tlsm := a.cfg, a.gen, a.tls
	a.reloadMu.Unlock()
	ver, _ := buildInfo()
	d := dashboard{
		Time: time.Now(), Version: ver, Started: a.started, Config: a.path,
		Connections: dashConns{Open: a.srv.OpenConns(), InFlight: a.stats.InFlight(), Tunnels: a.tunnels.Len()},
		Routes:      a.stats.Routes(),
		Reloads:     a.reloads.list(),
	}
	if gen != nil {
		for _, p := range gen.pools {
			d.Upstreams = append(d.Upstreams, dashPool{Site: p.site, Route: p.route, Servers: p.h.Upstreams()})
		}
	}
	if tlsm != nil {
		d.Certs = tlsm.Certificates()
	}
	st := a.node.Stats(ctx)
	d.Connections.Hub = st.Connections
	d.Hub = dashHub{
		Broker: st.Broker, Healthy: st.Healthy, Health: st.Health, Reconnects: st.Reconnects,
		Lost: st.BrokerLost, Published: st.Published, Dropped: st.Dropped,
		Local: st.Local, Cluster: st.Cluster, Messages: a.node.ChannelMessages(),
	}
	if cfg.Redis != nil {
		d.Hub.Redis = redactURL(cfg.Redis.URL)
	}
	for i := range cfg.Sites {
		s := &cfg.Sites[i]
		ds := dashSite{Name: s.Name(), Hosts: s.Hosts}
		for _, rt := range s.Routes {
			h, t := describeRoute(&rt)
			ds.Routes = append(ds.Routes, dashRoute{Path: rt.Path, Handler: h, Target: t})
		}
		d.Sites = append(d.Sites, ds)
	}
	return d
}

// describeRoute names a route's handler and what it serves, in a few
// words.
func describeRoute(r *config.Route) (handler, target string) {
	upstreams := func(us []config.Upstream) string {
		var names []string
		for _, u := range us {
			names = append(names, u.URL)
		}
		return strings.Join(names, " ")
	}
	switch {
	case r.Static != nil:
		if r.Static.Alias != "" {
			return "static", "alias " + r.Static.Alias
		}
		return "static", r.Static.Root
	case r.Proxy != nil:
		return "proxy", upstreams(r.Proxy.Upstreams)
	case r.FastCGI != nil:
		return "fastcgi", upstreams(r.FastCGI.Upstreams)
	case r.Hub != nil:
		if len(r.Hub.Channels) == 0 {
			return "hub", "any channel"
		}
		return "hub", strings.Join(r.Hub.Channels, " ")
	case r.Redirect != nil:
		return "redirect", r.Redirect.To
	case r.Respond != nil:
		return "respond", fmt.Sprint(r.Respond.Status)
	}
	return "", ""
}

// redactURL drops the password from a Redis URL.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	return u.Redacted()
}
