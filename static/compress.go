package static

import (
	"bytes"
	"io"
	"sync"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"edge/config"
)

// Compression levels for on-the-fly compression: fast enough to stream a
// large file without stalling the response, close to the ratio of the
// default levels of the command-line tools.
const (
	brotliLevel = 5
	gzipLevel   = gzip.DefaultCompression
	zstdLevel   = zstd.SpeedDefault
	// zstdWindow bounds the memory of each pooled zstd encoder and keeps the
	// stream decodable by browsers (RFC 8878 recommends at most 8 MiB for
	// HTTP).
	zstdWindow = 1 << 20
)

// encoder is a pooled compressor: brotli, gzip and zstd writers all
// reset onto a new destination.
type encoder interface {
	io.WriteCloser
	Reset(io.Writer)
}

// compressor compresses responses on the fly. A nil *compressor compresses
// nothing. It is safe for concurrent use; encoders are pooled per coding so
// that a response costs no encoder allocation in the steady state.
type compressor struct {
	order   []encoding // configured codings, in preference order
	minSize int64
	types   []string
	pools   [numEnc]sync.Pool
}

// newCompressor returns nil when cfg is nil or disabled.
func newCompressor(cfg *config.Compress) *compressor {
	if cfg == nil || !*cfg.Enabled {
		return nil
	}
	c := &compressor{minSize: int64(cfg.MinSize), types: cfg.Types}
	for _, name := range cfg.Encodings {
		if e, ok := parseEncoding(name); ok {
			c.order = append(c.order, e)
		}
	}
	c.pools[encBrotli].New = func() any { return brotli.NewWriterLevel(nil, brotliLevel) }
	c.pools[encGzip].New = func() any {
		w, _ := gzip.NewWriterLevel(nil, gzipLevel) // the level is valid
		return w
	}
	c.pools[encZstd].New = func() any {
		// Concurrency 1: no background goroutines per stream.
		w, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstdLevel),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstdWindow))
		return w
	}
	return c
}

// eligible reports whether a file of this type and size is compressed.
func (c *compressor) eligible(ctype string, size int64) bool {
	return c != nil && size >= c.minSize && typeMatches(ctype, c.types)
}

// get returns a pooled encoder for e writing to w; hand it back with put
// after Close.
func (c *compressor) get(e encoding, w io.Writer) encoder {
	enc := c.pools[e].Get().(encoder)
	enc.Reset(w)
	return enc
}

// put returns an encoder to its pool, detached from its last destination
// so the pool does not keep a response alive.
func (c *compressor) put(e encoding, enc encoder) {
	enc.Reset(io.Discard)
	c.pools[e].Put(enc)
}

// compressBytes returns b compressed with e, or nil when that does not make
// it smaller.
func (c *compressor) compressBytes(e encoding, b []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(b) / 2)
	enc := c.get(e, &buf)
	_, err := enc.Write(b)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	c.put(e, enc)
	if err != nil || buf.Len() >= len(b) {
		return nil
	}
	return bytes.Clone(buf.Bytes())
}

// stream copies src to w through a pooled encoder for e.
func (c *compressor) stream(e encoding, w io.Writer, src io.Reader) error {
	enc := c.get(e, w)
	_, err := io.Copy(enc, src)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	c.put(e, enc)
	return err
}
