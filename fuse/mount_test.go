package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/nettest"
)

func TestMountPointErrors(t *testing.T) {
	requireFUSE(t)
	env := newTestEnv(t)
	base := t.TempDir()
	nonEmpty := filepath.Join(base, "full")
	file := filepath.Join(base, "file")
	if err := os.MkdirAll(filepath.Join(nonEmpty, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, dir string }{
		{"non-empty", nonEmpty},
		{"file", file},
		{"missing", filepath.Join(base, "missing")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Mount(context.Background(), tc.dir, env.fs, Options{Self: env.self})
			if err == nil {
				m.Unmount()
				t.Fatalf("Mount(%s) succeeded", tc.dir)
			}
			if !errors.Is(err, ErrMountPoint) {
				t.Fatalf("Mount(%s) = %v, want ErrMountPoint", tc.dir, err)
			}
			t.Logf("%v", err)
			if mounted(t, tc.dir) {
				t.Fatalf("%s is mounted", tc.dir)
			}
		})
	}
	t.Run("no-self", func(t *testing.T) {
		if _, err := Mount(context.Background(), t.TempDir(), env.fs, Options{}); err == nil {
			t.Fatal("Mount without Options.Self succeeded")
		}
	})
}

func TestMountRoot(t *testing.T) {
	env := newTestEnv(t)
	m, self := mountT(t, env.fs, env.self, Options{})
	names, err := readNames(m.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(names, string(env.self)) {
		t.Errorf("mount root lists %v, want %s in it", names, env.self)
	}
	if fi, err := os.Stat(self); err != nil || !fi.IsDir() {
		t.Fatalf("stat %s: %v %v", self, fi, err)
	}
	for _, name := range []string{"not-an-id", string(nettest.NewDomain(t).ID)} {
		if _, err := os.Stat(filepath.Join(m.Dir(), name)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("stat root/%s = %v, want ENOENT", name, err)
		}
	}
	if err := os.Mkdir(filepath.Join(m.Dir(), "x"), 0o755); err == nil {
		t.Errorf("mkdir in the mount root succeeded")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(self, &st); err != nil {
		t.Errorf("statfs: %v", err)
	} else if st.Namelen != fsys.MaxName {
		t.Errorf("statfs namelen %d, want %d", st.Namelen, fsys.MaxName)
	}
}

func readNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names, err
}

// TestNoReadcap: a domain this node has no readcap for is EACCES, for
// lookup and listing alike, never garbage.
func TestNoReadcap(t *testing.T) {
	env := newTestEnv(t)
	other := env.unreadable(t)
	m, _ := mountT(t, env.fs, env.self, Options{})
	p := filepath.Join(m.Dir(), string(other))
	if _, err := os.Stat(p); !errors.Is(err, syscall.EACCES) {
		t.Errorf("stat %s = %v, want EACCES", p, err)
	}
	if _, err := os.ReadDir(p); !errors.Is(err, syscall.EACCES) {
		t.Errorf("readdir %s = %v, want EACCES", p, err)
	}
	if _, err := os.ReadFile(filepath.Join(p, "secret")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("read %s/secret = %v, want EACCES", p, err)
	}
}

// TestLargeSparse writes at 5 GiB, past every 32-bit offset, and reads it
// back and the hole before it.
func TestLargeSparse(t *testing.T) {
	env := newTestEnv(t)
	_, self := mountT(t, env.fs, env.self, Options{})
	p := filepath.Join(self, "big")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const off = 5 << 30
	data := []byte("beyond four gibibytes")
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatalf("pwrite at 5 GiB: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(off + len(data)); fi.Size() != want {
		t.Fatalf("size %d, want %d", fi.Size(), want)
	}
	g, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	got := make([]byte, len(data)+10)
	n, err := g.ReadAt(got, off)
	if n != len(data) || !bytes.Equal(got[:n], data) {
		t.Fatalf("read at 5 GiB: %q (%d, %v), want %q", got[:n], n, err, data)
	}
	hole := make([]byte, 64<<10)
	if _, err := g.ReadAt(hole, 4<<30+12345); err != nil {
		t.Fatalf("read in the hole: %v", err)
	}
	if !bytes.Equal(hole, make([]byte, len(hole))) {
		t.Fatal("the hole is not zeros")
	}
	// Random-access rewrite in the middle leaves the rest alone.
	if _, err := f.WriteAt([]byte("mid"), 3<<30); err != nil {
		t.Fatal(err)
	}
	if fi, _ := f.Stat(); fi.Size() != int64(off+len(data)) {
		t.Fatalf("size after a middle write %d", fi.Size())
	}
	if n, err := g.ReadAt(got[:len(data)], off); n != len(data) || !bytes.Equal(got[:n], data) {
		t.Fatalf("tail after a middle write: %q %v", got[:n], err)
	}
}

// TestOpenFlags checks O_EXCL, O_TRUNC and O_APPEND through the kernel.
func TestOpenFlags(t *testing.T) {
	env := newTestEnv(t)
	_, self := mountT(t, env.fs, env.self, Options{})
	p := filepath.Join(self, "f")
	if err := os.WriteFile(p, []byte("hello world"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("O_EXCL on an existing file: %v, want EEXIST", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The offset is ignored under O_APPEND: pwrite appends on Linux.
	if _, err := syscall.Pwrite(int(f.Fd()), []byte("!"), 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(p); string(got) != "hello world!" {
		t.Errorf("after O_APPEND: %q", got)
	}
	f, err = os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(p); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o640 {
		t.Errorf("after O_TRUNC: %v %v", fi, err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 || !fi.ModTime().Equal(mt) {
		t.Errorf("after chmod and utimens: %v %v %v", fi.Mode(), fi.ModTime(), err)
	}
	if err := os.Chown(p, 4242, 4242); !errors.Is(err, syscall.EPERM) {
		t.Errorf("chown: %v, want EPERM", err)
	}
	// RENAME_NOREPLACE and RENAME_EXCHANGE.
	q := filepath.Join(self, "g")
	if err := os.WriteFile(q, []byte("g"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := renameat2(p, q, renameNoReplace); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("RENAME_NOREPLACE onto an existing name: %v, want EEXIST", err)
	}
	if err := renameat2(p, q, 2); err != nil {
		t.Fatalf("RENAME_EXCHANGE: %v", err)
	}
	if got, _ := os.ReadFile(p); string(got) != "g" {
		t.Errorf("after exchange %s holds %q", p, got)
	}
	if err := os.Link(p, filepath.Join(self, "hard")); !errors.Is(err, syscall.EPERM) {
		t.Errorf("link: %v, want EPERM", err)
	}
}

func renameat2(from, to string, flags uint) error {
	return unix.Renameat2(unix.AT_FDCWD, from, unix.AT_FDCWD, to, flags)
}

// TestUnmount: Unmount is idempotent, a busy mount is detached lazily, the
// package-level Unmount(dir) works, and ending the context unmounts; no
// mount is ever left in /proc/self/mounts.
func TestUnmount(t *testing.T) {
	requireFUSE(t)
	env := newTestEnv(t)
	mount := func(ctx context.Context) *Mounted {
		m, err := Mount(ctx, t.TempDir(), env.fs, Options{Self: env.self})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Unmount() })
		return m
	}
	gone := func(m *Mounted) {
		t.Helper()
		done := make(chan struct{})
		go func() { m.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: server still running", m.Dir())
		}
		if mounted(t, m.Dir()) {
			t.Fatalf("%s still in /proc/self/mounts", m.Dir())
		}
	}

	t.Run("idle", func(t *testing.T) {
		m := mount(context.Background())
		if err := m.Unmount(); err != nil {
			t.Fatal(err)
		}
		if err := m.Unmount(); err != nil {
			t.Fatalf("second Unmount: %v", err)
		}
		gone(m)
	})
	t.Run("busy", func(t *testing.T) {
		m := mount(context.Background())
		f, err := os.Create(filepath.Join(m.Dir(), string(env.self), "open"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := m.Unmount(); err != nil {
			t.Fatal(err)
		}
		gone(m)
		if _, err := f.Write([]byte("x")); err == nil {
			t.Errorf("write after the connection was aborted succeeded")
		}
	})
	t.Run("context", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		m := mount(ctx)
		cancel()
		gone(m)
	})
	t.Run("by-dir", func(t *testing.T) {
		m := mount(context.Background())
		if err := Unmount(m.Dir()); err != nil {
			t.Fatal(err)
		}
		gone(m)
		if err := Unmount(m.Dir()); !errors.Is(err, ErrNotMounted) {
			t.Errorf("Unmount of an unmounted dir: %v, want ErrNotMounted", err)
		}
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount after Unmount(dir): %v", err)
		}
	})
}

func TestErrnoMapping(t *testing.T) {
	m := &Mounted{log: discard}
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{nil, 0},
		{fmt.Errorf("fsys: lookup: %w", fsys.ErrNotExist), syscall.ENOENT},
		{fsys.ErrPermission, syscall.EACCES},
		{fsys.ErrConflict, syscall.EAGAIN},
		{fsys.ErrUnavailable, syscall.EIO},
		{fsys.ErrCrossVolume, syscall.EXDEV},
		{fsys.ErrNameTooLong, syscall.ENAMETOOLONG},
		{fsys.ErrNotSupported, syscall.ENOTSUP},
		{fsys.ErrIntegrity, syscall.EIO},
		{context.DeadlineExceeded, syscall.ETIMEDOUT},
		{context.Canceled, syscall.EINTR},
		{errors.New("surprise"), syscall.EIO},
	} {
		if got := m.errno("test", tc.err); got != tc.want {
			t.Errorf("errno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
