package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"
)

// Run probes the upstream servers with the route's health_check until ctx
// is done or Close is called, then returns nil. Without a health_check it
// just waits. Servers start healthy; fails consecutive bad probes take one
// out of the rotation, passes good ones bring it back.
func (h *Handler) Run(ctx context.Context) error {
	h.mu.Lock()
	if h.closed.Load() {
		h.mu.Unlock()
		return nil
	}
	h.runWG.Add(1)
	h.mu.Unlock()
	defer h.runWG.Done()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // ends with Run: ctx is cancelled on return

		select {
		case <-h.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	hc := h.cfg.HealthCheck
	if hc == nil {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(hc.Interval)
	defer tick.Stop()
	for {
		h.probeAll(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// probeAll probes every server at once and waits for the results.
func (h *Handler) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for _, s := range h.upstreams.list {
		wg.Go(func() { h.probe(ctx, s) })
	}
	wg.Wait()
}

func (h *Handler) probe(runCtx context.Context, s *upstream) {
	hc := h.cfg.HealthCheck
	ctx, cancel := context.WithTimeout(runCtx, hc.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.scheme+"://"+s.host+hc.Path, nil)
	if err != nil {
		return
	}
	switch {
	case h.cfg.Host != "":
		req.Host = h.cfg.Host
	case s.sock != "":
		req.Host = "localhost"
	}
	req.Header.Set("User-Agent", "edge-health-check")
	res, err := h.transport.RoundTrip(req)
	if err != nil && runCtx.Err() != nil {
		return // Run is stopping: no verdict
	}
	ok := err == nil && statusOK(res.StatusCode, hc.Status)
	status := 0
	if err == nil {
		status = res.StatusCode
		io.CopyN(io.Discard, res.Body, 64<<10) // let the connection be reused
		res.Body.Close()
	}
	changed, healthy := h.upstreams.probed(s, ok, hc.Fails, hc.Passes)
	if !ok {
		msg := fmt.Sprintf("health check: status %d", status)
		if err != nil {
			msg = "health check: " + err.Error()
		}
		h.upstreams.noteError(s, msg)
	}
	switch {
	case changed && healthy:
		h.log.Info("upstream healthy again", "upstream", s.name)
	case changed:
		h.log.Warn("upstream failed health check", "upstream", s.name, "status", status, "err", err)
	}
}

func statusOK(got, want int) bool {
	if want != 0 {
		return got == want
	}
	return got >= 200 && got < 400
}
