package hub

// Abandon undoes the Route calls made since the last Retire, for a reload
// that failed before its commit point, so that nothing of it shows: the
// configurations given to existing routes are dropped, routes created by
// those calls (paths not in keep, the paths of the configuration still
// served) are forgotten, history retention is what the served routes ask
// for again, and the next reload's Route calls start a fresh set of
// default-origin hosts.
func (n *Node) Abandon(keep []string) {
	// No router served the routes it drops, so they have no clients;
	// marking them retired refuses any request that still finds one.
	n.endReload(keep, false)
}

// endReload ends a reload's staging: it starts a new generation of
// default-origin hosts, applies (commit) or drops the configurations
// staged by Route, forgets the routes whose path is not in keep, marking
// them retired, and returns them.
func (n *Node) endReload(keep []string, commit bool) []*route {
	want := make(map[string]bool, len(keep))
	for _, p := range keep {
		want[p] = true
	}
	var gone []*route
	n.mu.Lock()
	n.gen++
	for p, rt := range n.routes {
		switch {
		case !want[p]:
			delete(n.routes, p)
			gone = append(gone, rt)
		case commit && rt.pending != nil:
			rt.cfg.Store(rt.pending)
		}
		rt.pending = nil
	}
	n.updateRetentionLocked()
	n.mu.Unlock()
	for _, rt := range gone {
		rt.mu.Lock()
		rt.retired = true
		rt.mu.Unlock()
	}
	return gone
}
