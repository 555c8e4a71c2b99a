// Package fuse mounts Blocktree's namespace in the kernel: it adapts an
// fsys.FS (the encrypted distributed file system) to FUSE with go-fuse's fs
// API. It is the only package where errnos appear.
//
// # The tree
//
// A mount at DIR shows one directory per domain: DIR/<root-id>/… for the
// node's own domain (Options.Self, always listed) and for any other domain
// the node can read, which appears when it is looked up by name
// (fsys.FS.Root; ENOENT if it does not exist or cannot be located, EACCES
// if the node holds no readcap for it). The mount root itself is read-only.
//
// Inode numbers are fsys inode numbers, and they are also the kernel's node
// IDs (go-fuse's ExternalNodeID), so an invalidation naming an fsys.Ino goes
// straight to the kernel.
//
// # Operations
//
// lookup, getattr, setattr (chmod, truncate, utimens; chown to another user
// is EPERM: owners are principals, shown as the mounting user), readdir,
// open, create (O_EXCL, O_TRUNC), read, write (O_APPEND writes at the
// current size), mkdir, rmdir, unlink, rename (atomic within a volume, with
// RENAME_NOREPLACE and RENAME_EXCHANGE; across volumes EXDEV), symlink,
// readlink, fsync, flush, statfs, lseek (SEEK_DATA/SEEK_HOLE: no holes are
// exposed), fallocate (mode 0 extends; KEEP_SIZE is a no-op; others
// EOPNOTSUPP). Not supported: hard links (EPERM: an inode has one parent),
// extended attributes (EOPNOTSUPP, answered by the kernel), O_TMPFILE
// (EOPNOTSUPP), forwarded record locks (the kernel keeps fcntl and flock
// locks locally, per mount). Files may exceed 4 GiB and are written at any
// offset without rewriting them.
//
// # Errors
//
// Every fsys error maps to one errno in one table (errno.go):
//
//	fsys.ErrNotExist      ENOENT         fsys.ErrConflict     EAGAIN
//	fsys.ErrExist         EEXIST         fsys.ErrUnavailable  EIO
//	fsys.ErrNotDir        ENOTDIR        fsys.ErrIntegrity    EIO
//	fsys.ErrIsDir         EISDIR         fsys.ErrNoSpace      ENOSPC
//	fsys.ErrNotEmpty      ENOTEMPTY      fsys.ErrCrossVolume  EXDEV
//	fsys.ErrPermission    EACCES         fsys.ErrNotSupported ENOTSUP
//	fsys.ErrInvalid       EINVAL         fsys.ErrNameTooLong  ENAMETOOLONG
//	context.Canceled      EINTR          context.DeadlineExceeded ETIMEDOUT
//
// A bad name (a paths error) is EINVAL, or ENAMETOOLONG; anything else is
// EIO and is logged. Data reads honour the kernel's interrupt (a signal to
// the caller: EINTR, whatever error the cancellation surfaced as);
// metadata reads (lookup, getattr, readdir, readlink, statfs) and changes
// ignore it, since the Go runtime's preemption signals are frequent and
// open(2) or stat(2) callers rarely retry EINTR, and a signal must not cut
// a commit short. Every operation is bounded by Options.OpTimeout.
//
// # Caching and invalidation
//
// The kernel caches attributes and entries for Options.AttrTimeout and
// EntryTimeout, and file pages across opens (FOPEN_KEEP_CACHE); names that
// do not exist are not cached. When another node changes something, the
// client calls the function given to fsys.FS.Notify; the mount queues the
// invalidation and one goroutine passes it to the kernel (an inode: its
// attributes and all its pages; an entry: the name in its directory and the
// directory's attributes). The queue never blocks the client (the kernel's
// notify calls can wait on locks held by requests that wait on the client);
// it drops duplicates, and past 65,536 waiting the oldest are dropped, so
// the timeouts bound staleness only when notifications are lost. The kernel
// also drops a file's pages when it sees a new size or mtime.
//
// # Writes and durability
//
// Writes are write-back: a write returns once the data is in the client.
// fsync(2) calls fsys.FS.Fsync, which returns when the host holds the data
// durably, and with it every change this node committed to the volume
// before (the file's name included). close(2) after a write (FLUSH) starts
// the commit in the background when the FS can (fsys/client: Client.Flush) and
// returns, as a local file system does; a commit that fails then is
// reported by the next fsync. unlink(2) of a file with such writes waits
// for their commit (fsys/client: Client.CommitFile, not durable) so that open
// descriptors still read them. Namespace changes are committed to the host
// (ordered, visible to every node, conflicts detected) before they return,
// but against a host that is an fsys.Syncer they are durable only after
// the next fsync, as on a local file system; rename is durable at once.
// fsync on a directory calls fsys.FS.Fsync on it, which makes every
// change this node committed before durable at the host. docs/fs.md, "Durability",
// says what survives a daemon kill and what a power loss. Read-ahead is
// the kernel's (up to MaxReadAhead) plus the client's own.
//
// # Lifecycle
//
// Mount checks for /dev/fuse (ErrNoFUSE) and for an existing empty
// directory (ErrMountPoint), mounts with mount(2) directly (root or
// CAP_SYS_ADMIN; no fusermount; ErrPermission otherwise) and serves until
// (*Mounted).Unmount, the package-level Unmount(dir), umount(8), or the end
// of the context given to Mount. Unmount is idempotent and waits for the
// server to stop; a busy mount is detached lazily (MNT_DETACH) and, if its
// users still hold it after a moment, its FUSE connection is aborted
// through /sys/fs/fuse/connections (mounted there if needed), after which
// they get ENOTCONN. Unmount(dir) also clears the mount of a daemon that
// died (where every access fails with ENOTCONN).
//
// All methods of Mounted are safe for concurrent use.
package fuse
