package tls

import (
	"net"
	"net/http"
	"net/url"
	"strings"

	"edge/config"
)

// HTTPHandler returns the handler for the plain-HTTP listener. It answers
// ACME HTTP-01 challenges (for this node or, with shared storage, any
// node), and redirects every other request to HTTPS with 308 (which keeps
// the method and body), keeping host, path and query; httpsPort is the
// port of the https listener, left out of the URL when it is 443 or "".
// Requests for sites with http_redirect: false, for hosts no site has, or
// when the https listener is off, go to next.
func (m *Manager) HTTPHandler(next http.Handler, httpsPort string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mg := m.magic.Load(); mg != nil && mg.issuer.HandleHTTPChallenge(w, r) {
			return
		}
		host := requestHost(r)
		si := m.snap.Load().site(host)
		if si == nil || !si.redirect || host == "" {
			next.ServeHTTP(w, r)
			return
		}
		if httpsPort != "" && httpsPort != "443" {
			host = net.JoinHostPort(host, httpsPort)
		} else if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		u := url.URL{Scheme: "https", Host: host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
		// http.Redirect would clean the path; the target must be the same
		// path, byte for byte.
		w.Header().Set("Location", u.String())
		w.WriteHeader(http.StatusPermanentRedirect)
	})
}

// Secure wraps the https handler and adds Strict-Transport-Security as the
// site's configuration says (tls.hsts, a site's hsts; on by default except
// for hosts served by the local CA).
func (m *Manager) Secure(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			s := m.snap.Load()
			if si := s.site(r.Host); si != nil {
				v := si.hsts
				if si.hstsLocal != v && s.isLocal(requestHost(r)) {
					v = si.hstsLocal
				}
				if v != "" {
					w.Header()["Strict-Transport-Security"] = []string{v}
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// requestHost is the request's host in canonical form (config.HostName):
// without port, lower case.
func requestHost(r *http.Request) string { return config.HostName(r.Host) }
