package tls

import (
	"context"
	cryptotls "crypto/tls"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"
)

// tornWriteWait is how long a certificate that does not match its key is
// given before it counts as corrupt: another node may be between writing
// the key and the certificate of a renewal.
const tornWriteWait = 500 * time.Millisecond

// checkStored is called by the storage wrapper when certmagic loads the
// private key of a certificate (it loads the key first, then the
// certificate). A pair that does not make a usable certificate (bytes
// damaged on disk or in Redis, a truncated file) would otherwise stop
// certmagic for good: it retries only missing certificates. So the pair is
// logged, deleted and reported missing, and certmagic obtains a new one;
// the damaged one is never served.
func (m *Manager) checkStored(ctx context.Context, key string, keyPEM []byte) error {
	if !strings.HasPrefix(key, "certificates/") || !strings.HasSuffix(key, ".key") {
		return nil
	}
	certKey := strings.TrimSuffix(key, ".key") + ".crt"
	err := m.pairError(ctx, certKey, keyPEM)
	if err == nil {
		return nil
	}
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(tornWriteWait):
	}
	if keyPEM, lerr := m.storage.s.Load(ctx, key); lerr == nil {
		err = m.pairError(ctx, certKey, keyPEM)
	}
	if err == nil {
		return nil
	}
	dir := path.Dir(key)
	m.log.Error("stored certificate is unusable: deleting it so that it is obtained again", "key", dir, "err", err)
	if derr := m.storage.s.Delete(ctx, dir); derr != nil {
		m.log.Error("deleting the unusable certificate", "key", dir, "err", derr)
	}
	return fmt.Errorf("%s: unusable, deleted: %w", dir, fs.ErrNotExist)
}

// pairError loads the certificate at certKey and reports whether it and
// keyPEM make a TLS certificate; a missing certificate is no error here.
func (m *Manager) pairError(ctx context.Context, certKey string, keyPEM []byte) error {
	certPEM, err := m.storage.s.Load(ctx, certKey)
	if err != nil {
		return nil // missing (certmagic handles it) or unreachable: no evidence of damage
	}
	_, err = cryptotls.X509KeyPair(certPEM, keyPEM)
	return err
}
