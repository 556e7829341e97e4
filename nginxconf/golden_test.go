package nginxconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"edge/config"
)

var update = flag.Bool("update", false, "rewrite the golden edge.yaml and warnings.txt of testdata/corpus")

// TestCorpus converts every nginx configuration of testdata/corpus and
// compares the YAML and the warnings with the goldens (go test -update
// rewrites them), then loads the YAML with edge's own loader, with the
// paths it names created in a temporary directory: an import that edge
// validate would refuse fails here.
func TestCorpus(t *testing.T) {
	dirs, _ := filepath.Glob("testdata/corpus/*")
	if len(dirs) < 15 {
		t.Fatalf("corpus has %d configurations, want at least 15", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			res, err := Import(filepath.Join(dir, "nginx.conf"), Options{})
			if err != nil {
				t.Fatal(err)
			}
			warnings := strings.Join(res.Warnings, "\n")
			if warnings != "" {
				warnings += "\n"
			}
			golden(t, filepath.Join(dir, "edge.yaml"), string(res.YAML))
			golden(t, filepath.Join(dir, "warnings.txt"), warnings)
			loadWithPaths(t, res.YAML)
		})
	}
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs (go test -update rewrites it); got:\n%s", file, got)
	}
}

// loadWithPaths moves every file and directory the configuration names
// under a temporary directory, creates them (directories, a certificate
// and key, a bcrypt htpasswd) and loads the result with config.Load.
func loadWithPaths(t *testing.T, data []byte) {
	t.Helper()
	tmp := t.TempDir()
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("output is not YAML: %v", err)
	}
	certPEM, keyPEM := selfSigned(t)
	var fix func(n *yaml.Node, parent string)
	fix = func(n *yaml.Node, parent string) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i].Value, n.Content[i+1]
				if v.Kind == yaml.ScalarNode && v.Value != "" {
					p := filepath.Join(tmp, filepath.Clean("/"+v.Value))
					switch k {
					case "root", "alias":
						v.Value = p
						mkdir(t, p)
					case "cert", "key", "users_file", "file":
						if (k == "cert" || k == "key") != (parent == "tls") {
							break
						}
						v.Value = p
						mkdir(t, filepath.Dir(p))
						content := map[string][]byte{"cert": certPEM, "key": keyPEM, "users_file": htpasswd(t), "file": nil}[k]
						if err := os.WriteFile(p, content, 0o644); err != nil {
							t.Fatal(err)
						}
					}
				}
				fix(v, k)
			}
		}
		for _, c := range n.Content {
			if n.Kind != yaml.MappingNode {
				fix(c, parent)
			}
		}
	}
	fix(&doc, "")
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(tmp, "edge.yaml")
	if err := os.WriteFile(cfg, out, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(cfg); err != nil {
		t.Errorf("edge cannot load the import:\n%v\n%s", err, out)
	}
}

func mkdir(t *testing.T, p string) {
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

var htpasswdLine []byte

func htpasswd(t *testing.T) []byte {
	if htpasswdLine == nil {
		h, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswdLine = []byte("ops:" + string(h) + "\n")
	}
	return htpasswdLine
}

func selfSigned(t *testing.T) (certPEM, keyPEM []byte) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example.com"},
		DNSNames: []string{"example.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}
