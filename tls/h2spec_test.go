package tls

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// h2specKnownFailures are the h2spec cases Go's net/http HTTP/2 server
// fails by design (TESTING.md §2); anything else failing fails the test.
var h2specKnownFailures = map[string]string{
	"http2/4.2/3":     "Go advertises SETTINGS_MAX_FRAME_SIZE 1 MiB, so a 16 KiB+ HEADERS frame is legal for it",
	"http2/6.5.3/1":   "Go rejects duplicate settings in one SETTINGS frame with GOAWAY PROTOCOL_ERROR",
	"http2/8.1.2.2/1": "Go answers a connection-specific header with HTTP 400 instead of a stream error",
	"http2/8.1.2.2/2": "Go answers a TE header other than trailers with HTTP 400 instead of a stream error",
}

// goInstall builds a tool from the module proxy into a temporary GOBIN.
func goInstall(t *testing.T, pkg string) string {
	t.Helper()
	bin := t.TempDir()
	cmd := exec.Command("go", "install", pkg)
	cmd.Dir = bin // outside edge's module: the tool's own dependencies
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go install %s: %v\n%s", pkg, err, out)
	}
	return filepath.Join(bin, filepath.Base(strings.Split(pkg, "@")[0]))
}

type junit struct {
	Suites []struct {
		Name  string `xml:"name,attr"`
		Cases []struct {
			Package   string    `xml:"package,attr"`
			ClassName string    `xml:"classname,attr"`
			Failure   *struct{} `xml:"failure"`
			Error     *struct{} `xml:"error"`
			Skipped   *struct{} `xml:"skipped"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

// TestH2spec runs h2spec (built from the module proxy, it has no go.mod:
// @v2.2.1+incompatible) against an HTTPS server using Manager.TLSConfig.
func TestH2spec(t *testing.T) {
	t.Parallel()
	h2spec := goInstall(t, "github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible")
	e := listen(t)
	log, _ := newLogger(t)
	m := newManager(t, e.parse(t, localYAML), log)
	e.serve(t, m)

	report := filepath.Join(t.TempDir(), "h2spec.xml")
	start := time.Now()
	cmd := exec.Command(h2spec, "-t", "-k", "-h", "127.0.0.1", "-p", itoa(e.httpsPort), "-j", report)
	out, _ := cmd.CombinedOutput() // exits 1 on any failure; judged below
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("h2spec wrote no report: %v\n%s", err, out)
	}
	var r junit
	if err := xml.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	var passed, known int
	var failed []string
	for _, s := range r.Suites {
		for i, c := range s.Cases {
			id := fmt.Sprintf("%s/%d", c.Package, i+1)
			switch {
			case c.Skipped != nil:
			case c.Failure == nil && c.Error == nil:
				passed++
			case h2specKnownFailures[id] != "":
				known++
			default:
				failed = append(failed, id+" "+c.ClassName)
			}
		}
	}
	// Cases 5.1/9 and 5.1/12 wait on timers and fail now and then on a
	// loaded machine (TESTING.md §2): a case that passes when run again on
	// its own was timing, one that fails three times is a regression.
	var regressions []string
	for _, f := range failed {
		id, _, _ := strings.Cut(f, " ")
		ok := false
		for try := 0; try < 2 && !ok; try++ {
			ok = exec.Command(h2spec, "-t", "-k", "-h", "127.0.0.1", "-p", itoa(e.httpsPort), id).Run() == nil
		}
		if ok {
			t.Logf("h2spec %s failed once and passed when run again (timing on a busy machine)", f)
			passed++
		} else {
			regressions = append(regressions, f)
		}
	}
	failed = regressions
	sort.Strings(failed)
	t.Logf("h2spec in %v: %d passed, %d known Go failures, %d new failures", time.Since(start).Round(100*time.Millisecond), passed, known, len(failed))
	if len(failed) > 0 || passed < 100 {
		t.Errorf("h2spec failures beyond Go's known ones:\n%s\n%s", strings.Join(failed, "\n"), out)
	}
}
