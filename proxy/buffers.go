package proxy

import (
	"bufio"
	"sync"
)

// bigBuf is the size of the pooled copy buffers, for tunnels and for
// ReverseProxy's response copies.
const bigBuf = 32 << 10

// bufPool holds *[]byte of bigBuf bytes. It is shared by every Handler, as
// net/http shares its own buffer pools.
var bufPool = sync.Pool{New: func() any { b := make([]byte, bigBuf); return &b }}

// smallPool holds *[]byte of smallBuf bytes, the buffers tunnel
// directions read into until a read fills one.
var smallPool = sync.Pool{New: func() any { b := make([]byte, smallBuf); return &b }}

// bufferPool adapts bufPool to httputil.BufferPool. The *[]byte that
// carried a buffer out of bufPool goes to holders, to carry the next one
// back in: Put then allocates nothing.
type bufferPool struct{}

var holders = sync.Pool{New: func() any { return new([]byte) }}

func (bufferPool) Get() []byte {
	p := bufPool.Get().(*[]byte)
	b := *p
	*p = nil
	holders.Put(p)
	return b
}

func (bufferPool) Put(b []byte) {
	p := holders.Get().(*[]byte)
	*p = b
	bufPool.Put(p)
}

// writers are the request write buffers, held only while a request is
// written.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
