// Package fsbench holds the file-system workloads and the gocryptfs anchor
// that the FUSE benchmarks share (fuse/bench_test.go for a mount over an
// in-process host, integration/fs_bench_test.go for a mount on one daemon
// whose host is another): dd of 128 KiB blocks written with conv=fsync and
// read back cold, and a metadata-heavy tree of small files.
package fsbench

import (
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// Gocryptfs inits and mounts a gocryptfs (go-fuse plus AES-GCM, the
// closest peer) in temporary directories, installing it with apt-get when
// it is missing, and returns the mount point; it is unmounted at cleanup.
func Gocryptfs(tb testing.TB) string {
	tb.Helper()
	if _, err := exec.LookPath("gocryptfs"); err != nil {
		if out, err := exec.Command("apt-get", "install", "-y", "-qq", "gocryptfs").CombinedOutput(); err != nil {
			tb.Skipf("no gocryptfs and cannot install it: %v\n%s", err, out)
		}
	}
	cipher, mnt := tb.TempDir(), tb.TempDir()
	for _, args := range [][]string{{"-init", "-q", "-extpass", "echo pw", cipher}, {"-q", "-extpass", "echo pw", cipher, mnt}} {
		if out, err := exec.Command("gocryptfs", args...).CombinedOutput(); err != nil {
			tb.Fatalf("gocryptfs %v: %v\n%s", args, err, out)
		}
	}
	tb.Cleanup(func() {
		if err := Sh("fusermount3", "-u", mnt); err != nil {
			_ = Sh("umount", "-l", mnt)
		}
	})
	return mnt
}

// Sh runs a command and returns its output in the error when it fails.
func Sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %v: %v: %s", name, args, err, out)
	}
	return nil
}

// DropCaches syncs and drops the page cache, so a read goes to the file
// system.
func DropCaches() error {
	if err := Sh("sync"); err != nil {
		return err
	}
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
}

// Source writes count random 128 KiB blocks to a temporary file (random,
// so no content-addressed store can deduplicate them) and returns its path.
func Source(tb testing.TB, count int) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "src")
	f, err := os.Create(p)
	if err != nil {
		tb.Fatal(err)
	}
	buf := make([]byte, 128<<10)
	for range count {
		rand.Read(buf)
		if _, err := f.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return p
}

// DDWrite copies count blocks of src to dir/dd with dd bs=128K conv=fsync.
func DDWrite(src, dir string, count int) func() error {
	return func() error {
		return Sh("dd", "if="+src, "of="+filepath.Join(dir, "dd"), "bs=128K", "count="+strconv.Itoa(count), "conv=fsync", "status=none")
	}
}

// DDRead drops the page cache and reads dir/dd with dd bs=128K.
func DDRead(dir string) func() error {
	return func() error {
		if err := DropCaches(); err != nil {
			return err
		}
		return Sh("dd", "if="+filepath.Join(dir, "dd"), "of=/dev/null", "bs=128K", "status=none")
	}
}

// Metadata creates a tree of n small (200-byte) files in 100 directories
// under dir, lists it with ls -lR, reads every file and removes the tree
// with rm -rf; each call works in a tree of its own.
func Metadata(dir string, n int) func() error {
	round := 0
	return func() error {
		round++
		top := filepath.Join(dir, "tree"+strconv.Itoa(round))
		content := make([]byte, 200)
		for d := 0; d < 100; d++ {
			sub := filepath.Join(top, "d"+strconv.Itoa(d))
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
			for i := d; i < n; i += 100 {
				content[0] = byte(i)
				if err := os.WriteFile(filepath.Join(sub, "f"+strconv.Itoa(i)), content, 0o644); err != nil {
					return err
				}
			}
		}
		if err := Sh("sh", "-c", "ls -lR "+top+" >/dev/null"); err != nil {
			return err
		}
		err := filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			_, err = os.ReadFile(p)
			return err
		})
		if err != nil {
			return err
		}
		return Sh("rm", "-rf", top)
	}
}
