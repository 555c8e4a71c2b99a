package client_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/internal/nettest"
)

// The benchmarks compare the client over the in-process host on durable
// blocks/leveldb stores (in a temp dir) with the same operations on a
// plain local directory through os calls, interleaved, and print the
// ratio (anchor time / ours: 1 is parity). Run them with -benchtime=1x:
//
//	go test -run '^$' -bench . -benchtime=1x ./fsys/
//
// BT_FSYS_BENCH_FILES (default 10000) and BT_FSYS_BENCH_MIB (default 250)
// scale them down for a quick look.

func benchEnv(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchSetup makes a durable volume and one writing node. shared: the
// node's client and the host use one block store, as in the daemon.
func benchSetup(b *testing.B, shared bool) (*testVolume, *testNode, fsys.Attr) {
	b.Helper()
	tv := newTestVolume(b, true)
	var n *testNode
	if shared {
		n = &testNode{key: nettest.NewKey(b)}
		n.id = nettest.PrincipalID(b, n.key.PublicKey())
		n.path = tv.d.Path(b, "laptop")
		n.wc = tv.d.GrantDay(b, n.id, tv.vol)
		n.store = tv.hostStore
		hk, _, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		cert, err := caps.IssueHostCert(context.Background(), n.key, hk.GetPublic(), now.Add(-time.Hour), now.Add(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		n.hk, n.cert = hk, cert
		n.c = newClientWith(b, tv, n, nil)
	} else {
		n = tv.newNode(b, "laptop", true)
	}
	ctx := context.Background()
	if err := n.c.InitVolume(ctx, tv.h, 0o755); err != nil {
		b.Fatal(err)
	}
	return tv, n, must(n.c.Walk(ctx, tv.vol))
}

// smallFile is the content of file i: 1..4 KiB.
func smallFile(i int) []byte {
	p := make([]byte, 1024+(i*997)%3073)
	for j := range p {
		p[j] = byte(i + j)
	}
	return p
}

// BenchmarkSmallFiles is the metadata-heavy workload: a tree of files in
// directories of 100 (create, write 1–4 KiB, close: Fsync, as the FUSE
// adapter's flush does), then ls -lR (readdir and stat of every entry),
// read all, rm -rf. Each phase is one comparison whose op is one file (ls:
// one directory); the rounds together make BT_FSYS_BENCH_FILES files.
func BenchmarkSmallFiles(b *testing.B) {
	b.Run("shared-store", func(b *testing.B) { benchSmallFiles(b, true, false) })
	b.Run("separate-stores", func(b *testing.B) { benchSmallFiles(b, false, false) })
	// close as Client.Flush (not durable; fsync is) instead of Fsync.
	b.Run("shared-store-flush", func(b *testing.B) { benchSmallFiles(b, true, true) })
}

func benchSmallFiles(b *testing.B, shared, flush bool) {
	const perDir = 100
	files := benchEnv("BT_FSYS_BENCH_FILES", 10000)
	const rounds = 5
	ops := max(files/rounds, 1)
	total := rounds*ops + 1 // + the warm-up op
	_, n, root := benchSetup(b, shared)
	ctx := context.Background()
	local := filepath.Join(b.TempDir(), "tree")
	if err := os.Mkdir(local, 0o755); err != nil {
		b.Fatal(err)
	}
	c := n.c
	tree := must(c.Mkdir(ctx, root.Ino, "tree", 0o755))
	dirs := make([]fsys.Ino, (total+perDir-1)/perDir)
	dirName := func(i int) string { return fmt.Sprintf("d%04d", i/perDir) }
	fileName := func(i int) string { return fmt.Sprintf("f%03d", i%perDir) }
	var sum [2]time.Duration // ours, anchor: per-op medians × ops

	add := func(r benchcmp.Result, n int) {
		sum[0] += r.Ours * time.Duration(n)
		sum[1] += r.Anchor * time.Duration(n)
	}

	// create, write, close
	oi, ai := 0, 0
	r := benchcmp.Compare(b, "fsys small files: create+write+close (per file)", benchcmp.Options{Rounds: rounds, Ops: ops},
		func() error {
			i := oi
			oi++
			if i%perDir == 0 {
				d, err := c.Mkdir(ctx, tree.Ino, dirName(i), 0o755)
				if err != nil {
					return err
				}
				dirs[i/perDir] = d.Ino
			}
			a, err := c.Create(ctx, dirs[i/perDir], fileName(i), 0o644, true)
			if err != nil {
				return err
			}
			if _, err := c.WriteAt(ctx, a.Ino, smallFile(i), 0); err != nil {
				return err
			}
			if flush {
				return c.Flush(ctx, a.Ino)
			}
			return c.Fsync(ctx, a.Ino)
		},
		func() error {
			i := ai
			ai++
			d := filepath.Join(local, dirName(i))
			if i%perDir == 0 {
				if err := os.Mkdir(d, 0o755); err != nil {
					return err
				}
			}
			f, err := os.OpenFile(filepath.Join(d, fileName(i)), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			if _, err := f.Write(smallFile(i)); err != nil {
				f.Close()
				return err
			}
			return f.Close()
		})
	add(r, total-1)
	if flush {
		// What close left in the background is part of the work.
		start := time.Now()
		for i := range total {
			a, err := c.Lookup(ctx, dirs[i/perDir], fileName(i))
			if err != nil {
				b.Fatal(err)
			}
			if err := c.Fsync(ctx, a.Ino); err != nil {
				b.Fatal(err)
			}
		}
		sum[0] += time.Since(start)
	}

	// ls -lR: readdir of one directory and a stat of each entry.
	oi, ai = 0, 0
	r = benchcmp.Compare(b, "fsys small files: ls -lR (per directory of 100)", benchcmp.Options{Rounds: rounds, Ops: max(len(dirs)/rounds, 1)},
		func() error {
			d := dirs[oi%len(dirs)]
			oi++
			ents, err := c.Readdir(ctx, d)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if _, err := c.Lookup(ctx, d, e.Name); err != nil {
					return err
				}
			}
			return nil
		},
		func() error {
			d := filepath.Join(local, fmt.Sprintf("d%04d", ai%len(dirs)))
			ai++
			ents, err := os.ReadDir(d)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if _, err := os.Lstat(filepath.Join(d, e.Name())); err != nil {
					return err
				}
			}
			return nil
		})
	add(r, len(dirs))

	// read all
	oi, ai = 0, 0
	buf := make([]byte, 128<<10)
	r = benchcmp.Compare(b, "fsys small files: read (per file)", benchcmp.Options{Rounds: rounds, Ops: ops},
		func() error {
			i := oi % total
			oi++
			a, err := c.Lookup(ctx, dirs[i/perDir], fileName(i))
			if err != nil {
				return err
			}
			k, err := c.ReadAt(ctx, a.Ino, buf, 0)
			if err != nil {
				return err
			}
			if k != len(smallFile(i)) {
				return fmt.Errorf("read %d bytes of file %d", k, i)
			}
			return nil
		},
		func() error {
			i := ai % total
			ai++
			f, err := os.Open(filepath.Join(local, dirName(i), fileName(i)))
			if err != nil {
				return err
			}
			defer f.Close()
			k, err := io.ReadFull(f, buf)
			if err != io.ErrUnexpectedEOF || k != len(smallFile(i)) {
				return fmt.Errorf("read %d bytes of file %d: %v", k, i, err)
			}
			return nil
		})
	add(r, total-1)

	// rm -rf
	oi, ai = 0, 0
	r = benchcmp.Compare(b, "fsys small files: rm (per file)", benchcmp.Options{Rounds: rounds, Ops: ops},
		func() error {
			i := oi
			oi++
			if err := c.Unlink(ctx, dirs[i/perDir], fileName(i)); err != nil {
				return err
			}
			if i%perDir == perDir-1 || i == total-1 {
				return c.Rmdir(ctx, tree.Ino, dirName(i))
			}
			return nil
		},
		func() error {
			i := ai
			ai++
			d := filepath.Join(local, dirName(i))
			if err := os.Remove(filepath.Join(d, fileName(i))); err != nil {
				return err
			}
			if i%perDir == perDir-1 || i == total-1 {
				return os.Remove(d)
			}
			return nil
		})
	add(r, total-1)
	ratio := float64(sum[1]) / float64(sum[0])
	b.ReportMetric(ratio, "total-ratio")
	fmt.Printf("bench fsys small files (%s stores, close: %s): %d files: ours %v anchor %v ratio(anchor/ours) %.3f\n",
		map[bool]string{true: "shared", false: "separate"}[shared], map[bool]string{true: "Flush", false: "Fsync"}[flush], total, sum[0].Round(time.Millisecond), sum[1].Round(time.Millisecond), ratio)
}

// BenchmarkSequential writes a file of BT_FSYS_BENCH_MIB MiB with 128 KiB
// writes and an fsync (dd bs=128K conv=fsync), then reads it back with
// 128 KiB reads from a fresh client (so no plaintext is cached); the anchor
// does the same on a local file (its reads come from the page cache).
func BenchmarkSequential(b *testing.B) {
	mib := benchEnv("BT_FSYS_BENCH_MIB", 250)
	size := int64(mib) << 20
	const bs = 128 << 10
	tv, n, root := benchSetup(b, true)
	ctx := context.Background()
	c := n.c
	local := b.TempDir()
	block := make([]byte, bs)
	rand.Read(block)
	var oi, ai int
	var oursFiles []string
	var localFiles []string
	b.SetBytes(size)
	r := benchcmp.Compare(b, fmt.Sprintf("fsys sequential write %d MiB + fsync (per file)", mib), benchcmp.Options{Rounds: 5, Ops: 1},
		func() error {
			name := fmt.Sprintf("big%d", oi)
			oi++
			a, err := c.Create(ctx, root.Ino, name, 0o644, true)
			if err != nil {
				return err
			}
			for off := int64(0); off < size; off += bs {
				if _, err := c.WriteAt(ctx, a.Ino, block, off); err != nil {
					return err
				}
			}
			oursFiles = append(oursFiles, name)
			return c.Fsync(ctx, a.Ino)
		},
		func() error {
			p := filepath.Join(local, fmt.Sprintf("big%d", ai))
			ai++
			f, err := os.Create(p)
			if err != nil {
				return err
			}
			defer f.Close()
			for off := int64(0); off < size; off += bs {
				if _, err := f.Write(block); err != nil {
					return err
				}
			}
			localFiles = append(localFiles, p)
			return f.Sync()
		})
	fmt.Printf("bench fsys sequential write: ours %.0f MiB/s anchor %.0f MiB/s\n",
		float64(mib)/r.Ours.Seconds(), float64(mib)/r.Anchor.Seconds())

	oi, ai = 0, 0
	buf := make([]byte, bs)
	r = benchcmp.Compare(b, fmt.Sprintf("fsys sequential read %d MiB (per file)", mib), benchcmp.Options{Rounds: 5, Ops: 1},
		func() error {
			name := oursFiles[oi%len(oursFiles)]
			oi++
			// A fresh client: nothing decrypted is cached.
			fc := newClientWith(b, tv, n, nil)
			defer fc.Close()
			a, err := fc.Walk(ctx, join(b, tv.vol, name))
			if err != nil {
				return err
			}
			var got int64
			for {
				k, err := fc.ReadAt(ctx, a.Ino, buf, got)
				if err != nil {
					return err
				}
				got += int64(k)
				if k < len(buf) {
					break
				}
			}
			if got != size {
				return fmt.Errorf("read %d bytes", got)
			}
			return nil
		},
		func() error {
			f, err := os.Open(localFiles[ai%len(localFiles)])
			ai++
			if err != nil {
				return err
			}
			defer f.Close()
			var got int64
			for {
				k, err := f.Read(buf)
				got += int64(k)
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
			}
			if got != size {
				return fmt.Errorf("read %d bytes", got)
			}
			return nil
		})
	fmt.Printf("bench fsys sequential read: ours %.0f MiB/s anchor %.0f MiB/s\n",
		float64(mib)/r.Ours.Seconds(), float64(mib)/r.Anchor.Seconds())
}
