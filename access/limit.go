package access

import (
	"container/list"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"edge/config"
	"edge/internal/clientip"
	"edge/internal/httperr"
)

// Limit wraps h with l: a token bucket and a count of requests in
// progress per key, keys kept in an LRU of l.MaxKeys. nil l: h itself.
func Limit(h http.Handler, l *config.Limit) http.Handler {
	if l == nil {
		return h
	}
	lim := &limiter{next: h, cfg: l, rate: rate.Limit(l.PerSecond()), burst: l.Burst + 1,
		keys: map[string]*list.Element{}, lru: list.New()}
	if name, ok := strings.CutPrefix(l.Key, "header:"); ok {
		lim.header = http.CanonicalHeaderKey(name)
	}
	if lim.rate == 0 {
		lim.rate = rate.Inf
	}
	return lim
}

type limiter struct {
	next   http.Handler
	cfg    *config.Limit
	rate   rate.Limit
	burst  int
	header string // key from this request header; "" keys by client address

	mu   sync.Mutex
	keys map[string]*list.Element // of *keyState, guarded by mu
	lru  *list.List               // front: most recently seen
}

// keyState is one key's bucket and requests in progress.
type keyState struct {
	key    string
	bucket *rate.Limiter
	active int // guarded by limiter.mu
}

func (l *limiter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var buf [64]byte
	key := l.keyOf(buf[:0], r)
	now := time.Now()
	l.mu.Lock()
	st := l.stateLocked(key)
	var wait time.Duration
	allowed := true
	if l.rate != rate.Inf && !st.bucket.AllowN(now, 1) {
		// The time until the bucket holds a whole token again.
		missing := 1 - st.bucket.TokensAt(now)
		allowed, wait = false, time.Duration(missing/float64(l.rate)*float64(time.Second))
	}
	if allowed && l.cfg.Connections > 0 {
		if st.active >= l.cfg.Connections {
			allowed, wait = false, time.Second
		} else {
			st.active++
		}
	}
	l.mu.Unlock()
	if !allowed {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(math.Ceil(wait.Seconds())))))
		httperr.Error(w, l.cfg.Status)
		return
	}
	if l.cfg.Connections > 0 {
		defer func() {
			l.mu.Lock()
			st.active--
			l.mu.Unlock()
		}()
	}
	l.next.ServeHTTP(w, r)
}

// keyOf appends r's key to b: the header's value, or the client address.
func (l *limiter) keyOf(b []byte, r *http.Request) []byte {
	if l.header != "" {
		return append(b, r.Header.Get(l.header)...)
	}
	if a := clientip.Of(r); a.IsValid() {
		return a.AppendTo(b)
	}
	return append(b, r.RemoteAddr...)
}

// stateLocked returns key's state, making it the most recent and forgetting
// the least recent key beyond MaxKeys. A forgotten key with requests in
// progress keeps its own count (they hold st); it starts afresh when seen
// again.
func (l *limiter) stateLocked(key []byte) *keyState {
	if e, ok := l.keys[string(key)]; ok {
		l.lru.MoveToFront(e)
		return e.Value.(*keyState)
	}
	st := &keyState{key: string(key), bucket: rate.NewLimiter(l.rate, l.burst)}
	l.keys[st.key] = l.lru.PushFront(st)
	for l.lru.Len() > l.cfg.MaxKeys {
		old := l.lru.Back()
		l.lru.Remove(old)
		delete(l.keys, old.Value.(*keyState).key)
	}
	return st
}

// size returns the number of keys held.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}
