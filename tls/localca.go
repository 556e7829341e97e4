package tls

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	cryptotls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Local CA lifetimes. The root is generated once and installed into trust
// stores by hand (edge trust), so it lives long; the intermediate is
// re-made from the root when it nears its end; leaves are short-lived and
// exist only in memory, re-issued at every start and before they expire.
const (
	rootLifetime         = 10 * 365 * 24 * time.Hour
	intermediateLifetime = 5 * 365 * 24 * time.Hour
	// DefaultLeafLifetime is the validity of local-CA leaf certificates.
	DefaultLeafLifetime = 24 * time.Hour
)

// File names of the local CA inside <tls.storage>/ca.
const (
	rootCertFile  = "root.crt"
	rootKeyFile   = "root.key"
	interCertFile = "intermediate.crt"
	interKeyFile  = "intermediate.key"
)

// localCA is a two-level ECDSA P-256 CA kept in a directory. It is
// immutable after openLocalCA and safe for concurrent use.
type localCA struct {
	files     caFiles
	root      *x509.Certificate
	inter     *x509.Certificate
	interKey  *ecdsa.PrivateKey
	chainTail [][]byte // the intermediate's DER, sent after each leaf
}

// RootPath is where the root certificate of the local CA is stored.
func (ca *localCA) RootPath() string { return ca.files.path(rootCertFile) }

// caFiles is where the local CA keeps its files: a directory, or the
// certmagic storage shared by several nodes (tls.storage: redis), so that
// every node issues from the same root.
type caFiles interface {
	// read returns a file; a missing one gives an error matching fs.ErrNotExist.
	read(name string) ([]byte, error)
	write(name string, data []byte, perm os.FileMode) error
	path(name string) string
}

// dirFiles keeps the CA in a directory.
type dirFiles string

func (d dirFiles) read(name string) ([]byte, error) { return os.ReadFile(d.path(name)) }
func (d dirFiles) write(name string, data []byte, perm os.FileMode) error {
	return writeFileAtomic(d.path(name), data, perm)
}
func (d dirFiles) path(name string) string { return filepath.Join(string(d), name) }

// openLocalCA loads the CA from dir, creating the root and the
// intermediate the first time (and the intermediate again when it is
// within a year of its end). The directory is made 0700, keys 0600.
func openLocalCA(dir string) (*localCA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	return openLocalCAIn(dirFiles(dir))
}

// openLocalCAIn loads the CA from files, creating what is missing. Callers
// sharing files between processes hold a lock around it.
func openLocalCAIn(dir caFiles) (*localCA, error) {
	rootCert, rootKey, err := loadPair(dir, rootCertFile, rootKeyFile)
	if errors.Is(err, fs.ErrNotExist) {
		rootCert, rootKey, err = makeRoot(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("local CA root: %w", err)
	}
	inter, interKey, err := loadPair(dir, interCertFile, interKeyFile)
	if err == nil && (time.Until(inter.NotAfter) < 365*24*time.Hour || inter.CheckSignatureFrom(rootCert) != nil) {
		err = fs.ErrNotExist // renew it, or replace one from another root
	}
	if errors.Is(err, fs.ErrNotExist) {
		inter, interKey, err = makeIntermediate(dir, rootCert, rootKey)
	}
	if err != nil {
		return nil, fmt.Errorf("local CA intermediate: %w", err)
	}
	return &localCA{files: dir, root: rootCert, inter: inter, interKey: interKey, chainTail: [][]byte{inter.Raw}}, nil
}

// loadPair reads a certificate and its key. A missing file gives an error
// matching fs.ErrNotExist.
func loadPair(dir caFiles, certFile, keyFile string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := dir.read(certFile)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := dir.read(keyFile)
	if err != nil {
		return nil, nil, err
	}
	cb, _ := pem.Decode(certPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, fmt.Errorf("%s or %s: no PEM data", certFile, keyFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("%s does not match %s", keyFile, certFile)
	}
	return cert, key, nil
}

func makeRoot(dir caFiles) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	host, _ := os.Hostname()
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			Organization: []string{"edge local CA"},
			CommonName:   fmt.Sprintf("edge local CA root %s %s", host, now.UTC().Format(time.DateOnly)),
		},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(rootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
	return makeCA(dir, rootCertFile, rootKeyFile, tmpl, nil, nil)
}

func makeIntermediate(dir caFiles, root *x509.Certificate, rootKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject: pkix.Name{
			Organization: []string{"edge local CA"},
			CommonName:   "edge local CA intermediate " + now.UTC().Format(time.DateOnly),
		},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              earliest(now.Add(intermediateLifetime), root.NotAfter),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	return makeCA(dir, interCertFile, interKeyFile, tmpl, root, rootKey)
}

// makeCA creates a key and a certificate from tmpl, signed by parent (self
// when nil), and writes both: the key first, so that a crash never leaves
// a certificate without its key.
func makeCA(dir caFiles, certFile, keyFile string, tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = randomSerial(); err != nil {
		return nil, nil, err
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := dir.write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, nil, err
	}
	if err := dir.write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// writeFileAtomic writes data to a temporary file and renames it over
// name, so readers never see half a file.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), ".tmp-"+filepath.Base(name))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), name)
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// issue makes a leaf for name (a host name, "*.name" or an IP address)
// valid for lifetime, with a fresh P-256 key.
func (ca *localCA) issue(name string, lifetime time.Duration) (*cryptotls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		// Backdated a little for clocks that lag behind ours.
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              earliest(now.Add(lifetime), ca.inter.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{strings.ToLower(name)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.inter, &key.PublicKey, ca.interKey)
	if err != nil {
		return nil, fmt.Errorf("local CA: issue %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &cryptotls.Certificate{
		Certificate: append([][]byte{der}, ca.chainTail...),
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// fingerprint is the SHA-256 of the root, as browsers show it.
func (ca *localCA) fingerprint() string {
	sum := sha256.Sum256(ca.root.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// storageFiles keeps the local CA in a certmagic storage, under
// edge/local_ca/, so that nodes sharing the storage share the CA.
type storageFiles struct {
	st certmagic.Storage
}

const localCAPrefix = "edge/local_ca/"

func (f storageFiles) read(name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.st.Load(ctx, localCAPrefix+name)
}

func (f storageFiles) write(name string, data []byte, _ os.FileMode) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.st.Store(ctx, localCAPrefix+name, data)
}

func (f storageFiles) path(name string) string {
	return fmt.Sprintf("%v %s%s", f.st, localCAPrefix, name)
}

// openSharedLocalCA opens (creates) the CA in st under st's lock, so that
// nodes starting together agree on one root.
func openSharedLocalCA(st certmagic.Storage) (*localCA, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Lock(ctx, "edge_local_ca"); err != nil {
		return nil, fmt.Errorf("local CA: %w", err)
	}
	defer st.Unlock(context.Background(), "edge_local_ca")
	return openLocalCAIn(storageFiles{st})
}
