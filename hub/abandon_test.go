package hub

import (
	"testing"
	"time"
)

// TestHostileAbandonedReloadLeavesNoTrace: a reload that gave a route new
// origins and hosts and added a route with long history, then failed
// before Retire, leaves nothing behind once abandoned: the next good
// reload does not allow the failed one's hosts as origins, the added route
// is gone and history retention is the served routes' again.
func TestHostileAbandonedReloadLeavesNoTrace(t *testing.T) {
	e := newEnv(t, NodeOptions{}, "")
	e.mux.Handle("/site/", e.n.Route("/site/", parseHub(t, ""), []string{"a.example"}))
	e.n.Retire([]string{"/socket/", "/site/"})
	before := e.n.retention()

	// The failed reload.
	e.n.Route("/site/", parseHub(t, ""), []string{"evil.example"})
	e.n.Route("/added/", parseHub(t, `{ history: { size: 5000, ttl: 10h } }`), nil)
	e.n.Abandon([]string{"/socket/", "/site/"})
	if got := e.n.retention(); got != before {
		t.Errorf("retention after the abandoned reload %+v, want %+v", got, before)
	}
	e.n.mu.RLock()
	_, added := e.n.routes["/added/"]
	e.n.mu.RUnlock()
	if added {
		t.Error("the abandoned reload's new route is still on the node")
	}

	// The next good reload keeps the site.
	e.n.Route("/site/", parseHub(t, ""), []string{"a.example"})
	e.n.Retire([]string{"/socket/", "/site/"})
	site := e.ws[:len(e.ws)-len("/socket/")] + "/site/"
	runAuthCases(t, []authCase{
		{"the served site's origin", site, origin("https://a.example"), 101, ""},
		{"the abandoned reload's host", site, origin("https://evil.example"), 403, "origin not allowed"},
	})
	if got := e.n.retention(); got.ttl > 5*time.Hour {
		t.Errorf("retention %+v still follows the abandoned route", got)
	}
}
