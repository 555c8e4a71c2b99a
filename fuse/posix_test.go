package fuse

import (
	"os"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixExceptions are the posixtest cases Blocktree does not pass, each
// with the reason; testdata/posixtest-results.md says more. Set
// BT_POSIX_ALL=1 to run them anyway and see them fail.
var posixExceptions = map[string]string{
	"Link":                "no hard links: an inode has one parent (link(2) is EPERM)",
	"LinkUnlinkRename":    "no hard links: an inode has one parent (link(2) is EPERM)",
	"FcntlFlockLocksFile": "record locks are the kernel's local ones, which do not conflict within one process (the test expects a forwarded lock to conflict)",
}

// TestPosix runs go-fuse's posixtest suite against a mount of the real
// client, one fresh volume per case.
func TestPosix(t *testing.T) {
	requireFUSE(t)
	var names []string
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := posixExceptions[name]; ok && os.Getenv("BT_POSIX_ALL") == "" {
				t.Skip(why)
			}
			env := newTestEnv(t)
			_, dir := mountT(t, env.fs, env.self, Options{})
			posixtest.All[name](t, dir)
		})
	}
}
