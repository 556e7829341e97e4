package tls

import (
	cryptotls "crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/mholt/acmez/v3"

	"edge/config"
)

// Handshake failures. The client sees a TLS alert; the log and the
// edge_tls_handshake_failures_total metric say which of these it was.
var (
	errNoSNI       = errors.New("client sent no server name (SNI) and no default certificate is configured (tls.default_cert)")
	errUnknownName = errors.New("no site has this name")
	errNotReady    = errors.New("certificate not obtained yet (see the ACME errors logged before)")
	errNoALPN      = errors.New("ACME TLS-ALPN-01 challenge is turned off")
)

// aeadSuites are the TLS 1.2 suites offered: ECDHE for forward secrecy,
// AEAD only (no CBC: LUCKY13 and friends). TLS 1.3 suites are all AEAD and
// not configurable.
var aeadSuites = []uint16{
	cryptotls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	cryptotls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	cryptotls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	cryptotls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	cryptotls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	cryptotls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// TLSConfig returns the configuration for the https listener: TLS 1.2 at
// least, AEAD ECDHE suites for TLS 1.2, ALPN h2 and http/1.1 (and
// acme-tls/1 for the TLS-ALPN-01 challenge), and GetCertificate choosing
// among manual, local-CA, ACME and on-demand certificates. A client
// without SNI, or asking for a name no site has, fails the handshake
// unless tls.default_cert is set.
//
// Every call returns the same *Config, which stays valid across Update:
// do not modify it (Clone it). Session ticket keys are left to crypto/tls,
// which makes a random key at start and rotates it every 24 hours,
// accepting tickets for 7 days; they are never written to disk. With
// tls.storage redis the keys are shared by every node instead (see
// tickets.go), so that a session resumes on any node.
func (m *Manager) TLSConfig() *cryptotls.Config { return m.tlsConfig }

func (m *Manager) newTLSConfig() *cryptotls.Config {
	c := &cryptotls.Config{
		MinVersion:     cryptotls.VersionTLS12,
		CipherSuites:   aeadSuites,
		NextProtos:     []string{"h2", "http/1.1", acmez.ACMETLS1Protocol},
		GetCertificate: m.getCertificate,
	}
	if tc := m.ticketCfg; tc != nil {
		// Tickets are sealed with the keys shared through Redis, kept in
		// ticketCfg. Hooks rather than SetSessionTicketKeys on c: servers
		// Clone c, and a clone would keep the keys of the moment.
		c.WrapSession = tc.EncryptTicket
		c.UnwrapSession = tc.DecryptTicket
	}
	return c
}

// getCertificate is the GetCertificate callback.
func (m *Manager) getCertificate(hello *cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
	s := m.snap.Load()
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmez.ACMETLS1Protocol {
		return m.challengeCert(s, hello)
	}
	name := config.HostName(hello.ServerName)
	var e *entry
	if name == "" {
		// Clients send no SNI for IP addresses: find the certificate by
		// the address the client connected to.
		if ip := localIP(hello.Conn); ip != "" {
			e = s.exact[ip]
		}
	} else {
		e = s.lookup(name)
	}
	if e != nil {
		return m.certOf(e, hello)
	}
	if name != "" && s.onDemand != nil {
		if c, err := m.onDemandCert(s, hello, name); c != nil || err != nil {
			return c, err
		}
	}
	if s.fallback != nil {
		return m.certOf(s.fallback, hello)
	}
	// Returning no certificate and no error makes crypto/tls answer with
	// the unrecognized_name alert (RFC 6066), which tells the client what
	// went wrong better than an internal_error would.
	if name == "" {
		m.met.handshakeFailure("no_sni")
		m.log.Debug("TLS handshake refused", "remote_addr", remoteAddr(hello), "err", errNoSNI)
		return nil, nil
	}
	m.met.handshakeFailure("unknown_name")
	m.log.Debug("TLS handshake refused", "server_name", name, "remote_addr", remoteAddr(hello), "err", errUnknownName)
	return nil, nil
}

// certOf returns the current certificate of a configured name.
func (m *Manager) certOf(e *entry, hello *cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
	if e.source != config.SourceACME {
		if c := e.slot.Load(); c != nil {
			return c, nil
		}
		m.met.handshakeFailure("not_ready")
		m.logThrottled("notready:"+e.name, slog.LevelWarn, "TLS handshake refused", "server_name", e.name, "remote_addr", remoteAddr(hello), "err", "local CA not available yet")
		return nil, fmt.Errorf("%q: local CA not available yet", e.name)
	}
	if mg := m.magic.Load(); mg != nil {
		h := *hello
		h.ServerName = e.name // a default certificate is looked up by its own name
		if c, err := mg.managed.GetCertificate(&h); err == nil {
			return c, nil
		}
	}
	m.met.handshakeFailure("not_ready")
	args := []any{"server_name", e.name, "remote_addr", remoteAddr(hello), "err", errNotReady}
	if f := m.failure(e.name); f != "" {
		args = append(args, "last_attempt", f)
	}
	m.logThrottled("notready:"+e.name, slog.LevelWarn, "TLS handshake refused", args...)
	return nil, fmt.Errorf("%q: %w", e.name, errNotReady)
}

// challengeCert answers an ACME TLS-ALPN-01 validation (RFC 8737).
func (m *Manager) challengeCert(s *snapshot, hello *cryptotls.ClientHelloInfo) (*cryptotls.Certificate, error) {
	mg := m.magic.Load()
	if mg == nil || !*s.cfg.TLS.TLSALPNChallenge {
		return nil, errNoALPN
	}
	return mg.managed.GetCertificate(hello)
}

// onDemandCert asks certmagic for a certificate of an unlisted name; its
// DecisionFunc applies the allow list or ask URL. nil, nil means "not
// for on-demand": fall through to the default certificate.
func (m *Manager) onDemandCert(s *snapshot, hello *cryptotls.ClientHelloInfo, name string) (*cryptotls.Certificate, error) {
	mg := m.magic.Load()
	if mg == nil || mg.onDemand == nil || !s.onDemand.allowedShape(name) {
		return nil, nil
	}
	c, err := mg.onDemand.GetCertificate(hello)
	if err != nil {
		m.met.handshakeFailure("on_demand")
		m.logThrottled("ondemand:"+name, slog.LevelInfo, "on-demand certificate refused", "server_name", name, "remote_addr", remoteAddr(hello), "err", err)
		if s.fallback != nil {
			return nil, nil
		}
		return nil, err
	}
	return c, nil
}

func localIP(c net.Conn) string {
	if c == nil {
		return ""
	}
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return ""
	}
	return ap.Addr().Unmap().WithZone("").String()
}

func remoteAddr(hello *cryptotls.ClientHelloInfo) string {
	if hello.Conn == nil {
		return ""
	}
	return hello.Conn.RemoteAddr().String()
}
