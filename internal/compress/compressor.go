package compress

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
// large body without stalling the response, close to the ratio of the
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

// Encoder is a pooled compressor: brotli, gzip and zstd writers all reset
// onto a new destination and flush what they hold as a complete block.
type Encoder interface {
	io.WriteCloser
	Reset(io.Writer)
	Flush() error
}

// Compressor compresses responses on the fly as a compress block says. A
// nil *Compressor compresses nothing. It is safe for concurrent use;
// encoders are pooled per coding so that a response costs no encoder
// allocation in the steady state.
type Compressor struct {
	// Static after New.
	order   []Encoding // configured codings, in preference order
	minSize int64
	types   []string
	pools   [NumEncodings]sync.Pool
}

// New returns the Compressor of a compress block, or nil when cfg is nil
// or disabled. cfg must have had the config defaults applied.
func New(cfg *config.Compress) *Compressor {
	if cfg == nil || cfg.Enabled == nil || !*cfg.Enabled {
		return nil
	}
	c := &Compressor{minSize: int64(cfg.MinSize), types: cfg.Types}
	for _, name := range cfg.Encodings {
		if e, ok := Parse(name); ok {
			c.order = append(c.order, e)
		}
	}
	c.pools[Brotli].New = func() any { return brotli.NewWriterLevel(nil, brotliLevel) }
	c.pools[Gzip].New = func() any {
		w, _ := gzip.NewWriterLevel(nil, gzipLevel) // the level is valid
		return w
	}
	c.pools[Zstd].New = func() any {
		// Concurrency 1: no background goroutines per stream.
		w, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstdLevel),
			zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(zstdWindow))
		return w
	}
	return c
}

// Order returns the configured codings in order of preference; the caller
// must not modify it.
func (c *Compressor) Order() []Encoding { return c.order }

// MinSize returns the smallest body compressed, in bytes.
func (c *Compressor) MinSize() int64 { return c.minSize }

// TypeOK reports whether a body of Content-Type ctype is compressible.
func (c *Compressor) TypeOK(ctype string) bool {
	return c != nil && TypeMatches(ctype, c.types)
}

// Eligible reports whether a body of this type and size is compressed.
func (c *Compressor) Eligible(ctype string, size int64) bool {
	return c != nil && size >= c.minSize && TypeMatches(ctype, c.types)
}

// Get returns a pooled encoder for e writing to w; hand it back with Put
// after Close.
func (c *Compressor) Get(e Encoding, w io.Writer) Encoder {
	enc := c.pools[e].Get().(Encoder)
	enc.Reset(w)
	return enc
}

// Put returns an encoder to its pool, detached from its last destination
// so the pool does not keep a response alive. An encoder abandoned in the
// middle of a stream may be put too: Get resets it.
func (c *Compressor) Put(e Encoding, enc Encoder) {
	enc.Reset(io.Discard)
	c.pools[e].Put(enc)
}

// CompressBytes returns b compressed with e, or nil when that does not make
// it smaller.
func (c *Compressor) CompressBytes(e Encoding, b []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(b) / 2)
	enc := c.Get(e, &buf)
	_, err := enc.Write(b)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	c.Put(e, enc)
	if err != nil || buf.Len() >= len(b) {
		return nil
	}
	return bytes.Clone(buf.Bytes())
}

// Stream copies src to w through a pooled encoder for e.
func (c *Compressor) Stream(e Encoding, w io.Writer, src io.Reader) error {
	enc := c.Get(e, w)
	_, err := io.Copy(enc, src)
	if cerr := enc.Close(); err == nil {
		err = cerr
	}
	c.Put(e, enc)
	return err
}
