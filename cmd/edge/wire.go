package main

import (
	"context"
	"fmt"
	"net/http"

	"edge/access"
	"edge/config"
	"edge/fastcgi"
	"edge/proxy"
	"edge/respond"
	"edge/server"
	"edge/static"
	edgetls "edge/tls"
)

// build makes the handlers and listener specs of cfg. Nothing is started or
// bound: a failure leaves the running generation alone.
func (a *app) build(cfg *config.Config, tlsm *edgetls.Manager) (*generation, []server.Listener, error) {
	ctx, cancel := context.WithCancel(a.ctx)
	gen := &generation{ctx: ctx, cancel: cancel}
	b := &builder{a: a, gen: gen, built: map[*config.Route]http.Handler{}}
	router, err := server.NewRouter(cfg, b.route, a.stats)
	if err != nil {
		gen.retire()
		return nil, nil, err
	}
	context.AfterFunc(ctx, router.Close) // its access-log files, when the generation is retired
	var specs []server.Listener
	if cfg.Listen.HTTPS != "" {
		specs = append(specs, server.Listener{Name: "https", Addr: cfg.Listen.HTTPS, TLS: tlsm.TLSConfig(), Handler: tlsm.Secure(router), HTTP3: cfg.Listen.HTTP3})
	}
	if cfg.Listen.HTTP != "" {
		var h http.Handler = router
		if cfg.Listen.HTTPS != "" {
			h = tlsm.HTTPHandler(router, httpsPort(cfg.Listen.HTTPS))
		}
		specs = append(specs, server.Listener{Name: "http", Addr: cfg.Listen.HTTP, Handler: h})
	}
	if cfg.Admin != "" {
		admin, err := a.adminHandler(cfg)
		if err != nil {
			gen.retire()
			return nil, nil, err
		}
		specs = append(specs, server.Listener{Name: "admin", Addr: cfg.Admin, Handler: admin, Uncapped: true})
	}
	return gen, specs, nil
}

// builder makes route handlers for one generation.
type builder struct {
	a     *app
	gen   *generation
	built map[*config.Route]http.Handler // so a fallback route shares its handler
}

func (b *builder) route(site *config.Site, r *config.Route) (http.Handler, error) {
	if h, ok := b.built[r]; ok {
		return h, nil
	}
	var h http.Handler
	var err error
	switch {
	case r.Static != nil:
		h, err = b.static(site, r)
	case r.Proxy != nil:
		h, err = b.proxy(site, r.Path, r.Proxy)
	case r.FastCGI != nil:
		h, err = b.fastcgi(site, r.Path, r.FastCGI)
	case r.Hub != nil:
		// Hub routes are keyed by path on the node: clients of a path that
		// stays configured stay connected across reloads.
		h = b.a.node.Route(r.Path, r.Hub, site.Hosts)
		b.gen.hubKeys = append(b.gen.hubKeys, r.Path)
	case r.Redirect != nil:
		h = respond.Redirect(r.Redirect)
	case r.Respond != nil:
		h = respond.Fixed(r.Respond)
	default:
		err = fmt.Errorf("route has no handler")
	}
	if err != nil {
		return nil, err
	}
	// Refused clients are counted against their limit first, as nginx's
	// limit_req runs before its access phase.
	h = access.Limit(access.Guard(h, site, r), r.Limit)
	b.built[r] = h
	return h, nil
}

func (b *builder) static(site *config.Site, r *config.Route) (http.Handler, error) {
	var fallback http.Handler
	opts := []static.Option{static.WithRegisterer(b.a.reg, site.Name())}
	if fb := r.Static.Fallback; fb != nil {
		var err error
		if fb.Proxy != nil {
			fallback, err = b.proxy(site, r.Path, fb.Proxy)
		} else {
			fr := siteRoute(site, fb.Route)
			fallback, err = b.route(site, fr)
			if fr.FastCGI != nil {
				// Scripts run, never served as files.
				opts = append(opts, static.WithScripts(fr.FastCGI.SplitPath))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("fallback: %w", err)
		}
	}
	return static.New(r.Path, r.Static, fallback, b.a.log.With("component", "static", "route", r.Path), opts...)
}

func siteRoute(site *config.Site, path string) *config.Route {
	for i := range site.Routes {
		if site.Routes[i].Path == path {
			return &site.Routes[i]
		}
	}
	return nil // config validation guarantees it exists
}

// proxy builds a proxy handler of site's route at path (a proxy route, or
// the proxy fallback of a static route), labelled {site, route} as the
// server labels the route's requests.
func (b *builder) proxy(site *config.Site, path string, pc *config.Proxy) (http.Handler, error) {
	return b.newProxy(site, path, pc, nil)
}

func (b *builder) newProxy(site *config.Site, path string, pc *config.Proxy,
	transport func(proxy.DialFunc) proxy.RoundTripper) (*proxy.Handler, error) {
	p, err := proxy.New(pc, proxy.Options{
		Log:        b.a.log.With("component", "proxy"),
		Registerer: b.a.reg,
		Site:       site.Name(),
		Route:      path,
		Tunnels:    &b.a.tunnels,
		Transport:  transport,
	})
	if err != nil {
		return nil, err
	}
	b.gen.proxies = append(b.gen.proxies, p)
	b.gen.pools = append(b.gen.pools, pool{site: site.Name(), route: path, h: p})
	return p, nil
}

// fastcgi builds a fastcgi route: the proxy handler of its pool with the
// FastCGI client as its transport, behind the script lookup.
func (b *builder) fastcgi(site *config.Site, path string, fc *config.FastCGI) (http.Handler, error) {
	log := b.a.log.With("component", "fastcgi", "site", site.Name(), "route", path)
	p, err := b.newProxy(site, path, fc.Pool, func(dial proxy.DialFunc) proxy.RoundTripper {
		return fastcgi.NewTransport(fc, fastcgi.DialFunc(dial), log)
	})
	if err != nil {
		return nil, err
	}
	return fastcgi.Scripts(fc, p), nil
}
