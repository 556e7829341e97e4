package proxy

import (
	"errors"
	"sync"
	"syscall"
)

// parkIdleWait is how long (ms) the poller goroutine waits with nothing
// parked before it exits; a park starts it again.
const parkIdleWait = 1000

// poller waits for the sockets of parked tunnel directions to become
// readable, all in one epoll instance, so that an idle direction holds no
// goroutine, stack or buffer. A readable socket (data, EOF, reset) starts
// the direction's copy goroutine again. Its goroutine runs while something
// is parked (and parkIdleWait after) and is owned by the Tunnels set.
//
// Go's own netpoller keeps the sockets registered in its epoll instance;
// the same socket in a second instance is allowed, and a closed socket
// leaves both. Registrations are one-shot, and are made inside
// RawConn.Control, which keeps the descriptor from being closed (and its
// number reused) meanwhile; events carry the pipe's park id, never the
// descriptor number.
type poller struct {
	mu      sync.Mutex
	epfd    int              // valid while running
	gen     uint64           // counts epoll instances, so a pipe knows whether it is in this one
	running bool             // loop runs on epfd
	next    uint64           // last park id
	parked  map[uint64]*pipe // by park id; guarded by mu
}

const pollerSupported = true

// park registers p's socket for one readiness event and hands p to the
// poller. It reports false when p cannot be parked (its tunnel is closing,
// its socket is closed, epoll failed): p's goroutine then reads on.
func (pl *poller) park(p *pipe) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if p.t.closed.Load() {
		return false
	}
	if !pl.running {
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			return false
		}
		pl.epfd, pl.running = fd, true
		pl.gen++
		if pl.parked == nil {
			pl.parked = map[uint64]*pipe{}
		}
		go pl.loop(fd)
	}
	pl.next++
	id := pl.next
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT,
		Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	op := syscall.EPOLL_CTL_ADD
	if p.gen == pl.gen {
		op = syscall.EPOLL_CTL_MOD // added before, disarmed by its last event
	}
	var cerr error
	err := p.raw.Control(func(fd uintptr) {
		cerr = syscall.EpollCtl(pl.epfd, op, int(fd), &ev)
		switch {
		case errors.Is(cerr, syscall.EEXIST):
			cerr = syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_MOD, int(fd), &ev)
		case errors.Is(cerr, syscall.ENOENT):
			cerr = syscall.EpollCtl(pl.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err != nil || cerr != nil {
		return false
	}
	p.gen, p.id = pl.gen, id
	pl.parked[id] = p
	return true
}

// unpark takes p back from the poller if it is parked there. It reports
// whether it was: the caller then owns p's end.
func (pl *poller) unpark(p *pipe) bool {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if p.id == 0 {
		return false
	}
	delete(pl.parked, p.id)
	p.id = 0
	return true
}

// len returns the number of parked pipes.
func (pl *poller) len() int {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return len(pl.parked)
}

// loop waits for events on epfd and resumes the pipes they are for. It
// exits when nothing has been parked for parkIdleWait.
func (pl *poller) loop(epfd int) {
	events := make([]syscall.EpollEvent, 128)
	var ready []*pipe
	for {
		n, err := syscall.EpollWait(epfd, events, parkIdleWait)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		pl.mu.Lock()
		for _, ev := range events[:max(n, 0)] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if p := pl.parked[id]; p != nil {
				delete(pl.parked, id)
				p.id = 0
				ready = append(ready, p)
			}
		}
		stop := err != nil || n == 0 && len(pl.parked) == 0
		if err != nil {
			// Not expected (EBADF, EINVAL): resume everyone; they park
			// again in a new instance.
			for id, p := range pl.parked {
				delete(pl.parked, id)
				p.id = 0
				ready = append(ready, p)
			}
		}
		if stop {
			pl.running = false
			syscall.Close(epfd)
		}
		pl.mu.Unlock()
		for i, p := range ready {
			go p.t.copy(p)
			ready[i] = nil
		}
		ready = ready[:0]
		if stop {
			return
		}
	}
}
