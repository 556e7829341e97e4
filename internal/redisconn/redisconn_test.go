package redisconn

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"edge/config"
	"edge/internal/testpeer"
)

// TestURL: a redis:// URL gives a working client.
func TestURL(t *testing.T) {
	s := testpeer.StartRedis(t)
	rdb, err := New(&config.Redis{URL: s.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestSentinel: the failover client finds the master the sentinels name,
// authenticating with the first line of password_file.
func TestSentinel(t *testing.T) {
	master := testpeer.StartRedis(t)
	sentinels := testpeer.StartSentinels(t, master, "mymaster", 1)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\nignored\n"), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// The master requires the password; the sentinel does not, and
	// tolerates AUTH.
	plain, _ := New(&config.Redis{URL: master.URL()})
	defer plain.Close()
	if err := plain.ConfigSet(ctx, "requirepass", "s3cret").Err(); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Redis{Sentinel: &config.RedisSentinel{Master: "mymaster", Addrs: []string{sentinels[0].Addr}}}
	noPW, _ := New(cfg)
	defer noPW.Close()
	if err := noPW.Ping(ctx).Err(); err == nil || !strings.Contains(strings.ToUpper(err.Error()), "AUTH") {
		t.Errorf("without the password: %v, want an authentication error", err)
	}
	cfg.Sentinel.PasswordFile = pw
	rdb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	if err := rdb.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("through the sentinel: %v", err)
	}
	cfg.Sentinel.PasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "password_file") {
		t.Errorf("missing password file: %v", err)
	}
}
