package tls

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/libdns/libdns"

	"edge/config"
)

// dnsHook is edge's libdns provider for certmagic's DNS-01 solver: it
// creates and removes the _acme-challenge TXT records through the
// operator's program (tls.dns.exec, called as lego's exec provider is)
// or webhook (tls.dns.webhook), so that edge needs no code per DNS host.
// Static after construction; safe for concurrent use (certmagic solves
// the challenges of several names at once).
type dnsHook struct {
	exec    string
	webhook string
	timeout time.Duration
	log     *slog.Logger
	client  *http.Client
}

var _ certmagic.DNSProvider = (*dnsHook)(nil)

// newDNSSolver returns the DNS-01 solver for tls.dns.
func newDNSSolver(d *config.DNS, log *slog.Logger, m *Manager) *certmagic.DNS01Solver {
	h := &dnsHook{exec: d.Exec, webhook: d.Webhook, timeout: d.Timeout, log: log.With("dns_hook", d.Exec+d.Webhook),
		client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	pt := d.PropagationTimeout
	if pt < 0 {
		pt = -1 // certmagic: skip the propagation check
	}
	return &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
		DNSProvider:        h,
		PropagationTimeout: pt,
		Resolvers:          d.Resolvers,
		Logger:             m.zlog,
	}}
}

// AppendRecords presents each TXT record: "present FQDN VALUE".
func (h *dnsHook) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return h.each(ctx, "present", zone, recs)
}

// DeleteRecords removes each TXT record: "cleanup FQDN VALUE".
func (h *dnsHook) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	return h.each(ctx, "cleanup", zone, recs)
}

func (h *dnsHook) each(ctx context.Context, action, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	done := make([]libdns.Record, 0, len(recs))
	for _, rec := range recs {
		rr := rec.RR()
		fqdn := libdns.AbsoluteName(rr.Name, zone)
		if !strings.HasSuffix(fqdn, ".") {
			fqdn += "." // lego's exec provider passes the FQDN with its dot
		}
		start := time.Now()
		err := h.run(ctx, action, fqdn, rr.Data)
		if err != nil {
			return done, fmt.Errorf("tls.dns %s %s: %w", action, fqdn, err)
		}
		h.log.Info("dns hook done", "action", action, "fqdn", fqdn, "took", time.Since(start).Round(time.Millisecond))
		parsed, perr := rr.Parse()
		if perr != nil {
			parsed = rr
		}
		done = append(done, parsed)
	}
	return done, nil
}

// errHookTimeout says a hook was stopped at tls.dns.timeout.
var errHookTimeout = errors.New("timed out")

// run runs one hook or webhook call within tls.dns.timeout.
func (h *dnsHook) run(ctx context.Context, action, fqdn, value string) error {
	ctx, cancel := context.WithTimeoutCause(ctx, h.timeout, errHookTimeout)
	defer cancel()
	var err error
	if h.exec != "" {
		err = h.runExec(ctx, action, fqdn, value)
	} else {
		err = h.post(ctx, action, fqdn, value)
	}
	if err != nil && errors.Is(context.Cause(ctx), errHookTimeout) {
		h.log.Warn("dns hook killed at its timeout (tls.dns.timeout)", "action", action, "fqdn", fqdn, "timeout", h.timeout)
		return fmt.Errorf("killed after tls.dns.timeout (%s): %w", h.timeout, err)
	}
	return err
}

// runExec runs the program in its own process group, so that a timeout
// kills what a shell script started too (a sleeping child would otherwise
// keep running, and keep its output pipe open).
func (h *dnsHook) runExec(ctx context.Context, action, fqdn, value string) error {
	cmd := exec.CommandContext(ctx, h.exec, action, fqdn, value)
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if msg := strings.TrimSpace(out.String()); msg != "" {
			return fmt.Errorf("%s: %w: %s", h.exec, err, msg)
		}
		return fmt.Errorf("%s: %w", h.exec, err)
	}
	return nil
}

// post sends {"fqdn": …, "value": …} to webhook/present or webhook/cleanup.
func (h *dnsHook) post(ctx context.Context, action, fqdn, value string) error {
	body, _ := json.Marshal(map[string]string{"fqdn": fqdn, "value": value})
	u := h.webhook + "/" + action
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s answered %s: %s", u, resp.Status, strings.TrimSpace(string(msg)))
	}
	return nil
}

// limitedBuffer keeps the first 1 KiB written to it: enough of a hook's
// output for the error message, bounded whatever the hook prints.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := 1024 - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
