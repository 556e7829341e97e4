package main

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"strings"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"edge/config"
)

// adminHandler serves the admin listener: health, metrics, the hub's publish
// API and stats, reload, and optionally pprof, all behind one adminGuard
// (Host, cross-site and key checks; see adminguard.go).
func (a *app) adminHandler(cfg *config.Config) (http.Handler, error) {
	key := ""
	if cfg.AdminKeyFile != "" {
		b, err := os.ReadFile(cfg.AdminKeyFile)
		if err != nil {
			return nil, fmt.Errorf("admin_key_file: %w", err)
		}
		key = strings.TrimSpace(string(b))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		note, err := a.ready()
		if err != nil {
			http.Error(w, "not ready: "+err.Error()+note, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready"+note)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	hubAPI := a.node.AdminHandler()
	mux.Handle("/publish/", hubAPI)
	mux.Handle("/hub/", hubAPI)
	mux.HandleFunc("POST /-/reload", func(w http.ResponseWriter, r *http.Request) {
		if err := a.reload("admin"); err != nil {
			http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			return
		}
		fmt.Fprintln(w, "reloaded")
	})
	if cfg.Server.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		writePage(w, http.StatusOK, dashboardHTML)
	})
	mux.HandleFunc("GET /-/dashboard.json", a.serveDashboardJSON)
	g := newAdminGuard(cfg.Admin, key, a.log.With("component", "admin"), mux)
	g.loginPage = dashboardHTML
	return g, nil
}

// writePage writes the dashboard page. Its policy allows only its own
// inline code and requests to its own origin, and no framing.
func writePage(w http.ResponseWriter, status int, page []byte) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "+
		"img-src data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	w.Write(page)
}

// ready reports why edge should not get traffic yet, in this order: a
// configured listener is not up, a certificate is missing, the hub's
// broker (Redis) is unreachable. note says that the last reload failed
// and why: the previous configuration still serves, so that alone does not
// make edge unready, but the operator should know.
func (a *app) ready() (note string, err error) {
	a.reloadMu.Lock()
	cfg, tlsm, failed := a.cfg, a.tls, a.reloadErr
	a.reloadMu.Unlock()
	var errs []error
	for _, l := range []struct{ name, addr string }{{"http", cfg.Listen.HTTP}, {"https", cfg.Listen.HTTPS}} {
		if l.addr != "" && a.srv.Addr(l.name) == nil {
			errs = append(errs, fmt.Errorf("listener %s is not up", l.name))
		}
	}
	if tlsm != nil {
		if err := tlsm.Ready(); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Redis != nil {
		if err := a.node.Healthy(); err != nil {
			if !strings.HasPrefix(err.Error(), "hub: ") { // the hub names itself
				err = fmt.Errorf("hub: %w", err)
			}
			errs = append(errs, err)
		}
	}
	if failed != nil {
		note = " (last reload failed: " + strings.ReplaceAll(failed.Error(), "\n", "; ") + ")"
	}
	return note, errors.Join(errs...)
}
