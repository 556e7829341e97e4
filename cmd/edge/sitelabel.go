package main

import "edge/config"

// siteLabel is the site's metrics label as the server computes it (its
// first host, or "default"). Temporary: it goes when config exports the
// one helper the server and the handlers share.
func siteLabel(site *config.Site) string {
	if len(site.Hosts) > 0 {
		return site.Hosts[0]
	}
	return "default"
}
