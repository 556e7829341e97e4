package hub

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"edge/config"
)

// originPolicy decides which Origin headers may connect. A request
// without Origin is not from a browser page and is allowed: the check
// exists to stop other sites' pages from using a visitor's cookies.
type originPolicy struct {
	any bool
	// Explicit origins, normalised to scheme://host:port; a host may start
	// with "*." to match subdomains.
	origins []string
	// Default policy: the site's hosts over http or https on any port,
	// matched as the router matches them (config.SiteIndex); nil sites
	// (the default site) means the request's own host.
	siteDefault bool
	sites       *config.SiteIndex
}

func newOriginPolicy(origins, hosts []string) (originPolicy, error) {
	if len(origins) == 0 {
		p := originPolicy{siteDefault: true}
		if len(hosts) > 0 {
			p.sites = config.NewSiteIndex([]config.Site{{Hosts: hosts}})
		}
		return p, nil
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

// normalOrigin returns scheme://host:port with the host in config's
// canonical form (config.HostName: lower case, punycode, no trailing dot)
// and the default port written out.
func normalOrigin(o string) (string, bool) {
	u, err := url.Parse(strings.ToLower(strings.TrimSuffix(o, "/")))
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", false
	}
	host := config.HostName(u.Hostname())
	if host == "" {
		return "", false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return u.Scheme + "://" + host + ":" + port, true
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
		if p.sites == nil {
			return host == config.HostName(r.Host)
		}
		_, ok := p.sites.Lookup(host)
		return ok
	}
	for _, want := range p.origins {
		if originMatch(want, n) {
			return true
		}
	}
	return false
}

// hostMatch matches a canonical host against a name or a "*.example.com"
// wildcard (one or more labels before example.com) of an explicit origin.
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
