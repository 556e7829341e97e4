// Command bare is the "what net/http alone costs" anchor of the benchmarks:
// the same job as edge (files under /static/ with nginx root semantics,
// everything else proxied, WebSockets included, plain HTTP and HTTPS) built
// from the standard library's defaults only: http.FileServer,
// httputil.ReverseProxy and crypto/tls. The gap between bare and edge is
// what edge's own features cost (or save).
//
// With BARE_STATIC=memory, files under /static/ are read into memory at
// their first request and answered with just Content-Type and
// Content-Length: the least any net/http server can do per request, so
// that the bare column shows the ceiling of Go's HTTP/1 and HTTP/2
// servers themselves (bench/README.md, HTTP/2).
package main

import (
	"crypto/tls"
	"flag"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

func main() {
	httpAddr := flag.String("http", "127.0.0.1:23080", "plain HTTP listen address")
	httpsAddr := flag.String("https", "127.0.0.1:23443", "HTTPS listen address")
	root := flag.String("root", "", "document root (nginx root: /static/x is ROOT/static/x)")
	certFile := flag.String("cert", "", "PEM certificate")
	keyFile := flag.String("key", "", "PEM private key")
	upstream := flag.String("upstream", "http://127.0.0.1:24000", "proxy upstream")
	flag.Parse()

	target, err := url.Parse(*upstream)
	if err != nil {
		log.Fatal(err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64 // as edge, nginx and Caddy in the benchmark configs
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
		},
		Transport: transport,
	}
	mux := http.NewServeMux()
	if os.Getenv("BARE_STATIC") == "memory" {
		mux.Handle("/static/", memoryFiles(*root))
	} else {
		mux.Handle("/static/", http.FileServer(http.Dir(*root)))
	}
	mux.Handle("/", proxy)

	newServer := func(addr string) *http.Server {
		return &http.Server{
			Addr:              addr,
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       75 * time.Second,
			MaxHeaderBytes:    64 << 10,
		}
	}
	errc := make(chan error, 2)
	go func() { errc <- newServer(*httpAddr).ListenAndServe() }()
	go func() {
		s := newServer(*httpsAddr)
		s.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		errc <- s.ListenAndServeTLS(*certFile, *keyFile)
	}()
	log.Fatal(<-errc)
}

// memoryFiles serves ROOT/path from memory, reading each file once.
func memoryFiles(root string) http.Handler {
	var mu sync.Mutex
	files := map[string][]byte{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b, ok := files[r.URL.Path]
		if !ok {
			var err error
			if b, err = os.ReadFile(filepath.Join(root, filepath.Clean("/"+r.URL.Path))); err != nil {
				mu.Unlock()
				http.NotFound(w, r)
				return
			}
			files[r.URL.Path] = b
		}
		mu.Unlock()
		h := w.Header()
		h["Content-Type"] = []string{"application/octet-stream"}
		h["Content-Length"] = []string{strconv.Itoa(len(b))}
		w.Write(b)
	})
}
