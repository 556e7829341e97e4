package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// unitForTest copies systemd/edge.service with ExecStart pointing at the
// test binary: systemd-analyze verify insists the binary exists.
func unitForTest(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: the README test command installs it (apt-get install systemd)")
	}
	unit, err := os.ReadFile("../../systemd/edge.service")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "edge.service")
	if err := os.WriteFile(p, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/edge", edgeBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestUnitVerifies fails on any output of systemd-analyze verify: it exits
// 0 on warnings such as unknown keys.
func TestUnitVerifies(t *testing.T) {
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", unitForTest(t)).CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestUnitExposure keeps systemd-analyze security's exposure at most 2.0.
func TestUnitExposure(t *testing.T) {
	out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", unitForTest(t)).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for edge.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("exposure %.1f", score)
	if score > 2.0 {
		t.Errorf("exposure %.1f, want at most 2.0:\n%s", score, out)
	}
}

// TestUnitKeys guards the settings the unit promises.
func TestUnitKeys(t *testing.T) {
	unit, err := os.ReadFile("../../systemd/edge.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "WatchdogSec=30s", "DynamicUser=yes",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"StateDirectory=edge", "ConfigurationDirectory=edge", "ProtectSystem=strict", "ProtectHome=yes",
		"PrivateTmp=yes", "PrivateDevices=yes", "NoNewPrivileges=yes", "MemoryDenyWriteExecute=yes",
		"SystemCallFilter=@system-service", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
	} {
		if !strings.Contains(string(unit), "\n"+line+"\n") {
			t.Errorf("unit lacks %q", line)
		}
	}
}
