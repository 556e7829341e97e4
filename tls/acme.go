package tls

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
)

// magicState is the certmagic side of a running Manager. It is immutable;
// Update replaces it when issuer settings change, keeping the cache.
type magicState struct {
	cache    *certmagic.Cache
	managed  *certmagic.Config // names listed in sites
	issuer   *certmagic.ACMEIssuer
	onDemand *certmagic.Config // unlisted names at first handshake; nil: off
	key      string            // issuerKey of the settings it was made from
}

// newMagic makes the certmagic configurations for s on cache.
func (m *Manager) newMagic(cache *certmagic.Cache, s *snapshot) *magicState {
	mg := &magicState{cache: cache, key: issuerKey(s)}
	mg.managed, mg.issuer = m.newMagicConfig(cache, s, nil)
	if s.onDemand != nil {
		mg.onDemand, _ = m.newMagicConfig(cache, s, &certmagic.OnDemandConfig{DecisionFunc: s.onDemand.decide})
	}
	return mg
}

func (m *Manager) newMagicConfig(cache *certmagic.Cache, s *snapshot, od *certmagic.OnDemandConfig) (*certmagic.Config, *certmagic.ACMEIssuer) {
	mc := certmagic.New(cache, certmagic.Config{
		Storage:            m.storage.forCertmagic(),
		Logger:             m.zlog,
		RenewalWindowRatio: m.opts.renewalRatio, // 0: certmagic's default, renew with a third of the lifetime left
		OnDemand:           od,
		OnEvent:            m.onEvent(od != nil),
		ShouldEmitFunc:     wantEvent,
	})
	iss := certmagic.NewACMEIssuer(mc, m.issuerTemplate(s))
	mc.Issuers = []certmagic.Issuer{iss}
	return mc, iss
}

// issuerTemplate turns tls.* into certmagic's ACMEIssuer settings.
func (m *Manager) issuerTemplate(s *snapshot) certmagic.ACMEIssuer {
	c := s.cfg
	t := &c.TLS
	httpHost, httpPort := splitListen(c.Listen.HTTP)
	httpsHost, httpsPort := splitListen(c.Listen.HTTPS)
	host := httpHost
	if c.Listen.HTTP == "" {
		host = httpsHost
	}
	iss := certmagic.ACMEIssuer{
		CA:           t.DirectoryURL(),
		Email:        t.Email,
		Agreed:       true, // configuring a CA is agreeing to its terms; there is nobody to ask
		Profile:      t.Profile,
		TrustedRoots: s.roots,
		// certmagic binds these ports to solve a challenge itself when
		// nothing listens there; edge's own listeners are there, and
		// answer through HTTPHandler and TLSConfig.
		DisableHTTPChallenge:    !*t.HTTPChallenge || c.Listen.HTTP == "",
		DisableTLSALPNChallenge: !*t.TLSALPNChallenge || c.Listen.HTTPS == "",
		ListenHost:              host,
		AltHTTPPort:             httpPort,
		AltTLSALPNPort:          httpsPort,
		Logger:                  m.zlog,
	}
	if t.DNS != nil {
		// certmagic then solves DNS-01 only, for every name.
		iss.DNS01Solver = newDNSSolver(t.DNS, m.log, m)
	}
	switch {
	case t.EAB != nil:
		iss.ExternalAccount = &acme.EAB{KeyID: t.EAB.KeyID, MACKey: t.EAB.MACKey}
	case t.CA == "zerossl":
		iss.NewAccountFunc = zeroSSLEAB
	}
	return iss
}

// splitListen returns the host and port of a listen address; 0 when it
// has none.
func splitListen(addr string) (string, int) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// issuerKey captures the settings that need new certmagic configurations
// when they change on Update.
func issuerKey(s *snapshot) string {
	c := s.cfg
	t := &c.TLS
	k := fmt.Sprintf("%s|%s|%s|%s|%v|%v|%s|%s", t.DirectoryURL(), t.Email, t.CARoot, t.Profile,
		*t.HTTPChallenge, *t.TLSALPNChallenge, c.Listen.HTTP, c.Listen.HTTPS)
	if t.EAB != nil {
		k += "|" + t.EAB.KeyID + "|" + t.EAB.MACKey
	}
	if d := t.DNS; d != nil {
		k += fmt.Sprintf("|dns:%s|%s|%s|%s|%v", d.Exec, d.Webhook, d.Timeout, d.PropagationTimeout, d.Resolvers)
	}
	if od := t.OnDemand; od != nil {
		k += fmt.Sprintf("|%v|%s|%d|%s", od.Allow, od.Ask, od.RateLimit, od.RateWindow)
	}
	return k
}

// configForCert is the cache's GetConfigForCert: certificates of listed
// names are managed by the managed config, the others were obtained on
// demand.
func (m *Manager) configForCert(c certmagic.Certificate) (*certmagic.Config, error) {
	mg := m.magic.Load()
	if mg == nil {
		return nil, errors.New("tls: certificate management not running")
	}
	if mg.onDemand != nil {
		s := m.snap.Load()
		if !slices.ContainsFunc(c.Names, func(n string) bool { return s.acme[n] }) {
			return mg.onDemand, nil
		}
	}
	return mg.managed, nil
}

// cached returns the newest unexpired certificate in the cache issued for
// exactly name.
func (mg *magicState) cached(name string) (certmagic.Certificate, bool) {
	var best certmagic.Certificate
	found := false
	for _, c := range mg.cache.AllMatchingCertificates(name) {
		if c.Leaf == nil || c.Expired() || !slices.Contains(c.Names, name) {
			continue
		}
		if !found || c.Leaf.NotAfter.After(best.Leaf.NotAfter) {
			best, found = c, true
		}
	}
	return best, found
}

func wantEvent(event string) bool {
	return event == "cert_obtaining" || event == "cert_obtained" || event == "cert_failed"
}

var errOnDemandRate = errors.New("tls.on_demand.rate_limit reached")

// onEvent receives certmagic's events: metrics, a log line an operator
// can act on (certmagic logs the details), the on-demand rate limit.
func (m *Manager) onEvent(onDemand bool) func(ctx context.Context, event string, data map[string]any) error {
	return func(ctx context.Context, event string, data map[string]any) error {
		if m.opts.onEvent != nil {
			defer m.opts.onEvent(event, data) // after the log line and metrics
		}
		name, _ := data["identifier"].(string)
		renewal, _ := data["renewal"].(bool)
		switch event {
		case "cert_obtaining":
			if od := m.snap.Load().onDemand; onDemand && !renewal && od != nil && !od.limiter.Allow() {
				m.met.issuanceError(renewal, "on_demand_rate_limited")
				m.log.Warn("on-demand certificate refused", "name", name, "err", errOnDemandRate)
				return certmagic.ErrNoRetry{Err: errOnDemandRate}
			}
		case "cert_obtained":
			m.setFailure(name, "")
			m.met.issued("acme", renewal)
			m.log.Info("certificate obtained", "name", name, "renewal", renewal, "issuer", data["issuer"])
		case "cert_failed":
			err, _ := data["error"].(error)
			if err == nil {
				err = errors.New("unknown error")
			}
			if errors.Is(err, context.Canceled) {
				// Shutdown, or a reload restarting the attempt.
				m.log.Debug("certificate request cancelled", "name", name, "renewal", renewal)
				break
			}
			if !renewal {
				m.setFailure(name, err.Error())
			}
			var p acme.Problem
			if errors.As(err, &p) && p.Type == acme.ProblemTypeRateLimited {
				m.met.issuanceError(renewal, "rate_limited")
				m.log.Warn("ACME CA rate limit hit; retrying with backoff", "name", name, "renewal", renewal, "detail", p.Detail)
				break
			}
			m.met.issuanceError(renewal, "error")
			m.log.Error("certificate request failed; retrying with backoff, a still-valid certificate keeps being served", "name", name, "renewal", renewal, "err", err)
		}
		return nil
	}
}

// allowedShape reports whether name could be issued on demand at all:
// public CAs issue for neither local names nor single labels.
func (od *onDemand) allowedShape(name string) bool {
	return strings.Contains(name, ".") && !od.tls.IsLocalName(name)
}

// decide is certmagic's OnDemand DecisionFunc: the allow list, then the
// ask URL.
func (od *onDemand) decide(ctx context.Context, name string) error {
	if !od.allowedShape(name) {
		return fmt.Errorf("%s is not a public name", name)
	}
	for _, a := range od.allow {
		if a == name {
			return nil
		}
		// "*.example.com" allows one label, as a wildcard certificate would.
		if suffix, ok := strings.CutPrefix(a, "*"); ok && strings.HasSuffix(name, suffix) && !strings.Contains(strings.TrimSuffix(name, suffix), ".") {
			return nil
		}
	}
	if od.ask == "" {
		return fmt.Errorf("%s is not in tls.on_demand.allow", name)
	}
	return askAllows(ctx, od.ask, name)
}

var askClient = &http.Client{
	Timeout: 10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // the answer is the status code of the ask URL itself
	},
}

// askAllows queries the ask URL with ?domain=name: 200 allows.
func askAllows(ctx context.Context, ask, name string) error {
	u, err := url.Parse(ask)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("domain", name)
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := askClient.Do(req)
	if err != nil {
		return fmt.Errorf("tls.on_demand.ask: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("tls.on_demand.ask answered %d for %s", resp.StatusCode, name)
	}
	return nil
}

// zeroSSLEABEndpoint gives External Account Binding credentials for an
// email address, so that ZeroSSL works with just tls.email.
var zeroSSLEABEndpoint = "https://api.zerossl.com/acme/eab-credentials-email"

// zeroSSLEAB is the issuer's NewAccountFunc for ZeroSSL without tls.eab.
// certmagic calls it with the issuer locked, before registering.
func zeroSSLEAB(ctx context.Context, iss *certmagic.ACMEIssuer, acct acme.Account) (acme.Account, error) {
	if iss.ExternalAccount != nil {
		return acct, nil
	}
	form := url.Values{"email": {iss.Email}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, zeroSSLEABEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return acct, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return acct, fmt.Errorf("zerossl eab credentials: %w", err)
	}
	defer resp.Body.Close()
	var res struct {
		Success bool `json:"success"`
		Error   struct {
			Code int    `json:"code"`
			Type string `json:"type"`
		} `json:"error"`
		KeyID  string `json:"eab_kid"`
		MACKey string `json:"eab_hmac_key"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return acct, fmt.Errorf("zerossl eab credentials: HTTP %d: %w", resp.StatusCode, err)
	}
	if !res.Success || res.KeyID == "" || res.MACKey == "" {
		return acct, fmt.Errorf("zerossl eab credentials: HTTP %d: %s (code %d)", resp.StatusCode, res.Error.Type, res.Error.Code)
	}
	iss.ExternalAccount = &acme.EAB{KeyID: res.KeyID, MACKey: res.MACKey}
	return acct, nil
}
