package fuse

import (
	"context"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// node is one fsys inode as the kernel sees it. The kernel's node ID is its
// Ino (see Mount). Its methods are called by go-fuse, concurrently.
type node struct {
	fs.Inode
	m   *Mounted
	ino fsys.Ino

	// dirty: a write since the last Fsync; Flush (close) commits only then.
	dirty atomic.Bool
	// opens counts open handles, so that fstat on an open file that
	// another name replaced or that was unlinked still answers.
	opens atomic.Int32
	// unlinked: this mount removed the node's name (unlink, or a rename
	// over it), so stat shows no links while it stays open.
	unlinked atomic.Bool

	// appendMu serialises O_APPEND writes: reading the size and writing
	// at it must not interleave with another append on this node.
	appendMu sync.Mutex

	// mu guards last.
	mu   sync.Mutex
	last fsys.Attr // the latest attributes fsys returned
}

var (
	_ fs.NodeLookuper   = (*node)(nil)
	_ fs.NodeGetattrer  = (*node)(nil)
	_ fs.NodeSetattrer  = (*node)(nil)
	_ fs.NodeReaddirer  = (*node)(nil)
	_ fs.NodeOpener     = (*node)(nil)
	_ fs.NodeCreater    = (*node)(nil)
	_ fs.NodeMkdirer    = (*node)(nil)
	_ fs.NodeSymlinker  = (*node)(nil)
	_ fs.NodeReadlinker = (*node)(nil)
	_ fs.NodeUnlinker   = (*node)(nil)
	_ fs.NodeRmdirer    = (*node)(nil)
	_ fs.NodeRenamer    = (*node)(nil)
	_ fs.NodeLinker     = (*node)(nil)
	_ fs.NodeFsyncer    = (*node)(nil)
	_ fs.NodeStatfser   = (*node)(nil)
	_ fs.NodeLseeker    = (*node)(nil)
	_ fs.NodeAllocater  = (*node)(nil)
)

// kindMode is the S_IF* bits of a kind.
func kindMode(k fsys.Kind) uint32 {
	switch k {
	case fsys.KindDir:
		return syscall.S_IFDIR
	case fsys.KindSymlink:
		return syscall.S_IFLNK
	default:
		return syscall.S_IFREG
	}
}

// op bounds a read-only operation with Options.OpTimeout; ctx carries the
// kernel's interrupt (a signal to the calling process), so a read from an
// unreachable host can be interrupted (EINTR, which Go and most C callers
// retry).
func (m *Mounted) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, m.opts.OpTimeout)
}

// meta bounds a metadata read (lookup, getattr, readdir, readlink,
// statfs) like change: it ignores the kernel's interrupts, which the Go
// runtime's preemption signals make common, since open(2), stat(2) and
// their callers rarely retry EINTR; these calls are short and bounded by
// Options.OpTimeout. Data reads stay interruptible (op).
func (m *Mounted) meta(ctx context.Context) (context.Context, context.CancelFunc) {
	return m.change(ctx)
}

// change bounds an operation that changes something with
// Options.OpTimeout but ignores the kernel's interrupts: a signal must not
// cut a commit short, and signals are common (the Go runtime preempts
// with SIGURG, profilers use SIGPROF), while close(2) and many callers do
// not retry EINTR.
func (m *Mounted) change(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), m.opts.OpTimeout)
}

// fillAttr converts a to the kernel's form.
func (m *Mounted) fillAttr(a fsys.Attr, out *gofuse.Attr) {
	out.Ino = uint64(a.Ino)
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	out.Blksize = statBlockSize
	out.Mode = kindMode(a.Kind) | a.Mode&07777
	out.Nlink = a.Nlink
	if out.Nlink == 0 && a.Kind == fsys.KindDir {
		out.Nlink = 2
	}
	out.Uid = m.uid
	out.Gid = m.gid
	atime, mtime, ctime := a.Atime, a.Mtime, a.Ctime
	out.SetTimes(&atime, &mtime, &ctime)
}

// child returns the kernel inode for a, reusing the node go-fuse already
// has for a.Ino (go-fuse dedups by StableAttr), and fills out.
func (m *Mounted) child(ctx context.Context, parent *fs.Inode, a fsys.Attr, out *gofuse.EntryOut) *fs.Inode {
	m.fillAttr(a, &out.Attr)
	n := &node{m: m, ino: a.Ino, last: a}
	return parent.NewInode(ctx, n, fs.StableAttr{Mode: kindMode(a.Kind), Ino: uint64(a.Ino)})
}

func (n *node) remember(a fsys.Attr) {
	n.mu.Lock()
	n.last = a
	n.mu.Unlock()
}

// Lookup implements fs.NodeLookuper.
func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, cancel := n.m.meta(ctx)
	defer cancel()
	seq := n.m.inv.seq.Load()
	a, err := n.m.fs.Lookup(ctx, n.ino, name)
	if err != nil {
		return nil, n.m.errno("lookup", err)
	}
	ch := n.m.child(ctx, n.EmbeddedInode(), a, out)
	if !n.m.inv.fresh(seq) {
		// Zero would mean the mount's default: one nanosecond is none.
		out.SetEntryTimeout(time.Nanosecond)
		out.SetAttrTimeout(time.Nanosecond)
	}
	return ch, 0
}

// Getattr implements fs.NodeGetattrer. A file that is open but no longer
// has a name (unlinked, or replaced by a rename) keeps the attributes it
// had, with no links, as POSIX wants of fstat.
func (n *node) Getattr(ctx context.Context, f fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	ctx, cancel := n.m.meta(ctx)
	defer cancel()
	seq := n.m.inv.seq.Load()
	defer func() {
		if !n.m.inv.fresh(seq) {
			out.SetTimeout(time.Nanosecond)
		}
	}()
	a, err := n.m.fs.Getattr(ctx, n.ino)
	if err != nil {
		errno := n.m.errno("getattr", err)
		if errno != syscall.ENOENT || (f == nil && n.opens.Load() == 0) {
			return errno
		}
		n.mu.Lock()
		a = n.last
		n.mu.Unlock()
		a.Nlink = 0
	} else {
		n.remember(a)
		if n.unlinked.Load() {
			a.Nlink = 0
		}
	}
	n.m.fillAttr(a, &out.Attr)
	return 0
}

// orphan marks the child name of dir, if the kernel knows it, as having
// lost its name.
func orphan(dir *fs.Inode, name string) {
	if ch := dir.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok {
			cn.unlinked.Store(true)
		}
	}
}

// Setattr implements fs.NodeSetattrer: chmod, truncate and utimens.
// Ownership is not Blocktree's (the owner is a principal, shown as the
// mounting user): chown to anyone else is EPERM.
func (n *node) Setattr(ctx context.Context, f fs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	if uid, ok := in.GetUID(); ok && uid != n.m.uid {
		return syscall.EPERM
	}
	if gid, ok := in.GetGID(); ok && gid != n.m.gid {
		return syscall.EPERM
	}
	var sa fsys.SetAttr
	if mode, ok := in.GetMode(); ok {
		sa.Mode = &mode
	}
	if size, ok := in.GetSize(); ok {
		sa.Size = &size
	}
	if mt, ok := in.GetMTime(); ok {
		sa.Mtime = &mt
	}
	if at, ok := in.GetATime(); ok {
		sa.Atime = &at
	}
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	var a fsys.Attr
	var err error
	if sa == (fsys.SetAttr{}) {
		a, err = n.m.fs.Getattr(ctx, n.ino)
	} else {
		a, err = n.m.fs.Setattr(ctx, n.ino, sa)
	}
	if err != nil {
		return n.m.errno("setattr", err)
	}
	n.remember(a)
	n.m.fillAttr(a, &out.Attr)
	return 0
}

// Readdir implements fs.NodeReaddirer.
func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	ctx, cancel := n.m.meta(ctx)
	defer cancel()
	ents, err := n.m.fs.Readdir(ctx, n.ino)
	if err != nil {
		return nil, n.m.errno("readdir", err)
	}
	list := make([]gofuse.DirEntry, len(ents))
	for i, e := range ents {
		list[i] = gofuse.DirEntry{Name: e.Name, Ino: uint64(e.Ino), Mode: kindMode(e.Kind)}
	}
	return fs.NewListDirStream(list), 0
}

// openFlags is what Open and Create tell the kernel: keep the page cache
// across opens, because changes by other nodes invalidate it (notify.go)
// and the kernel also drops it when it sees a new mtime or size.
const openFlags = gofuse.FOPEN_KEEP_CACHE

// Open implements fs.NodeOpener. O_TRUNC reaches us as a Setattr of size 0
// before the open (go-fuse does not negotiate atomic O_TRUNC), and only
// through Create otherwise; O_APPEND makes the handle write at the current
// size whatever offset the kernel sends.
func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_TRUNC != 0 && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		ctx, cancel := n.m.change(ctx)
		defer cancel()
		zero := uint64(0)
		a, err := n.m.fs.Setattr(ctx, n.ino, fsys.SetAttr{Size: &zero})
		if err != nil {
			return nil, 0, n.m.errno("open", err)
		}
		n.remember(a)
	}
	return n.open(flags), openFlags, 0
}

func (n *node) open(flags uint32) *handle {
	n.opens.Add(1)
	return &handle{n: n, append: flags&syscall.O_APPEND != 0}
}

// Create implements fs.NodeCreater: O_CREAT, with O_EXCL and O_TRUNC.
func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	excl := flags&syscall.O_EXCL != 0
	a, err := n.m.fs.Create(ctx, n.ino, name, mode&07777, excl)
	if err != nil {
		return nil, nil, 0, n.m.errno("create", err)
	}
	if !excl && flags&syscall.O_TRUNC != 0 && a.Size > 0 {
		// The name existed after all (another node made it first).
		zero := uint64(0)
		if a, err = n.m.fs.Setattr(ctx, a.Ino, fsys.SetAttr{Size: &zero}); err != nil {
			return nil, nil, 0, n.m.errno("create", err)
		}
	}
	ch := n.m.child(ctx, n.EmbeddedInode(), a, out)
	cn := ch.Operations().(*node)
	return ch, cn.open(flags), openFlags, 0
}

// Mkdir implements fs.NodeMkdirer.
func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	a, err := n.m.fs.Mkdir(ctx, n.ino, name, mode&07777)
	if err != nil {
		return nil, n.m.errno("mkdir", err)
	}
	return n.m.child(ctx, n.EmbeddedInode(), a, out), 0
}

// Symlink implements fs.NodeSymlinker.
func (n *node) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	a, err := n.m.fs.Symlink(ctx, n.ino, name, target)
	if err != nil {
		return nil, n.m.errno("symlink", err)
	}
	return n.m.child(ctx, n.EmbeddedInode(), a, out), 0
}

// Readlink implements fs.NodeReadlinker.
func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	ctx, cancel := n.m.meta(ctx)
	defer cancel()
	t, err := n.m.fs.Readlink(ctx, n.ino)
	if err != nil {
		return nil, n.m.errno("readlink", err)
	}
	return []byte(t), 0
}

// Link implements fs.NodeLinker: Blocktree has no hard links (an inode has
// one parent), so link(2) is EPERM, as on file systems without them.
func (n *node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Unlink implements fs.NodeUnlinker.
func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	// Writes that close(2) left committing in the background land before
	// the name goes, so descriptors still open on the file see them.
	// They need to be committed, not durable: nothing is made durable by
	// an unlink.
	if ch := n.GetChild(name); ch != nil {
		if cn, ok := ch.Operations().(*node); ok && cn.dirty.Load() {
			if errno := cn.commit(ctx, "unlink"); errno != 0 {
				return errno
			}
		}
	}
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	if err := n.m.fs.Unlink(ctx, n.ino, name); err != nil {
		return n.m.errno("unlink", err)
	}
	orphan(n.EmbeddedInode(), name)
	return 0
}

// Rmdir implements fs.NodeRmdirer.
func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	return n.m.errno("rmdir", n.m.fs.Rmdir(ctx, n.ino, name))
}

// renameat2(2) flags besides fs.RENAME_EXCHANGE. RENAME_WHITEOUT is for
// overlay file systems; not ours.
const (
	renameNoReplace = 1 << 0
	renameWhiteout  = 1 << 2
)

// Rename implements fs.NodeRenamer, with RENAME_NOREPLACE and
// RENAME_EXCHANGE. It is atomic within a volume; across volumes (or into
// the mount root) it is EXDEV, so mv(1) copies.
func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&renameWhiteout != 0 || flags&^(renameWhiteout|fs.RENAME_EXCHANGE|renameNoReplace) != 0 {
		return syscall.EINVAL
	}
	var rf fsys.RenameFlags
	if flags&renameNoReplace != 0 {
		rf |= fsys.RenameNoReplace
	}
	if flags&fs.RENAME_EXCHANGE != 0 {
		rf |= fsys.RenameExchange
	}
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	if err := n.m.fs.Rename(ctx, n.ino, name, np.ino, newName, rf); err != nil {
		return n.m.errno("rename", err)
	}
	if rf&fsys.RenameExchange == 0 {
		orphan(np.EmbeddedInode(), newName) // replaced, if it existed
	}
	return 0
}

// Fsync implements fs.NodeFsyncer: when it returns, the host holds
// durably the file's data and every change this node committed before
// (names included). On a directory it makes those earlier changes durable
// (fsys/client: Client.Fsync of a directory inode).
func (n *node) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	if n.IsDir() {
		ctx, cancel := n.m.change(ctx)
		defer cancel()
		return n.m.errno("fsync", n.m.fs.Fsync(ctx, n.ino))
	}
	return n.fsync(ctx, "fsync")
}

func (n *node) fsync(ctx context.Context, op string) syscall.Errno {
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	wasDirty := n.dirty.Swap(false)
	err := n.m.fs.Fsync(ctx, n.ino)
	if err == nil {
		return 0
	}
	errno := n.m.errno(op, err)
	if errno == syscall.ENOENT && n.opens.Load() > 0 {
		// The open file was unlinked or replaced: its data has no name to
		// be durable under any more, and fsync or close of it succeeds,
		// as on a local file system.
		return 0
	}
	if wasDirty {
		n.dirty.Store(true)
	}
	return errno
}

// commit commits the node's pending writes (not durably) before an
// operation that needs them at the host; an FS that cannot gets a full
// Fsync. dirty stays set: durability is still owed to the next fsync.
func (n *node) commit(ctx context.Context, op string) syscall.Errno {
	c, ok := n.m.fs.(fsys.FileCommitter)
	if !ok {
		return n.fsync(ctx, op)
	}
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	err := c.CommitFile(ctx, n.ino)
	if err == nil {
		return 0
	}
	errno := n.m.errno(op, err)
	if errno == syscall.ENOENT && n.opens.Load() > 0 {
		return 0 // as in fsync: it has no name to commit under any more
	}
	return errno
}

// Statfs implements fs.NodeStatfser.
func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	return n.m.statfs(ctx, n.ino, out)
}

func (m *Mounted) statfs(ctx context.Context, ino fsys.Ino, out *gofuse.StatfsOut) syscall.Errno {
	ctx, cancel := m.meta(ctx)
	defer cancel()
	s, err := m.fs.StatFS(ctx, ino)
	if err != nil {
		return m.errno("statfs", err)
	}
	out.Bsize = s.BlockSize
	out.Frsize = s.BlockSize
	out.Blocks = s.Blocks
	out.Bfree = s.BlocksFree
	out.Bavail = s.BlocksFree
	out.Files = s.Files
	out.Ffree = 1 << 32
	out.NameLen = s.NameMax
	if out.NameLen == 0 {
		out.NameLen = fsys.MaxName
	}
	return 0
}

// Lseek implements fs.NodeLseeker for SEEK_DATA and SEEK_HOLE: Blocktree
// does not expose holes, so data runs to the end of the file and the one
// hole is there.
func (n *node) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	ctx, cancel := n.m.op(ctx)
	defer cancel()
	a, err := n.m.fs.Getattr(ctx, n.ino)
	if err != nil {
		return 0, n.m.errno("lseek", err)
	}
	if off >= a.Size {
		return 0, syscall.ENXIO
	}
	switch whence {
	case seekData:
		return off, 0
	case seekHole:
		return a.Size, 0
	}
	return 0, syscall.EINVAL
}

const (
	seekData = 3
	seekHole = 4
)

// fallocKeepSize is FALLOC_FL_KEEP_SIZE.
const fallocKeepSize = 1

// Allocate implements fs.NodeAllocater: mode 0 extends the file to cover
// the range (with zeros); FALLOC_FL_KEEP_SIZE alone changes nothing, as
// Blocktree reserves no space ahead; other modes (punching holes,
// collapsing ranges) are EOPNOTSUPP.
func (n *node) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	switch mode {
	case 0:
	case fallocKeepSize:
		return 0
	default:
		return syscall.EOPNOTSUPP
	}
	ctx, cancel := n.m.change(ctx)
	defer cancel()
	a, err := n.m.fs.Getattr(ctx, n.ino)
	if err != nil {
		return n.m.errno("fallocate", err)
	}
	if end := off + size; end > a.Size {
		if a, err = n.m.fs.Setattr(ctx, n.ino, fsys.SetAttr{Size: &end}); err != nil {
			return n.m.errno("fallocate", err)
		}
	}
	n.remember(a)
	return 0
}

// handle is one open file.
type handle struct {
	n      *node
	append bool // O_APPEND: every write goes to the current end
	closed atomic.Bool
}

var (
	_ fs.FileReader   = (*handle)(nil)
	_ fs.FileWriter   = (*handle)(nil)
	_ fs.FileFlusher  = (*handle)(nil)
	_ fs.FileReleaser = (*handle)(nil)
)

// Read implements fs.FileReader.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	ctx, cancel := h.n.m.op(ctx)
	defer cancel()
	k, err := h.n.m.fs.ReadAt(ctx, h.n.ino, dest, off)
	if err != nil {
		return nil, h.n.m.errno("read", err)
	}
	return gofuse.ReadResultData(dest[:k]), 0
}

// Write implements fs.FileWriter. The data is in the client when it
// returns (write-back); Fsync or Flush commits it to the host.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	ctx, cancel := h.n.m.change(ctx)
	defer cancel()
	if h.append {
		h.n.appendMu.Lock()
		defer h.n.appendMu.Unlock()
		a, err := h.n.m.fs.Getattr(ctx, h.n.ino)
		if err != nil {
			return 0, h.n.m.errno("write", err)
		}
		if end := int64(a.Size); end != off {
			// The kernel's idea of the end was stale (another writer):
			// its cached pages at off are not what we write, so drop them.
			h.n.m.inv.push(fsys.Invalidation{Ino: h.n.ino})
			off = end
		}
	}
	h.n.dirty.Store(true)
	k, err := h.n.m.fs.WriteAt(ctx, h.n.ino, data, off)
	if err != nil {
		return uint32(k), h.n.m.errno("write", err)
	}
	return uint32(k), 0
}

// Flush implements fs.FileFlusher. close(2) (of any descriptor of the open
// file) starts committing the file's writes to the host and returns: as on
// a local file system, only fsync(2) waits for durability, and a commit
// that fails in the background is reported by the next fsync. An FS that
// cannot commit in the background gets a full Fsync instead.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if !h.n.dirty.Load() {
		return 0
	}
	if f, ok := h.n.m.fs.(fsys.FileFlusher); ok {
		if err := f.Flush(ctx, h.n.ino); err != nil {
			return h.n.m.errno("flush", err)
		}
		return 0
	}
	return h.n.fsync(ctx, "flush")
}

// Release implements fs.FileReleaser.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	if !h.closed.Swap(true) {
		h.n.opens.Add(-1)
	}
	return 0
}

// mountRoot is the directory at the mount point: one entry per domain root
// ID, opts.Self always, others when looked up.
type mountRoot struct {
	fs.Inode
	m       *Mounted
	mounted time.Time

	// mu guards self.
	mu   sync.Mutex
	self fsys.Ino // Self's root inode, once known
}

var (
	_ fs.NodeLookuper  = (*mountRoot)(nil)
	_ fs.NodeGetattrer = (*mountRoot)(nil)
	_ fs.NodeReaddirer = (*mountRoot)(nil)
	_ fs.NodeStatfser  = (*mountRoot)(nil)
	_ fs.NodeRenamer   = (*mountRoot)(nil)
)

// Lookup implements fs.NodeLookuper: name must be a domain root ID that this
// node can read.
func (r *mountRoot) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*fs.Inode, syscall.Errno) {
	id, err := paths.ParseID(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	ctx, cancel := r.m.meta(ctx)
	defer cancel()
	a, err := r.m.fs.Root(ctx, id)
	if err != nil {
		return nil, r.m.errno("lookup root", err)
	}
	if id == r.m.opts.Self {
		r.mu.Lock()
		r.self = a.Ino
		r.mu.Unlock()
	}
	return r.m.child(ctx, r.EmbeddedInode(), a, out), 0
}

// Getattr implements fs.NodeGetattrer: a read-only directory.
func (r *mountRoot) Getattr(ctx context.Context, f fs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
	out.Ino = gofuse.FUSE_ROOT_ID
	out.Uid, out.Gid = r.m.uid, r.m.gid
	out.Blksize = statBlockSize
	t := r.mounted
	out.SetTimes(&t, &t, &t)
	return 0
}

// Readdir implements fs.NodeReaddirer: Self, and the other domains looked
// up so far that the kernel still knows.
func (r *mountRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	self := string(r.m.opts.Self)
	selfIno := r.selfIno(ctx)
	list := []gofuse.DirEntry{{Name: self, Ino: uint64(selfIno), Mode: syscall.S_IFDIR}}
	for name, ch := range r.Children() {
		if name != self {
			list = append(list, gofuse.DirEntry{Name: name, Ino: ch.StableAttr().Ino, Mode: syscall.S_IFDIR})
		}
	}
	return fs.NewListDirStream(list), 0
}

// selfIno returns Self's root inode, asking fsys the first time; 0 if it
// cannot (the entry is listed anyway, and looking it up gives the error).
func (r *mountRoot) selfIno(ctx context.Context) fsys.Ino {
	r.mu.Lock()
	ino := r.self
	r.mu.Unlock()
	if ino != 0 {
		return ino
	}
	ctx, cancel := r.m.meta(ctx)
	defer cancel()
	a, err := r.m.fs.Root(ctx, r.m.opts.Self)
	if err != nil {
		return 0
	}
	r.mu.Lock()
	r.self = a.Ino
	r.mu.Unlock()
	return a.Ino
}

// Statfs implements fs.NodeStatfser with the figures of Self's volume.
func (r *mountRoot) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	ino := r.selfIno(ctx)
	if ino == 0 {
		out.Bsize, out.Frsize, out.NameLen = statBlockSize, statBlockSize, fsys.MaxName
		return 0
	}
	return r.m.statfs(ctx, ino, out)
}

// Rename implements fs.NodeRenamer: the domain roots cannot be renamed.
func (r *mountRoot) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return syscall.EPERM
}
