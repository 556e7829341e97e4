package static

import (
	"sync"
)

// cache keeps small hot files in memory: their bytes, their precompressed
// and compressed variants and their formatted headers, so that serving one
// costs a map lookup and a write. It is bounded by bytes; when full it
// evicts by second chance (an entry used since the last sweep survives one
// more), which approximates LRU without writing shared state on every hit.
// A new entry starts unmarked, so files read once and never again go first.
// A nil *cache stores nothing. Safe for concurrent use.
type cache struct {
	maxFile  int64 // largest identity file cached; static after construction
	maxBytes int64 // bound of the sum of entry sizes; static after construction
	metrics  *metrics

	mu      sync.RWMutex
	entries map[string]*asset // by request key; guarded by mu
	bytes   int64             // sum of entries' mem; guarded by mu
}

// newCache returns nil when maxFile is 0 or less (cache off).
func newCache(maxFile, maxBytes int64, m *metrics) *cache {
	if maxFile <= 0 || maxBytes <= 0 {
		return nil
	}
	return &cache{maxFile: maxFile, maxBytes: maxBytes, metrics: m, entries: map[string]*asset{}}
}

// fits reports whether a file of this size may be cached.
func (c *cache) fits(size int64) bool {
	return c != nil && size <= c.maxFile
}

// get returns the entry for key, or nil.
func (c *cache) get(key string) *asset {
	if c == nil {
		return nil
	}
	c.mu.RLock()
	a := c.entries[key]
	c.mu.RUnlock()
	if a != nil && !a.used.Load() {
		a.used.Store(true) // load first: no cache-line write on the hot path
	}
	return a
}

// add stores a under key, replacing what was there and evicting others
// until the total fits. An entry larger than the whole budget is not
// stored.
func (c *cache) add(key string, a *asset) {
	if c == nil || a.mem > c.maxBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.entries[key]; old != nil {
		c.bytes -= old.mem
		delete(c.entries, key)
	}
	// Two sweeps at most: the first may only clear "used" marks, the
	// second then finds entries to evict. Map order is random, so the
	// victims are spread over the cache.
	for sweep := 0; sweep < 2 && c.bytes+a.mem > c.maxBytes; sweep++ {
		for k, e := range c.entries {
			if c.bytes+a.mem <= c.maxBytes {
				break
			}
			if sweep == 0 && e.used.Swap(false) {
				continue
			}
			delete(c.entries, k)
			c.bytes -= e.mem
		}
	}
	c.entries[key] = a
	c.bytes += a.mem
	c.metrics.cacheSize(len(c.entries), c.bytes)
}

// remove deletes key if it still maps to a (a concurrent reload may have
// replaced it already).
func (c *cache) remove(key string, a *asset) {
	if c == nil {
		return
	}
	c.mu.Lock()
	if c.entries[key] == a {
		delete(c.entries, key)
		c.bytes -= a.mem
		c.metrics.cacheSize(len(c.entries), c.bytes)
	}
	c.mu.Unlock()
}

// clear drops every entry.
func (c *cache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.entries)
	c.bytes = 0
	c.metrics.cacheSize(0, 0)
	c.mu.Unlock()
}

// size returns the number of entries and their total bytes.
func (c *cache) size() (n int, bytes int64) {
	if c == nil {
		return 0, 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries), c.bytes
}
