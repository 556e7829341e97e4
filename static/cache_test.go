package static

import (
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"edge/internal/compress"
)

// TestHotFileNoFilesystem proves that a cached file is served without any
// filesystem operation inside the revalidation window, and with stats
// only (no open, no read) when it is revalidated unchanged.
func TestHotFileNoFilesystem(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"hot.js": strings.Repeat("x", 1024), "d/index.html": "i"})
	s := newSite(t, "/", fmt.Sprintf("{root: %q, compress: {}}", dir), nil)

	for _, path := range []string{"/hot.js", "/d/"} {
		s.get(t, path) // load
		before := s.ops.Load()
		for i := range 50 {
			accept := []string{"", "gzip", "br", "zstd"}[i%4]
			resp, _ := s.get(t, path, "Accept-Encoding: "+accept)
			wantStatus(t, path, resp, 200)
		}
		if n := s.ops.Load() - before; n != 0 {
			t.Errorf("%s: %d filesystem operations for 50 cached requests, want 0", path, n)
		}
	}

	var opened []string
	s.setHook(func(op, name string) error {
		if op == "open" {
			opened = append(opened, name)
		}
		return nil
	})
	s.clock.advance(1100 * time.Millisecond)
	before := s.ops.Load()
	s.get(t, "/hot.js")
	s.setHook(nil)
	// One stat for the directory itself, one for the file and one per
	// possible sidecar.
	if n := s.ops.Load() - before; n != 5 || len(opened) != 0 {
		t.Errorf("revalidation: %d operations, opened %q; want 5 stats and no open", n, opened)
	}
}

func TestCacheSeesChanges(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "app.js")
	writeFiles(t, dir, map[string]string{"app.js": "version 1"})
	s := newSite(t, "/", fmt.Sprintf("{root: %q, cache_revalidate: 2s}", dir), nil)

	resp, body := s.get(t, "/app.js")
	etag1 := resp.Header.Get("Etag")
	if body != "version 1" {
		t.Fatalf("body %q", body)
	}
	// Same size, new content: only the modification time tells.
	if err := os.WriteFile(p, []byte("version 2"), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, time.Time{}, time.Now().Add(time.Minute))

	s.clock.advance(time.Second)
	if _, body = s.get(t, "/app.js"); body != "version 1" {
		t.Errorf("inside the window: %q, want the cached version 1", body)
	}
	s.clock.advance(1100 * time.Millisecond)
	resp, body = s.get(t, "/app.js")
	if body != "version 2" || resp.Header.Get("Etag") == etag1 {
		t.Errorf("after the window: %q with ETag %s (was %s), want version 2 and a new ETag", body, resp.Header.Get("Etag"), etag1)
	}
	resp, _ = s.get(t, "/app.js", "If-None-Match: "+etag1)
	wantStatus(t, "old ETag", resp, 200)

	// A sidecar that appears is picked up, and one that goes away is dropped.
	gz := compressWith(t, compress.Gzip, "version 2")
	os.WriteFile(p+".gz", []byte(gz), 0o644)
	s.clock.advance(3 * time.Second)
	if resp, _ = s.get(t, "/app.js", "Accept-Encoding: gzip"); resp.Header.Get("Content-Encoding") != "gzip" {
		t.Errorf("new sidecar not served")
	}
	os.Remove(p + ".gz")
	s.clock.advance(3 * time.Second)
	if resp, _ = s.get(t, "/app.js", "Accept-Encoding: gzip"); resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("removed sidecar still served")
	}

	// A deleted file becomes a 404 after the window.
	os.Remove(p)
	s.clock.advance(3 * time.Second)
	resp, _ = s.get(t, "/app.js")
	wantStatus(t, "deleted", resp, 404)
}

// TestRootSymlinkSwap follows a deploy that repoints a "current" symlink.
func TestRootSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"v1/a.txt": "one", "v2/a.txt": "two", "v2/b.txt": "bee"})
	current := filepath.Join(dir, "current")
	mustSymlink(t, "v1", current)
	s := newSite(t, "/", fmt.Sprintf("{root: %q}", current), nil)
	if _, body := s.get(t, "/a.txt"); body != "one" {
		t.Fatalf("body %q", body)
	}
	tmp := filepath.Join(dir, "current.new")
	mustSymlink(t, "v2", tmp)
	if err := os.Rename(tmp, current); err != nil {
		t.Fatal(err)
	}
	s.clock.advance(1100 * time.Millisecond)
	if _, body := s.get(t, "/a.txt"); body != "two" {
		t.Errorf("after the swap: %q, want two", body)
	}
	if _, body := s.get(t, "/b.txt"); body != "bee" {
		t.Errorf("new file after the swap: %q", body)
	}
}

func TestLargeFileStreamed(t *testing.T) {
	dir := t.TempDir()
	big := make([]byte, 1<<20)
	rand.Read(big)
	writeFiles(t, dir, map[string]string{"big.bin": string(big)})
	s := newSite(t, "/", fmt.Sprintf("{root: %q}", dir), nil)
	for range 2 {
		before := s.ops.Load()
		resp, body := s.get(t, "/big.bin")
		wantHeader(t, "big", resp, "Content-Length", strconv.Itoa(len(big)))
		if body != string(big) {
			t.Fatalf("big file differs")
		}
		if s.ops.Load() == before {
			t.Errorf("a file over cache_max_file_size was served from memory")
		}
	}
	if n, _ := s.h.cache.size(); n != 0 {
		t.Errorf("cache holds %d entries, want 0", n)
	}
}

func TestCacheBounded(t *testing.T) {
	c := newCache(100, 1000, nil)
	for i := range 50 {
		a := &asset{mem: 90}
		c.add(strconv.Itoa(i), a)
		if n, b := c.size(); b > 1000 || n > 11 {
			t.Fatalf("after %d adds: %d entries, %d bytes; over the bound", i+1, n, b)
		}
	}
	// Second chance: an entry in use survives a sweep that evicts others.
	c = newCache(100, 300, nil)
	hot := &asset{mem: 100}
	c.add("hot", hot)
	for i := range 20 {
		c.get("hot")
		c.add(strconv.Itoa(i), &asset{mem: 100})
	}
	if c.get("hot") != hot {
		t.Errorf("the entry hit before every add was evicted")
	}
	c.add("huge", &asset{mem: 301})
	if c.get("huge") != nil {
		t.Errorf("an entry over the whole budget was stored")
	}
	var nilCache *cache
	nilCache.add("x", &asset{})
	if nilCache.get("x") != nil || nilCache.fits(1) {
		t.Errorf("nil cache must store nothing")
	}
}

// TestCacheConcurrent serves, rewrites and revalidates at once; run with
// -race. Every response must be one complete version with the matching
// ETag.
func TestCacheConcurrent(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("f%d.txt", i)] = "v0"
	}
	writeFiles(t, dir, files)
	s := newSite(t, "/", fmt.Sprintf("{root: %q, cache_max_bytes: 20KiB}", dir), nil)

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(s.srv.URL + fmt.Sprintf("/f%d.txt", (i+w)%20))
				if err != nil {
					t.Error(err)
					return
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 || !strings.HasPrefix(string(body), "v") {
					t.Errorf("status %d body %q err %v", resp.StatusCode, body, err)
					return
				}
			}
		})
	}
	for v := 1; v <= 20; v++ {
		name := filepath.Join(dir, fmt.Sprintf("f%d.txt", v%20))
		tmp := name + ".tmp"
		os.WriteFile(tmp, []byte(fmt.Sprintf("v%d-%s", v, strings.Repeat("x", v*10))), 0o644)
		os.Rename(tmp, name) // atomic replace, as deploy tools do
		s.clock.advance(300 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	s.clock.advance(2 * time.Second)
	if _, body := s.get(t, "/f0.txt"); !strings.HasPrefix(body, "v20-") {
		t.Errorf("final f0.txt = %q, want v20", body)
	}
}
