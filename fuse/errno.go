package fuse

import (
	"context"
	"errors"
	"log/slog"
	"syscall"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// errnos is the one table from fsys errors to errnos; errno consults it.
// The order matters only for errors that wrap more than one sentinel: the
// first match wins, so the more specific conditions come first.
var errnos = []struct {
	err   error
	errno syscall.Errno
}{
	// The kernel interrupted the request (a signal to the caller): EINTR,
	// however the cancellation surfaced (a remote call reports "host
	// unreachable: context canceled").
	{context.Canceled, syscall.EINTR},
	{fsys.ErrNotExist, syscall.ENOENT},
	{fsys.ErrExist, syscall.EEXIST},
	{fsys.ErrNotDir, syscall.ENOTDIR},
	{fsys.ErrIsDir, syscall.EISDIR},
	{fsys.ErrNotEmpty, syscall.ENOTEMPTY},
	{fsys.ErrPermission, syscall.EACCES},
	{fsys.ErrConflict, syscall.EAGAIN},
	{fsys.ErrNameTooLong, syscall.ENAMETOOLONG},
	{fsys.ErrInvalid, syscall.EINVAL},
	{fsys.ErrNoSpace, syscall.ENOSPC},
	{fsys.ErrCrossVolume, syscall.EXDEV},
	{fsys.ErrNotSupported, syscall.ENOTSUP},
	{fsys.ErrIntegrity, syscall.EIO},
	{fsys.ErrUnavailable, syscall.EIO},
	// A name the kernel passed that is not a valid path component; the
	// other component errors are EINVAL (below).
	{paths.ErrComponentTooLong, syscall.ENAMETOOLONG},
	// Our own per-operation deadline passed.
	{context.DeadlineExceeded, syscall.ETIMEDOUT},
}

// errno maps an error from fsys.FS to the one errno the kernel gets: nil is
// 0, each fsys sentinel has its errno (see the package documentation), and
// anything unexpected is EIO, logged so that it is not silent.
func (m *Mounted) errno(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnos {
		if errors.Is(err, e.err) {
			if e.errno == syscall.EIO {
				m.log.Warn("i/o error", "op", op, "err", err)
			}
			return e.errno
		}
	}
	var pe *paths.Error
	if errors.As(err, &pe) {
		return syscall.EINVAL
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	m.log.Warn("unexpected error; reported as EIO", "op", op, "err", err)
	return syscall.EIO
}

// discard is a logger that drops everything.
var discard = slog.New(slog.DiscardHandler)
