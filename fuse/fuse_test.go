package fuse

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// requireEnv makes a missing /dev/fuse a failure instead of a skip (CI
// sets it), as tpm/swtpmtest.Require does for swtpm.
const requireEnv = "BT_REQUIRE_REAL"

// requireFUSE skips the test without /dev/fuse or root, or fails it if
// BT_REQUIRE_REAL=1.
func requireFUSE(t testing.TB) {
	t.Helper()
	msg := ""
	if _, err := os.Stat("/dev/fuse"); err != nil {
		msg = "no /dev/fuse: load the fuse module or pass the device into the container"
	} else if os.Geteuid() != 0 {
		msg = "FUSE tests mount directly and need root"
	}
	if msg == "" {
		return
	}
	if os.Getenv(requireEnv) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// mounted reports whether dir is a mount point in /proc/self/mounts.
func mounted(t testing.TB, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && unescapeMount(fields[1]) == dir {
			return true
		}
	}
	return false
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// mountT mounts fs at a fresh directory and unmounts it at cleanup,
// failing the test if the mount is left behind. It returns the mount and
// the directory of self's root (mnt/<self>).
func mountT(t testing.TB, filesys fsys.FS, self paths.ID, opts Options) (*Mounted, string) {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	opts.Self = self
	if opts.Log == nil {
		opts.Log = nettest.Logger()
	}
	m, err := Mount(context.Background(), dir, filesys, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		if mounted(t, m.Dir()) {
			t.Errorf("%s still mounted after Unmount", m.Dir())
		}
	})
	return m, filepath.Join(m.Dir(), string(self))
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	nettest.WaitFor(t, d, what, cond)
}
