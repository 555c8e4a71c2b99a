package fuse

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/nettest"
)

// TestInvalidationTwin checks the adapter's half of cache invalidation on
// the in-memory twin, where a test can play "another node": with hour-long
// kernel caches, a change pushed through fsys.FS.Notify reaches readers of
// the mount at once. (TestInvalidation does the same across two real
// clients.)
func TestInvalidationTwin(t *testing.T) {
	d := nettest.NewDomain(t)
	tw := newTwin(d.ID)
	_, self := mountT(t, tw, d.ID, Options{AttrTimeout: time.Hour, EntryTimeout: time.Hour})
	p := filepath.Join(self, "f")
	if err := os.WriteFile(p, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "old content" {
		t.Fatalf("read %q", got)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	// Same size, same mtime: only the notification can tell the kernel.
	tw.changeBehind(fsys.Ino(st.Ino), []byte("new content"))
	waitFor(t, 5*time.Second, "the new content through the kernel's cache", func() bool {
		got, _ := os.ReadFile(p)
		return bytes.Equal(got, []byte("new content"))
	})
	tw.changeBehind(fsys.Ino(st.Ino), []byte("longer new content"))
	waitFor(t, 5*time.Second, "the new size", func() bool {
		fi, err := os.Stat(p)
		return err == nil && fi.Size() == int64(len("longer new content"))
	})
}

// TestInvalidation: two nodes' clients over one host, each with its own
// mount and hour-long kernel caches. What one node changes, the other's
// kernel shows within moments, pushed by fsys.FS.Notify.
func TestInvalidation(t *testing.T) {
	env := newTestEnv(t)
	peer := env.peer(t)
	long := Options{AttrTimeout: time.Hour, EntryTimeout: time.Hour}
	_, a := mountT(t, env.fs, env.self, long)
	_, b := mountT(t, peer, env.self, long)

	pa, pb := filepath.Join(a, "f"), filepath.Join(b, "f")
	if err := os.WriteFile(pa, []byte("old content"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the file on the other node", func() bool {
		got, _ := os.ReadFile(pb)
		return string(got) == "old content"
	})
	// Same size: the new data must come from the invalidation, not from a
	// size change the kernel notices itself.
	f, err := os.OpenFile(pa, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("new"), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil { // commits
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the new content on the other node", func() bool {
		got, _ := os.ReadFile(pb)
		return string(got) == "new content"
	})
	// A cached entry goes when the other node renames it away.
	if _, err := os.Stat(pb); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(pa, filepath.Join(a, "g")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the rename on the other node", func() bool {
		_, err1 := os.Stat(pb)
		_, err2 := os.Stat(filepath.Join(b, "g"))
		return errors.Is(err1, os.ErrNotExist) && err2 == nil
	})
	// And attributes: chmod on one node, stat on the other.
	if err := os.Chmod(filepath.Join(a, "g"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the new mode on the other node", func() bool {
		fi, err := os.Stat(filepath.Join(b, "g"))
		return err == nil && fi.Mode().Perm() == 0o600
	})
}
