package hub

// Abandon undoes the Route calls made since the last Retire, for a reload
// that failed before its commit point, so that nothing of it shows: the
// configurations given to existing routes are dropped, routes created by
// those calls (paths not in keep, the paths of the configuration still
// served) are forgotten, history retention is what the served routes ask
// for again, and the next reload's Route calls start a fresh set of
// default-origin hosts.
func (n *Node) Abandon(keep []string) {
	want := make(map[string]bool, len(keep))
	for _, p := range keep {
		want[p] = true
	}
	var gone []*route
	n.mu.Lock()
	n.gen++
	for p, rt := range n.routes {
		rt.pending = nil
		if !want[p] {
			delete(n.routes, p)
			gone = append(gone, rt)
		}
	}
	n.updateRetentionLocked()
	n.mu.Unlock()
	// No router served these routes, so they have no clients; marking
	// them retired refuses any request that still finds one.
	for _, rt := range gone {
		rt.mu.Lock()
		rt.retired = true
		rt.mu.Unlock()
	}
}
