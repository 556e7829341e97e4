//go:build !linux

package proxy

// poller parks nothing outside Linux: an idle tunnel direction keeps its
// goroutine blocked in a read, with a small buffer.
type poller struct{}

const pollerSupported = false

func (*poller) park(*pipe) bool   { return false }
func (*poller) unpark(*pipe) bool { return false }
func (*poller) len() int          { return 0 }
