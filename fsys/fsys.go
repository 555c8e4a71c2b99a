// Package fsys is Blocktree's file-system model: files, directories and
// symlinks with POSIX metadata, encrypted on the client, stored by hosts
// that cannot read them, with capabilities deciding who reads and writes.
// docs/fs.md is the design; this file is the contract that the client
// (fsys/client), the hosts (fsys/host, fsys/remote) and the kernel adapter
// (package fuse) share. It imports no implementation.
//
// # Volumes, records, versions
//
// A volume is a subtree hosted by one node: the domain's root /<root-id> by
// default (hosted by the node that created the domain), or any path a node
// hosts with `bt host PATH`. Its host stores Records and orders their
// changes: a Tx (transaction) commits atomically when every record it
// touches is still at the version the writer based it on; otherwise it
// fails with ErrConflict and the client retries on fresh records. Each
// committed Tx gives the volume a new version; a record's Version is the
// version that wrote it. Old record versions stay readable (Host.Get with
// at > 0) until they are collected.
//
// There are two kinds of record. An inode record (Name all zero) holds one
// file, directory or symlink: its metadata and, for files, its chunk list,
// sealed under the inode's own key. An entry record (Ino = the directory,
// Name = HMAC of the entry's name under the directory's name key) holds one
// directory entry: the name, the child's Ino and kind, and the child's key
// wrapped under the directory's key, all sealed under the directory's key.
// So the host sees record keys (inode numbers and name MACs), the tree's
// shape (Parent), sizes, and the CIDs of data blocks; never a name, a key,
// metadata or a byte of file data.
//
// # Keys and capabilities
//
// Every inode has a random 32-byte key. A directory's key opens its entries
// and so its children's keys: a readcap for a directory (its key wrapped to
// a principal's public key, caps.WrapKey) opens the whole subtree. Writes
// are Txs signed by the writer's host key (certified by its node key, whose
// writecap chain is in the Tx); the host checks, for every record the Tx
// touches, that the writecap covers the record's write point: the Grant
// path of the nearest inode, from the record upward through Parent, that
// has one. The volume root's Grant is the volume path; node directories
// (/<root>/<node>) and paths given in `bt grant write` carry their own, in
// plaintext: those names are public by construction.
package fsys

import (
	"context"
	"errors"
	"time"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/paths"
)

// Ino identifies an inode: random, nonzero, unique in a domain with
// overwhelming probability, stable across renames. The FUSE adapter uses
// it as the kernel's inode number.
type Ino uint64

// Kind is what an inode is.
type Kind uint8

// Kinds.
const (
	KindFile    Kind = 1
	KindDir     Kind = 2
	KindSymlink Kind = 3
)

// Attr is what stat(2) shows of an inode.
type Attr struct {
	Ino   Ino
	Kind  Kind
	Mode  uint32 // permission bits, 07777
	Size  uint64 // bytes (a symlink: its target's length; a directory: its entry count)
	Nlink uint32
	Mtime time.Time
	Ctime time.Time
	Atime time.Time
	// Owner is the principal (node) that created the inode.
	Owner paths.ID
	// Version is the volume version of the inode's last change.
	Version uint64
}

// SetAttr is a setattr(2): nil fields are left alone.
type SetAttr struct {
	Mode  *uint32
	Size  *uint64 // truncate or extend (with zeros)
	Mtime *time.Time
	Atime *time.Time
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Ino  Ino
	Kind Kind
}

// StatFS is what statfs(2) shows.
type StatFS struct {
	BlockSize  uint32
	Blocks     uint64 // total, in BlockSize units (the host's quota or disk)
	BlocksFree uint64
	Files      uint64
	NameMax    uint32
}

// RenameFlags are renameat2(2)'s.
type RenameFlags uint32

// Rename flags.
const (
	RenameNoReplace RenameFlags = 1 << 0 // fail with ErrExist if the target exists
	RenameExchange  RenameFlags = 1 << 1 // swap source and target atomically
)

// Invalidation tells the kernel adapter that another node changed
// something it may have cached: the inode's attributes and data (Ino), or
// the entry Name in directory Dir (Dir != 0).
type Invalidation struct {
	Ino  Ino
	Dir  Ino
	Name string
}

// FS is the file system as the kernel adapter and the CLI use it. Every
// method is safe for concurrent use. Errors wrap the sentinels below
// (package fuse maps each to one errno). Writes are write-back: WriteAt
// and the namespace operations return once the change is in the client;
// namespace operations are committed to the host before they return;
// file data is committed at the latest by Fsync (or Flush on close).
// Durability is fsync's (POSIX): Fsync returns only when the host holds
// durably the file's data and every change this client committed to the
// volume before it (so its name too); against a Host that is a Syncer,
// the other operations are committed without waiting for durability
// (docs/fs.md, "Durability").
type FS interface {
	// Root returns the root directory of the volume hosted at
	// /<root-id>: the node's own domain, or another the node can read.
	Root(ctx context.Context, root paths.ID) (Attr, error)
	// Walk resolves an absolute blocktree path to its inode.
	Walk(ctx context.Context, p paths.Path) (Attr, error)

	Lookup(ctx context.Context, dir Ino, name string) (Attr, error)
	Getattr(ctx context.Context, ino Ino) (Attr, error)
	Setattr(ctx context.Context, ino Ino, sa SetAttr) (Attr, error)
	Readdir(ctx context.Context, dir Ino) ([]DirEntry, error)
	// Create makes a regular file; with excl an existing name is ErrExist,
	// without it an existing file is returned as is (O_CREAT without
	// O_EXCL).
	Create(ctx context.Context, dir Ino, name string, mode uint32, excl bool) (Attr, error)
	Mkdir(ctx context.Context, dir Ino, name string, mode uint32) (Attr, error)
	Symlink(ctx context.Context, dir Ino, name, target string) (Attr, error)
	Readlink(ctx context.Context, ino Ino) (string, error)
	Unlink(ctx context.Context, dir Ino, name string) error
	Rmdir(ctx context.Context, dir Ino, name string) error
	// Rename is atomic within a volume; across volumes it is ErrCrossVolume.
	Rename(ctx context.Context, dir Ino, name string, newDir Ino, newName string, flags RenameFlags) error

	// ReadAt reads up to len(p) bytes at off; n < len(p) only at the end
	// of the file (then err is nil).
	ReadAt(ctx context.Context, ino Ino, p []byte, off int64) (n int, err error)
	// WriteAt writes p at off, extending the file with zeros if off is
	// past its end.
	WriteAt(ctx context.Context, ino Ino, p []byte, off int64) (n int, err error)
	// Fsync commits the file's pending writes and returns when the host
	// holds them, and every change this client committed to the volume
	// before, durably. On a directory it makes the volume's changes this
	// client committed durable.
	Fsync(ctx context.Context, ino Ino) error
	StatFS(ctx context.Context, ino Ino) (StatFS, error)

	// Notify registers fn to be called (from one goroutine, in order)
	// when another node's change invalidates what the kernel may cache.
	Notify(fn func(Invalidation))
}

// Versioned is implemented by an FS that reads old versions.
type Versioned interface {
	// Log lists the versions that changed the inode at p, newest first.
	Log(ctx context.Context, p paths.Path, limit int) ([]LogEntry, error)
	// ReaddirAt lists directory p as of volume version v.
	ReaddirAt(ctx context.Context, p paths.Path, v uint64) ([]DirEntry, error)
	// GetattrAt returns the attributes of p as of version v.
	GetattrAt(ctx context.Context, p paths.Path, v uint64) (Attr, error)
}

// FileFlusher is implemented by an FS that can start committing a file's
// pending writes in the background and return at once (close(2) without
// durability). A later Fsync of the file waits for that commit and makes
// everything durable. The fuse adapter calls it on FLUSH; without it, a
// flush is a full Fsync.
type FileFlusher interface {
	Flush(ctx context.Context, ino Ino) error
}

// FileCommitter is implemented by an FS that can commit a file's pending
// writes without making them durable (ordered and visible to other
// readers, durable after a later Fsync), waiting for a commit a Flush
// started. The fuse adapter calls it before an operation that needs the
// writes at the host (an unlink of an open file); without it, such an
// operation gets a full Fsync.
type FileCommitter interface {
	CommitFile(ctx context.Context, ino Ino) error
}

// LogEntry is one committed change.
type LogEntry struct {
	Version uint64
	Time    time.Time
	Writer  paths.Path // the writing node's path
	Op      string     // what the writer said it did ("write", "create", "rename", …)
}

// Right is a capability kind for grants.
type Right uint8

// Rights.
const (
	RightRead  Right = 1
	RightWrite Right = 2
)

// Sharer is implemented by an FS that grants and revokes.
type Sharer interface {
	// Grant gives principal the right on the subtree at p until expires
	// (zero: the writer's own writecap expiry for write; never for read).
	// Granting write returns the writecap issued to principal (for the
	// caller to hand over); granting read returns nil.
	Grant(ctx context.Context, p paths.Path, principal paths.ID, r Right, expires time.Time) (*caps.Writecap, error)
	// Revoke takes it back. Revoking read re-keys the subtree for future
	// writes; what the principal read or could read before keeps its old
	// keys (docs/fs.md).
	Revoke(ctx context.Context, p paths.Path, principal paths.ID, r Right) error
}

// Errors. fuse maps them to errnos; the CLI to messages and exit codes.
var (
	ErrNotExist     = errors.New("no such file or directory")              // ENOENT
	ErrExist        = errors.New("file exists")                            // EEXIST
	ErrNotDir       = errors.New("not a directory")                        // ENOTDIR
	ErrIsDir        = errors.New("is a directory")                         // EISDIR
	ErrNotEmpty     = errors.New("directory not empty")                    // ENOTEMPTY
	ErrPermission   = errors.New("permission denied")                      // EACCES: no readcap or no writecap
	ErrConflict     = errors.New("conflicting change")                     // EAGAIN after retries
	ErrUnavailable  = errors.New("host unreachable")                       // EIO for writes; reads use the cache
	ErrInvalid      = errors.New("invalid argument")                       // EINVAL
	ErrNameTooLong  = errors.New("file name too long")                     // ENAMETOOLONG (255 bytes)
	ErrNoSpace      = errors.New("no space left")                          // ENOSPC
	ErrCrossVolume  = errors.New("rename across volumes")                  // EXDEV
	ErrNotSupported = errors.New("operation not supported")                // ENOTSUP
	ErrIntegrity    = errors.New("stored data failed its integrity check") // EIO
)

// MaxName bounds one name, in bytes.
const MaxName = 255

// RecordKey names a record in a volume: an inode (Name zero) or a directory
// entry (Ino = the directory, Name = the entry's name MAC).
type RecordKey struct {
	Ino  Ino
	Name [32]byte
}

// IsEntry reports whether k names a directory entry.
func (k RecordKey) IsEntry() bool { return k.Name != [32]byte{} }

// Record is a record as its host stores it (see the package comment).
type Record struct {
	Key RecordKey
	// Parent is the directory holding an inode (0 for the volume root);
	// zero for entries.
	Parent Ino
	// Version is set by the host: the volume version that wrote it.
	Version uint64
	// Sealed is the record's content, AES-256-GCM under the inode's key
	// (inode records) or the directory's key (entries); docs/fs.md.
	Sealed []byte
	// Blocks are the data blocks an inode record references, so the host
	// can hold and pin them without reading the record.
	Blocks []cid.Cid
	// Grant, on an inode record, makes it a write point: writes at or
	// under it need a writecap covering this path.
	Grant paths.Path
}

// Base is a record a Tx depends on: it commits only if the record is still
// at Version (0: the record must not exist).
type Base struct {
	Key     RecordKey
	Version uint64
}

// Readcap is a key wrapped to a principal, stored by the host so the
// principal can find it.
type Readcap struct {
	Ino    Ino
	Reader paths.ID
	Cap    []byte // caps.Readcap encoding
}

// Tx is one atomic change to a volume, signed by its writer.
type Tx struct {
	Volume paths.Path
	Base   []Base
	Put    []Record    // created or replaced (Version ignored)
	Delete []RecordKey // removed
	// Readcaps added; RevokeReaders removes a principal's readcaps on Ino.
	Readcaps      []Readcap
	RevokeReaders []Readcap // Cap ignored
	Op            string    // what the writer did, for the log
	Time          time.Time // the writer's clock, for the log
	// The writer: its writecap chain, the certificate of the host key
	// that signed, and the signature over the Tx's canonical encoding
	// without Sig (docs/fs.md).
	Writecap *caps.Writecap
	HostCert *caps.HostCert
	Sig      []byte
}

// VolumeInfo describes a volume.
type VolumeInfo struct {
	Path    paths.Path // the volume's root path
	Root    Ino        // its root inode
	Version uint64     // its current version
	Host    paths.Path // the hosting node's path
}

// Change is a committed Tx as watchers see it.
type Change struct {
	Version uint64
	Keys    []RecordKey // records put or deleted
}

// Host is a volume's host as a client sees it; fsys/host implements it in
// process, fsys/remote over the network. Methods are safe for concurrent
// use; every one fails with ErrUnavailable when the host cannot be reached.
type Host interface {
	Info(ctx context.Context) (VolumeInfo, error)
	// Get returns the records as of version at (0: current). A missing
	// record is absent from the result (no error).
	Get(ctx context.Context, at uint64, keys ...RecordKey) ([]Record, error)
	// List returns a directory's entry records (as of at; 0: current).
	List(ctx context.Context, at uint64, dir Ino) ([]Record, error)
	// Commit verifies and applies tx atomically and durably and returns
	// the new volume version. Every block the Tx's records name must be
	// held by the host when Commit returns: a remote host fetches the
	// missing ones from the committing node first. Errors: ErrConflict
	// (a Base is stale), ErrPermission (signature, writecap or write
	// point), ErrInvalid, ErrNoSpace.
	Commit(ctx context.Context, tx *Tx) (uint64, error)
	// Readcaps returns the readcaps held for reader in the volume.
	Readcaps(ctx context.Context, reader paths.ID) ([]Readcap, error)
	// Log lists the committed Txs that touched key, newest first.
	Log(ctx context.Context, key RecordKey, limit int) ([]LogEntry, error)
	// Watch delivers every Change after version after, in order, until
	// ctx ends; the channel is closed then (or when the host goes away).
	Watch(ctx context.Context, after uint64) (<-chan Change, error)
}

// Syncer is implemented by a Host that separates ordering from
// durability: CommitNoSync orders and applies a Tx like Commit (other
// clients see it at once; conflicts are detected as for Commit) but may
// return before it is durable, and Sync waits until it is. fsys/host and
// fsys/remote implement it; the Client uses it for namespace operations
// and close-time data commits, and calls Sync on Fsync (docs/fs.md,
// "Durability"). A Host that is not a Syncer makes every Commit durable.
type Syncer interface {
	// CommitNoSync is Commit without waiting for durability: when it
	// returns the Tx is applied and visible at the returned version, its
	// blocks are held, and a crash of the host's process (not of its
	// machine) does not lose it; a power loss or kernel crash before a
	// Sync covering it may. Errors are Commit's.
	CommitNoSync(ctx context.Context, tx *Tx) (uint64, error)
	// Sync returns when every version up to version is durable (survives
	// a power loss of the host's machine); it shares the host's group
	// commit with concurrent Commits and Syncs. Errors: ErrUnavailable
	// (the host cannot be reached or is closed); ErrIntegrity when version
	// is beyond the host's current version (the host restarted and lost
	// unsynced versions: a power loss).
	Sync(ctx context.Context, version uint64) error
}
