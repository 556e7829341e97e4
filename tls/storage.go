package tls

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// trackedStorage wraps the certmagic.Storage to know when certmagic is
// done with it: calls in flight plus locks held. certmagic's background
// jobs cannot be joined, but each holds a storage lock while it works, so
// Run waits on this before returning, and nothing writes to storage after
// it (a test's temporary directory, a shutting-down node).
type trackedStorage struct {
	s certmagic.Storage

	mu    sync.Mutex
	busy  int                 // guarded by mu: calls in flight + held
	held  map[string]struct{} // guarded by mu: lock names we hold
	idle  chan struct{}       // guarded by mu: closed when busy drops to 0; nil if nobody waits
	tryer certmagic.TryLocker // s as a TryLocker, or nil

	// check, when set, vets what Load returns: an error replaces the
	// value (Manager.checkStored). Set before use.
	check func(ctx context.Context, key string, value []byte) error
}

// trackedTryStorage is a trackedStorage over a storage that also
// implements certmagic.TryLocker; only then is TryLock offered, since
// certmagic checks for the interface.
type trackedTryStorage struct{ *trackedStorage }

func (t trackedTryStorage) TryLock(ctx context.Context, name string) (bool, error) {
	t.enter()
	defer t.leave()
	ok, err := t.tryer.TryLock(ctx, name)
	if ok && err == nil {
		t.hold(name)
	}
	return ok, err
}

var (
	_ certmagic.Storage          = (*trackedStorage)(nil)
	_ certmagic.TryLocker        = trackedTryStorage{}
	_ certmagic.LockLeaseRenewer = (*trackedStorage)(nil)
)

func track(s certmagic.Storage) *trackedStorage {
	t := &trackedStorage{s: s, held: map[string]struct{}{}}
	t.tryer, _ = s.(certmagic.TryLocker)
	return t
}

// forCertmagic returns what certmagic should be given.
func (t *trackedStorage) forCertmagic() certmagic.Storage {
	if t.tryer != nil {
		return trackedTryStorage{t}
	}
	return t
}

func (t *trackedStorage) enter() {
	t.mu.Lock()
	t.busy++
	t.mu.Unlock()
}

func (t *trackedStorage) leave() {
	t.mu.Lock()
	t.busy--
	if t.busy == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

func (t *trackedStorage) hold(name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.held[name]; !ok {
		t.held[name] = struct{}{}
		t.busy++
	}
}

// release forgets a held lock; it reports whether it was held.
func (t *trackedStorage) release(name string) bool {
	t.mu.Lock()
	_, ok := t.held[name]
	delete(t.held, name)
	t.mu.Unlock()
	return ok
}

// waitIdle waits until no call is in flight and no lock is held.
func (t *trackedStorage) waitIdle(ctx context.Context) error {
	t.mu.Lock()
	if t.busy == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle, held := t.idle, len(t.held)
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%d locks held: %w", held, ctx.Err())
	}
}

func (t *trackedStorage) Lock(ctx context.Context, name string) error {
	t.enter()
	defer t.leave()
	err := t.s.Lock(ctx, name)
	if err == nil {
		t.hold(name)
	}
	return err
}

func (t *trackedStorage) Unlock(ctx context.Context, name string) error {
	t.enter()
	defer t.leave()
	err := t.s.Unlock(ctx, name)
	if t.release(name) {
		t.leave() // the hold
	}
	return err
}

// RenewLockLease forwards to storages that have leases; for the others it
// does nothing, as certmagic does when the interface is missing.
func (t *trackedStorage) RenewLockLease(ctx context.Context, name string, d time.Duration) error {
	if r, ok := t.s.(certmagic.LockLeaseRenewer); ok {
		return r.RenewLockLease(ctx, name, d)
	}
	return nil
}

func (t *trackedStorage) Store(ctx context.Context, key string, value []byte) error {
	t.enter()
	defer t.leave()
	return t.s.Store(ctx, key, value)
}

func (t *trackedStorage) Load(ctx context.Context, key string) ([]byte, error) {
	t.enter()
	defer t.leave()
	v, err := t.s.Load(ctx, key)
	if err == nil && t.check != nil {
		if err := t.check(ctx, key, v); err != nil {
			return nil, err
		}
	}
	return v, err
}

func (t *trackedStorage) Delete(ctx context.Context, key string) error {
	t.enter()
	defer t.leave()
	return t.s.Delete(ctx, key)
}

func (t *trackedStorage) Exists(ctx context.Context, key string) bool {
	t.enter()
	defer t.leave()
	return t.s.Exists(ctx, key)
}

func (t *trackedStorage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	t.enter()
	defer t.leave()
	return t.s.List(ctx, path, recursive)
}

func (t *trackedStorage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	t.enter()
	defer t.leave()
	return t.s.Stat(ctx, key)
}

// String names the underlying storage in logs (certmagic prints it).
func (t *trackedStorage) String() string { return fmt.Sprint(t.s) }
