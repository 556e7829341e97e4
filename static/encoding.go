package static

import "edge/internal/compress"

// encSuffix is the sidecar file suffix of each coding.
var encSuffix = [compress.NumEncodings]string{"", ".br", ".zst", ".gz"}

// sidecarOrder is the preference among precompressed files: brotli files
// built offline (brotli -q 11) are usually the smallest, then zstd, then
// gzip, which every client accepts.
var sidecarOrder = []compress.Encoding{compress.Brotli, compress.Zstd, compress.Gzip}
