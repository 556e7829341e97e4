package static

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// rootDir is one opening of the served directory. os.Root confines every
// name to it: ".." and symlinks that lead outside fail instead of
// escaping. A reopened directory (a deploy that flips a symlink) gets a new
// rootDir; the old one is closed by os.Root's finalizer once the last
// request using it is done.
type rootDir struct {
	r  *os.Root
	fi fs.FileInfo // of the directory, to notice it was replaced
}

func openRootDir(dir string) (*rootDir, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	fi, err := r.Stat(".")
	if err != nil {
		r.Close()
		return nil, err
	}
	return &rootDir{r: r, fi: fi}, nil
}

// dir returns the current opening of the served directory. At most once
// per revalidation interval it checks with stat(2) whether the configured
// path now names another directory (nginx resolves the path on every
// request, so a deploy that repoints a "current" symlink takes effect
// there too) and then reopens it and empties the cache.
func (h *Handler) dir() *rootDir {
	cur := h.root.Load()
	now := h.tick()
	last := h.rootChecked.Load()
	if now-last < h.revalidate || !h.rootChecked.CompareAndSwap(last, now) {
		return cur
	}
	if err := h.hookOp("stat", h.dirPath); err != nil {
		return cur
	}
	fi, err := os.Stat(h.dirPath)
	if err != nil || os.SameFile(fi, cur.fi) {
		// A directory that vanished keeps being served from the open
		// descriptor rather than turning every request into a 404.
		return cur
	}
	next, err := openRootDir(h.dirPath)
	if err != nil {
		h.log.Warn("static directory replaced but cannot be opened", "dir", h.dirPath, "err", err)
		return cur
	}
	if !h.root.CompareAndSwap(cur, next) {
		next.r.Close()
		return h.root.Load()
	}
	h.cache.clear()
	h.log.Info("static directory replaced, serving the new one", "dir", h.dirPath)
	return next
}

// hookOp calls the test hook, if any, before a filesystem operation.
func (h *Handler) hookOp(op, name string) error {
	if h.testHook == nil {
		return nil
	}
	if err := h.testHook(op, name); err != nil {
		return &fs.PathError{Op: op, Path: name, Err: err}
	}
	return nil
}

// open opens name for reading. O_NONBLOCK keeps a FIFO planted in the
// directory from blocking the request until a writer appears; regular
// files ignore the flag.
func (h *Handler) open(rd *rootDir, name string) (*os.File, error) {
	if err := h.hookOp("open", name); err != nil {
		return nil, err
	}
	return rd.r.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}

// stat returns the FileInfo of name, following symlinks inside the root.
func (h *Handler) stat(rd *rootDir, name string) (fs.FileInfo, error) {
	if err := h.hookOp("stat", name); err != nil {
		return nil, err
	}
	return rd.r.Stat(name)
}

// openRegular opens name when it is a regular file; ok is false otherwise
// (missing, a directory, a device, unreadable).
func (h *Handler) openRegular(rd *rootDir, name string) (f *os.File, fi fs.FileInfo, ok bool) {
	f, err := h.open(rd, name)
	if err != nil {
		return nil, nil, false
	}
	fi, err = f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, false
	}
	return f, fi, true
}

// readAll reads exactly size bytes from the start of f. A file that
// shrank meanwhile yields io.ErrUnexpectedEOF.
func readAll(f *os.File, size int64) ([]byte, error) {
	b := make([]byte, size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, err
	}
	return b, nil
}

// errorStatus maps a filesystem error to a response code. Only a refused
// permission is told apart (403) and trouble on the server's side (500,
// logged by the caller); everything else — missing, not a directory, a
// symlink leading out of the root, a loop, a name too long — is a 404 so
// that probing reveals nothing about what lies outside.
func errorStatus(err error) int {
	switch {
	case errors.Is(err, fs.ErrPermission):
		return 403
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE),
		errors.Is(err, syscall.EIO), errors.Is(err, syscall.ENOMEM),
		errors.Is(err, syscall.ENOBUFS), errors.Is(err, io.ErrUnexpectedEOF):
		return 500
	}
	return 404
}
