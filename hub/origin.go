package hub

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// originPolicy decides which Origin headers may connect. A request
// without Origin is not from a browser page and is allowed: the check
// exists to stop other sites' pages from using a visitor's cookies.
type originPolicy struct {
	any bool
	// Explicit origins, normalised to scheme://host:port; a host may start
	// with "*." to match subdomains.
	origins []string
	// Default policy: the site's hosts over http or https on any port;
	// none (the default site) means the request's own host.
	siteDefault bool
	hosts       []string
}

func newOriginPolicy(origins, hosts []string) (originPolicy, error) {
	if len(origins) == 0 {
		lower := make([]string, len(hosts))
		for i, h := range hosts {
			lower[i] = strings.ToLower(strings.TrimSuffix(h, "."))
		}
		return originPolicy{siteDefault: true, hosts: lower}, nil
	}
	var p originPolicy
	for _, o := range origins {
		if o == "*" {
			p.any = true
			continue
		}
		n, ok := normalOrigin(o)
		if !ok {
			return p, fmt.Errorf("invalid origin %q", o)
		}
		p.origins = append(p.origins, n)
	}
	return p, nil
}

// normalOrigin returns scheme://host:port in lower case, with the default
// port written out.
func normalOrigin(o string) (string, bool) {
	u, err := url.Parse(strings.ToLower(strings.TrimSuffix(o, "/")))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + strings.TrimSuffix(u.Hostname(), ".") + ":" + port, true
}

func (p *originPolicy) allow(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || p.any {
		return true
	}
	n, ok := normalOrigin(o)
	if !ok {
		return false
	}
	if p.siteDefault {
		scheme, rest, _ := strings.Cut(n, "://")
		host := rest[:strings.LastIndexByte(rest, ':')]
		if scheme != "http" && scheme != "https" {
			return false
		}
		if len(p.hosts) == 0 {
			return host == requestHost(r)
		}
		for _, h := range p.hosts {
			if hostMatch(h, host) {
				return true
			}
		}
		return false
	}
	for _, want := range p.origins {
		if originMatch(want, n) {
			return true
		}
	}
	return false
}

// hostMatch matches a host against a name or a "*.example.com" wildcard
// (one or more labels before example.com).
func hostMatch(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return pattern == host
}

// originMatch compares normalised origins; want's host may be a wildcard.
func originMatch(want, got string) bool {
	ws, wrest, _ := strings.Cut(want, "://")
	gs, grest, _ := strings.Cut(got, "://")
	if ws != gs {
		return false
	}
	wi, gi := strings.LastIndexByte(wrest, ':'), strings.LastIndexByte(grest, ':')
	if wrest[wi:] != grest[gi:] {
		return false
	}
	return hostMatch(wrest[:wi], grest[:gi])
}

func requestHost(r *http.Request) string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
}
