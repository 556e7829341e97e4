package tls

import (
	cryptotls "crypto/tls"
	"fmt"
	"os"
	"time"
)

// manualCert is a site's certificate from tls.cert and tls.key, re-read
// when either file changes (polled) and on Update. A failed re-read keeps
// the certificate being served.
type manualCert struct {
	certFile, keyFile string
	slot              certSlot

	// Guarded by Manager.mu.
	tried fileStamp // the files as last read, successfully or not
}

func (mc *manualCert) key() string { return mc.certFile + "\x00" + mc.keyFile }

// fileStamp identifies a version of the two files. Comparing the FileInfo
// with os.SameFile catches a symlink switched to a new file (Kubernetes
// secrets, certbot's live/ directory) even when times and sizes match.
type fileStamp struct {
	cert, key os.FileInfo
}

func stampFiles(certFile, keyFile string) (fileStamp, error) {
	c, err := os.Stat(certFile)
	if err != nil {
		return fileStamp{}, err
	}
	k, err := os.Stat(keyFile)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{cert: c, key: k}, nil
}

func (a fileStamp) equal(b fileStamp) bool {
	same := func(x, y os.FileInfo) bool {
		if x == nil || y == nil {
			return x == y
		}
		return os.SameFile(x, y) && x.ModTime().Equal(y.ModTime()) && x.Size() == y.Size()
	}
	return same(a.cert, b.cert) && same(a.key, b.key)
}

// reloadManual reads mc's files if they changed since they were last
// tried and swaps in the new certificate. A failure is logged once per
// version of the files and the certificate being served stays. Called
// from maintain with mu held.
func (m *Manager) reloadManual(mc *manualCert) {
	st, err := stampFiles(mc.certFile, mc.keyFile)
	if err != nil {
		if mc.tried.cert == nil {
			return // the missing files were reported already
		}
		mc.tried = fileStamp{}
		m.manualFailed(mc, err)
		return
	}
	if st.equal(mc.tried) {
		return
	}
	mc.tried = st
	c, err := loadKeyPair(mc.certFile, mc.keyFile)
	if err != nil {
		m.manualFailed(mc, err)
		return
	}
	m.installManual(stagedCert{mc: mc, cert: c, stamp: st})
}

func (m *Manager) manualFailed(mc *manualCert, err error) {
	m.met.manualReload(false)
	m.log.Error("manual certificate not reloaded; still serving the previous one", "cert", mc.certFile, "key", mc.keyFile, "err", err)
}

// stagedCert is a manual certificate read for a snapshot that is not
// published yet: a reload that fails later must not serve it.
type stagedCert struct {
	mc    *manualCert
	cert  *cryptotls.Certificate
	stamp fileStamp
}

// stageManual reads mc's files without serving them.
func stageManual(mc *manualCert) (stagedCert, error) {
	st, err := stampFiles(mc.certFile, mc.keyFile)
	if err != nil {
		return stagedCert{}, err
	}
	c, err := loadKeyPair(mc.certFile, mc.keyFile)
	if err != nil {
		return stagedCert{}, err
	}
	return stagedCert{mc: mc, cert: c, stamp: st}, nil
}

// installManual serves a staged certificate. Called with mu held, or from
// New.
func (m *Manager) installManual(sc stagedCert) {
	sc.mc.tried = sc.stamp
	if old := sc.mc.slot.Swap(sc.cert); old != nil {
		m.met.manualReload(true)
		m.log.Info("manual certificate reloaded", "cert", sc.mc.certFile, "names", sc.cert.Leaf.DNSNames, "not_after", sc.cert.Leaf.NotAfter)
	}
}

// loadKeyPair reads a PEM certificate chain and its key and checks that
// the certificate is valid now.
func loadKeyPair(certFile, keyFile string) (*cryptotls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	c, err := cryptotls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	now := time.Now()
	if now.After(c.Leaf.NotAfter) {
		return nil, fmt.Errorf("%s expired on %s", certFile, c.Leaf.NotAfter.UTC().Format(time.DateOnly))
	}
	if now.Before(c.Leaf.NotBefore) {
		return nil, fmt.Errorf("%s is not valid before %s", certFile, c.Leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return &c, nil
}
