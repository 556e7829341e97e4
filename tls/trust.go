package tls

import (
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"edge/config"
	"edge/internal/redisconn"
	"edge/internal/truststore"
)

// LocalCARoot is the path of the local CA's root certificate under
// tls.storage. With create, the CA is made first if it does not exist
// (edge trust); without, a missing CA is an error that says so (edge
// untrust has nothing to remove).
func LocalCARoot(cfg *config.Config, create bool) (string, error) {
	if cfg.TLS.RedisStorage() {
		// The CA lives in Redis, shared by every node: its root is
		// written to a file to be installed from.
		_, p, err := trustCA(cfg)
		return p, err
	}
	dir := filepath.Join(cfg.TLS.Storage, "ca")
	if !create {
		p := filepath.Join(dir, rootCertFile)
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("no local CA under tls.storage %s: %w", cfg.TLS.Storage, err)
		}
		return p, nil
	}
	if err := prepareStorage(cfg.TLS.Storage, nil); err != nil {
		return "", err
	}
	ca, err := openLocalCA(dir)
	if err != nil {
		return "", err
	}
	return ca.RootPath(), nil
}

// Trust implements `edge trust -print`: it creates the local CA under tls.storage
// if it does not exist yet and writes where its root certificate is and
// the exact commands that install it into the system store
// (update-ca-certificates), the NSS databases of Chromium and Firefox
// (certutil) and how to use it with curl (--cacert). It changes no trust
// store itself, for those who install it by hand or on another machine.
func Trust(cfg *config.Config, w io.Writer) error {
	ca, rootPath, err := trustCA(cfg)
	if err != nil {
		return err
	}
	root := shellQuote(rootPath)
	sysFile := shellQuote("/usr/local/share/ca-certificates/" + truststore.SystemFileName(ca.root.Raw))
	nick := shellQuote(ca.root.Subject.CommonName)
	url := exampleURL(cfg)
	_, err = fmt.Fprintf(w, `edge local CA root certificate:
  %s
  subject %s, valid until %s
  SHA-256 fingerprint %s

Install it so that browsers and tools trust %s:

System store (Debian, Ubuntu; curl, wget, Go programs and most tools use it):
  sudo install -m 0644 %s %s
  sudo update-ca-certificates

Chromium and Chrome (the NSS database of your user, $HOME/.pki/nssdb):
  mkdir -p "$HOME/.pki/nssdb"
  [ -f "$HOME/.pki/nssdb/cert9.db" ] || certutil -d sql:"$HOME/.pki/nssdb" -N --empty-password
  certutil -d sql:"$HOME/.pki/nssdb" -A -t C,, -n %s -i %s

Firefox (every profile; close Firefox first):
  for p in "$HOME"/.mozilla/firefox/*.default* "$HOME"/snap/firefox/common/.mozilla/firefox/*.default*; do [ -d "$p" ] && certutil -d sql:"$p" -A -t C,, -n %s -i %s; done

curl, without installing anything:
  curl --cacert %s %s

To remove it again: certutil -d sql:"$HOME/.pki/nssdb" -D -n %s
  and sudo rm %s && sudo update-ca-certificates --fresh
`,
		rootPath, ca.root.Subject.CommonName, ca.root.NotAfter.UTC().Format(time.DateOnly), ca.fingerprint(),
		url,
		root, sysFile,
		nick, root,
		nick, root,
		root, url,
		nick, sysFile)
	return err
}

// exampleURL is an address of this configuration that the local CA
// serves, for the curl line.
func exampleURL(cfg *config.Config) string {
	host := firstLocalHost(cfg)
	port := "443"
	if _, p, err := net.SplitHostPort(cfg.Listen.HTTPS); err == nil && p != "" && p != "0" {
		port = p
	}
	if port == "443" {
		return "https://" + hostForURL(host) + "/"
	}
	return "https://" + net.JoinHostPort(host, port) + "/"
}

func firstLocalHost(cfg *config.Config) string {
	for i := range cfg.Sites {
		s := &cfg.Sites[i]
		for _, h := range s.Hosts {
			if cfg.CertSource(s, h) == config.SourceLocal && !strings.HasPrefix(h, "*.") {
				return h
			}
		}
	}
	return "localhost"
}

func hostForURL(h string) string {
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// trustCA opens the local CA for Trust and returns where its root
// certificate file is. With tls.storage redis the CA lives in Redis (all
// nodes share it); its root is copied to a file in the temporary
// directory for the install commands.
func trustCA(cfg *config.Config) (*localCA, string, error) {
	if !cfg.TLS.RedisStorage() {
		if err := prepareStorage(cfg.TLS.Storage, nil); err != nil {
			return nil, "", err
		}
		ca, err := openLocalCA(filepath.Join(cfg.TLS.Storage, "ca"))
		if err != nil {
			return nil, "", err
		}
		return ca, ca.RootPath(), nil
	}
	rdb, err := redisconn.New(cfg.Redis)
	if err != nil {
		return nil, "", err
	}
	defer rdb.Close()
	st := NewRedisStorage(rdb, cfg.Redis.Prefix+"certmagic:", 0, slog.New(slog.DiscardHandler))
	defer st.Close()
	ca, err := openSharedLocalCA(st)
	if err != nil {
		return nil, "", err
	}
	file := filepath.Join(os.TempDir(), "edge-local-ca-root.crt")
	if err := writeFileAtomic(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.root.Raw}), 0o644); err != nil {
		return nil, "", err
	}
	return ca, file, nil
}
