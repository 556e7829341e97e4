package hub

// refuseReason says why an upgrade was refused, so that an operator can
// tell hostile or broken clients (origin, auth, limits) from a hub that
// cannot serve (shutting down, auth backend down). It labels
// edge_hub_connections_refused_total and /hub/stats refused_by.
type refuseReason uint8

const (
	refuseNotWebSocket    refuseReason = iota // not an upgrade (426)
	refuseHandshake                           // a malformed WebSocket handshake
	refuseUnavailable                         // shutting down, route retired or not configured (503)
	refuseOrigin                              // Origin not allowed (403)
	refuseBadRequest                          // invalid channel name, too many channels (400)
	refusePerIP                               // max_connections_per_ip (429)
	refuseAuth                                // token or auth backend said no (401, 403)
	refuseAuthUnavailable                     // the auth backend failed or is unreachable (503)
	refuseChannel                             // a channel the grant or route does not allow (403)
	numRefuseReasons
)

var refuseReasonNames = [numRefuseReasons]string{
	"not_websocket", "bad_handshake", "unavailable", "origin", "bad_request",
	"per_ip_limit", "auth", "auth_unavailable", "channel_forbidden",
}

func (r refuseReason) String() string { return refuseReasonNames[r] }

// refusedBy returns the refusal counts by reason, the zero ones left out.
func (s *stats) refusedByReason() map[string]uint64 {
	m := map[string]uint64{}
	for i := range s.refusedBy {
		if v := s.refusedBy[i].Load(); v > 0 {
			m[refuseReason(i).String()] = v
		}
	}
	return m
}
