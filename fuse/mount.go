package fuse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/paths"
)

// Errors of Mount and Unmount. They are wrapped with the directory and the
// cause: errors.Is(err, fuse.ErrMountPoint).
var (
	// ErrNoFUSE: the kernel offers no FUSE (/dev/fuse is missing or is not
	// a working FUSE device). Load the module (modprobe fuse) or, in a
	// container, pass the device in (--device /dev/fuse).
	ErrNoFUSE = errors.New("no FUSE device (/dev/fuse)")
	// ErrMountPoint: the directory does not exist, is not a directory, or
	// is not empty.
	ErrMountPoint = errors.New("mount point must be an existing empty directory")
	// ErrPermission: the process may not open /dev/fuse or mount (mounting
	// needs root or CAP_SYS_ADMIN; Blocktree does not use fusermount).
	ErrPermission = errors.New("permission denied")
	// ErrNotMounted: Unmount(dir) found nothing mounted at dir.
	ErrNotMounted = errors.New("not mounted")
)

// Defaults of Options.
const (
	DefaultAttrTimeout  = time.Second
	DefaultEntryTimeout = time.Second
	DefaultOpTimeout    = 2 * time.Minute
)

// Options configure a mount. The zero value is usable except for Self.
type Options struct {
	// Self is the node's own domain root: always listed in the mount root.
	Self paths.ID
	// AttrTimeout and EntryTimeout are how long the kernel may use
	// attributes and directory entries without asking again (defaults
	// DefaultAttrTimeout, DefaultEntryTimeout). Changes by other nodes are
	// pushed to the kernel as they arrive (fsys.FS.Notify), so longer
	// timeouts are safe; they bound staleness only if a notification is
	// lost.
	AttrTimeout, EntryTimeout time.Duration
	// OpTimeout bounds one file-system operation (default
	// DefaultOpTimeout); one that takes longer fails with ETIMEDOUT
	// rather than hanging the calling process.
	OpTimeout time.Duration
	// Debug logs every FUSE request and reply (to Log, at debug level).
	Debug bool
	// Log receives the adapter's warnings (unexpected errors, lazy
	// unmounts); nil discards them.
	Log *slog.Logger
}

func (o *Options) validate() error {
	if o.Self == "" {
		return errors.New("fuse: Options.Self is required")
	}
	if o.AttrTimeout <= 0 {
		o.AttrTimeout = DefaultAttrTimeout
	}
	if o.EntryTimeout <= 0 {
		o.EntryTimeout = DefaultEntryTimeout
	}
	if o.OpTimeout <= 0 {
		o.OpTimeout = DefaultOpTimeout
	}
	if o.Log == nil {
		o.Log = discard
	}
	return nil
}

// Kernel I/O sizes. Writes and reads of up to maxWrite bytes arrive as one
// request; read-ahead is the kernel's maximum (it caps what we ask for).
const (
	maxWrite     = 1 << 20
	maxReadAhead = 1 << 20
	// statBlockSize is st_blksize: the I/O size we ask programs to use.
	statBlockSize = 1 << 17
)

// Mounted is one mounted namespace. Its methods are safe for concurrent use.
type Mounted struct {
	dir  string
	fs   fsys.FS
	opts Options
	log  *slog.Logger
	uid  uint32
	gid  uint32

	server *gofuse.Server
	root   *mountRoot
	// connID is the FUSE connection's number (the minor of st_dev), used
	// to abort a lazily detached mount that is still busy.
	connID uint32

	inv invalQueue

	stopped chan struct{} // closed when Unmount starts; ends the ctx watcher
	done    chan struct{} // closed when the server has stopped

	unmountOnce sync.Once
	unmountErr  error
}

// Mount mounts filesys's namespace at dir and serves it until Unmount is
// called or ctx ends. dir must be an existing empty directory. The mount
// root lists opts.Self; any other domain root ID looked up in it is opened
// with fsys.Root (ENOENT or EACCES if this node cannot read it).
//
// Mount uses the mount(2) system call directly (no fusermount), so it needs
// root or CAP_SYS_ADMIN. Errors wrap ErrNoFUSE, ErrMountPoint or
// ErrPermission when those are the cause.
func Mount(ctx context.Context, dir string, filesys fsys.FS, opts Options) (*Mounted, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", dir, err)
	}
	dir = abs
	if err := checkFUSE(); err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", dir, err)
	}
	if err := checkMountPoint(dir); err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", dir, err)
	}

	m := &Mounted{
		dir:     dir,
		fs:      filesys,
		opts:    opts,
		log:     opts.Log,
		uid:     uint32(os.Geteuid()),
		gid:     uint32(os.Getegid()),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	m.inv.init()
	m.root = &mountRoot{m: m, mounted: time.Now()}

	zero := time.Duration(0)
	fo := &fs.Options{
		EntryTimeout: &opts.EntryTimeout,
		AttrTimeout:  &opts.AttrTimeout,
		// Names that do not exist are not cached: another node may create
		// them, and a negative entry is one more thing to invalidate.
		NegativeTimeout: &zero,
		// The kernel's node IDs are our inode numbers, so an invalidation
		// from fsys can be sent straight to the kernel by Ino.
		ExternalNodeID: true,
		RootStableAttr: &fs.StableAttr{Ino: gofuse.FUSE_ROOT_ID},
		UID:            m.uid,
		GID:            m.gid,
		MountOptions: gofuse.MountOptions{
			FsName:            "blocktree",
			Name:              "blocktree",
			DirectMountStrict: true,
			MaxWrite:          maxWrite,
			MaxReadAhead:      maxReadAhead,
			// Blocktree keeps no extended attributes; with this the kernel
			// answers EOPNOTSUPP itself and stops asking.
			DisableXAttrs: true,
			Debug:         opts.Debug,
			Logger:        log.New(slogWriter{m.log}, "", 0),
		},
	}
	raw := fs.NewNodeFS(m.root, fo)
	server, err := gofuse.NewServer(raw, dir, &fo.MountOptions)
	if err != nil {
		return nil, fmt.Errorf("fuse: mount %s: %w", dir, classifyMountErr(err))
	}
	m.server = server
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		_ = unix.Unmount(dir, unix.MNT_DETACH)
		return nil, fmt.Errorf("fuse: mount %s: %w", dir, classifyMountErr(err))
	}
	go func() {
		server.Wait()
		m.inv.close() // however it ended: Unmount, Unmount(dir), umount(8)
		close(m.done)
	}()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err == nil {
		m.connID = unix.Minor(st.Dev)
	}

	go m.inv.run(m)
	filesys.Notify(m.inv.push)

	go func() {
		select {
		case <-ctx.Done():
			if err := m.Unmount(); err != nil {
				m.log.Warn("unmount at shutdown", "dir", dir, "err", err)
			}
		case <-m.stopped:
		case <-m.done:
		}
	}()
	return m, nil
}

// Dir returns the mount point (absolute).
func (m *Mounted) Dir() string { return m.dir }

// Unmount unmounts and waits until the server has stopped. It is
// idempotent; later calls return the first call's result.
//
// If the mount is busy (a process has a file open or its working directory
// in it), Unmount retries for a moment and then detaches it lazily
// (umount2 MNT_DETACH): the path is free at once and new opens fail, but
// the kernel keeps the file system until the last open file is closed.
// Unmount then waits up to abortAfter for those users and finally aborts the
// FUSE connection (through /sys/fs/fuse/connections, where mounted), after
// which their remaining calls fail with ENOTCONN. The result is nil in both
// cases; the lazy detach is logged.
func (m *Mounted) Unmount() error {
	m.unmountOnce.Do(func() {
		m.unmountErr = m.unmount()
	})
	return m.unmountErr
}

// abortAfter is how long Unmount waits for the users of a lazily detached
// mount before it aborts the connection.
const abortAfter = 2 * time.Second

func (m *Mounted) unmount() error {
	close(m.stopped)
	defer m.inv.close()
	lazy, err := unmountDir(m.dir)
	if err != nil && !errors.Is(err, ErrNotMounted) {
		return err
	}
	if lazy {
		m.log.Warn("mount was busy; detached lazily", "dir", m.dir)
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(abortAfter):
	}
	// Still served: a lazily detached mount with open files, or a mount
	// that someone else already unmounted from under us.
	if m.connID != 0 {
		if err := abortConn(m.connID); err != nil {
			m.log.Warn("cannot abort the FUSE connection of a busy mount", "dir", m.dir, "err", err)
		} else {
			m.log.Warn("aborted the FUSE connection of a busy mount", "dir", m.dir)
		}
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(abortAfter):
		return fmt.Errorf("fuse: unmount %s: the kernel still holds the mount (open files); it is detached and ends when they are closed", m.dir)
	}
}

// Wait blocks until the mount has ended: unmounted by Unmount, by
// Unmount(dir), by umount(8), or because ctx ended.
func (m *Mounted) Wait() { <-m.done }

// Unmount unmounts whatever FUSE file system is mounted at dir, for `bt
// unmount DIR`, including one whose daemon has died (where every access
// fails with ENOTCONN). A busy mount is detached lazily (MNT_DETACH; see
// (*Mounted).Unmount). It fails with ErrNotMounted if dir is not a mount
// point, ErrPermission without the privilege to unmount.
func Unmount(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("fuse: unmount %s: %w", dir, err)
	}
	_, err = unmountDir(abs)
	return err
}

// Retries of a busy unmount before the lazy detach.
const (
	busyRetries = 5
	busyPause   = 20 * time.Millisecond
)

// unmountDir unmounts dir, retrying briefly while it is busy and detaching
// it lazily if it stays busy; lazy reports the detach.
func unmountDir(dir string) (lazy bool, err error) {
	for i := 0; ; i++ {
		err = unix.Unmount(dir, 0)
		if err != unix.EBUSY || i == busyRetries {
			break
		}
		time.Sleep(busyPause << i)
	}
	if err == unix.EBUSY {
		lazy = true
		err = unix.Unmount(dir, unix.MNT_DETACH)
	}
	switch {
	case err == nil:
		return lazy, nil
	case err == unix.EINVAL || err == unix.ENOENT:
		return lazy, fmt.Errorf("fuse: unmount %s: %w", dir, ErrNotMounted)
	case err == unix.EPERM || err == unix.EACCES:
		return lazy, fmt.Errorf("fuse: unmount %s: %w (%v)", dir, ErrPermission, err)
	default:
		return lazy, fmt.Errorf("fuse: unmount %s: %w", dir, err)
	}
}

// fusectl is where the kernel's FUSE control file system is mounted.
const fusectl = "/sys/fs/fuse/connections"

// abortConn aborts FUSE connection id through the control file system,
// mounting that first if it is not (as systemd does at boot).
func abortConn(id uint32) error {
	abort := filepath.Join(fusectl, strconv.FormatUint(uint64(id), 10), "abort")
	if _, err := os.Stat(abort); errors.Is(err, os.ErrNotExist) {
		if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil && err != unix.EBUSY {
			return fmt.Errorf("mount fusectl on %s: %w", fusectl, err)
		}
	}
	return os.WriteFile(abort, []byte("1"), 0)
}

// checkFUSE reports ErrNoFUSE or ErrPermission if /dev/fuse cannot be
// opened.
func checkFUSE() error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	switch {
	case err == nil:
		f.Close()
		return nil
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("%w: %v", ErrNoFUSE, err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %v", ErrPermission, err)
	default:
		return fmt.Errorf("%w: %v", ErrNoFUSE, err)
	}
}

// checkMountPoint reports ErrMountPoint unless dir is an empty directory.
func checkMountPoint(dir string) error {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: %s does not exist", ErrMountPoint, dir)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("%w: %v", ErrPermission, err)
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("%w: %s is a dead FUSE mount; run bt unmount %s", ErrMountPoint, dir, dir)
	case err != nil:
		return fmt.Errorf("%w: %v", ErrMountPoint, err)
	case !fi.IsDir():
		return fmt.Errorf("%w: %s is not a directory", ErrMountPoint, dir)
	}
	f, err := os.Open(dir)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("%w: %v", ErrPermission, err)
		}
		return fmt.Errorf("%w: %v", ErrMountPoint, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && err != io.EOF {
		return fmt.Errorf("%w: %v", ErrMountPoint, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("%w: %s is not empty", ErrMountPoint, dir)
	}
	return nil
}

// classifyMountErr wraps the sentinel that explains a failed mount(2).
func classifyMountErr(err error) error {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w: %v", ErrPermission, err)
	case errors.Is(err, syscall.ENODEV), errors.Is(err, os.ErrNotExist) && !isMountPointErr(err):
		return fmt.Errorf("%w: %v", ErrNoFUSE, err)
	case errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %v", ErrMountPoint, err)
	}
	return err
}

func isMountPointErr(err error) bool {
	var pe *os.PathError
	return errors.As(err, &pe) && pe.Path != "/dev/fuse"
}

// slogWriter turns go-fuse's log.Logger output into debug records.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	n := len(p)
	if n > 0 && p[n-1] == '\n' {
		p = p[:n-1]
	}
	w.l.Debug(string(p), "src", "go-fuse")
	return n, nil
}
