package testutil

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Decode undoes a Content-Encoding ("", br, zstd or gzip) with the
// reference decoders, failing t when body is not a complete, valid stream
// of that coding.
func Decode(t testing.TB, coding, body string) string {
	t.Helper()
	s, err := TryDecode(coding, body)
	if err != nil {
		t.Fatalf("decode %s: %v", coding, err)
	}
	return s
}

// TryDecode is Decode returning the error.
func TryDecode(coding, body string) (string, error) {
	var r io.Reader = strings.NewReader(body)
	switch coding {
	case "":
		return body, nil
	case "br":
		r = brotli.NewReader(r)
	case "zstd":
		d, err := zstd.NewReader(r)
		if err != nil {
			return "", err
		}
		defer d.Close()
		r = d
	case "gzip":
		g, err := gzip.NewReader(r)
		if err != nil {
			return "", err
		}
		r = g
	default:
		return "", fmt.Errorf("unknown coding %q", coding)
	}
	b, err := io.ReadAll(r)
	return string(b), err
}
