package tls

import (
	cryptotls "crypto/tls"
	"sort"
	"time"

	"edge/config"
)

// CertInfo describes the certificate edge serves for one configured name,
// as the admin dashboard shows it.
type CertInfo struct {
	Name string `json:"name"`
	// Source is where it comes from: "acme", "manual" or "local".
	Source string `json:"source"`
	// Issuer is the issuing CA's common name (or organisation); NotAfter
	// its expiry. Both are zero while the name has no certificate yet.
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"not_after,omitzero"`
	// Error is the last ACME failure for a name without a certificate.
	Error string `json:"error,omitempty"`
}

// Certificates returns every configured name's certificate, sorted by
// name. Safe for concurrent use.
func (m *Manager) Certificates() []CertInfo {
	s := m.snap.Load()
	var out []CertInfo
	for _, e := range s.entries() {
		ci := CertInfo{Name: e.name, Source: e.source.String()}
		var c *cryptotls.Certificate
		if e.source == config.SourceACME {
			if mc, ok := m.acmeCert(e.name); ok {
				c = &mc.Certificate
			} else {
				ci.Error = m.failure(e.name)
			}
		} else {
			c = e.slot.Load()
		}
		if c != nil && c.Leaf != nil {
			ci.NotAfter = c.Leaf.NotAfter
			ci.Issuer = c.Leaf.Issuer.CommonName
			if ci.Issuer == "" && len(c.Leaf.Issuer.Organization) > 0 {
				ci.Issuer = c.Leaf.Issuer.Organization[0]
			}
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
