package leveldb

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/benchcmp"
)

// benchCount is how many blocks a benchmark puts per side, from
// BT_BENCH_N (default def).
func benchCount(def int) int {
	if n, err := strconv.Atoi(os.Getenv("BT_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return def
}

// opts splits n operations into rounds of ops.
func opts(n int) benchcmp.Options {
	return benchcmp.Options{Rounds: 9, Ops: max(n/9, 1)}
}

// BenchmarkPutGet1KiB: 1 KiB puts, then gets, against raw goleveldb
// (synced writes, same keys and values). Run with -benchtime=1x.
func BenchmarkPutGet1KiB(b *testing.B) {
	n := benchCount(100_000)
	fmt.Printf("1 KiB blocks: %d puts and %d gets per side\n", n, n)
	benchPair(b, "1KiB", n, 1<<10)
}

// BenchmarkPutGet256KiB: 256 KiB puts, then gets, against a raw
// file-per-block store (write, fsync, rename), and gets against the same
// raw reads plus SHA-256 verification. Run with -benchtime=1x.
func BenchmarkPutGet256KiB(b *testing.B) {
	n := benchCount(3000)
	fmt.Printf("256 KiB blocks: %d puts and %d gets per side\n", n, n)
	benchPair(b, "256KiB", n, 256<<10)
}

func benchPair(b *testing.B, name string, n, size int) {
	ctx := context.Background()
	o := opts(n)
	total := o.Rounds*o.Ops + 1 // plus the warm-up op
	bs := make([]blocks.Block, total)
	for i := range bs {
		bs[i] = newBlock(b, size)
	}
	s := newTestStore(b, b.TempDir())
	var put, get func(i int) error
	var rawDir string
	if size <= DefaultInlineThreshold {
		db, err := leveldb.OpenFile(b.TempDir(), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { db.Close() })
		put = func(i int) error {
			return db.Put(blockKey(bs[i].CID), bs[i].Data, &opt.WriteOptions{Sync: true})
		}
		get = func(i int) error {
			_, err := db.Get(blockKey(bs[i].CID), nil)
			return err
		}
	} else {
		raw := b.TempDir()
		rawDir = raw
		put = func(i int) error { return rawFilePut(raw, bs[i]) }
		get = func(i int) error {
			_, err := os.ReadFile(filepath.Join(raw, bs[i].CID.String()))
			return err
		}
	}
	var oi, ai int
	benchcmp.Compare(b, "leveldb put "+name, o,
		func() error { oi++; return s.Put(ctx, bs[oi-1]) },
		func() error { ai++; return put(ai - 1) })
	benchcmp.Compare(b, "leveldb get "+name, o,
		func() error { _, err := s.Get(ctx, bs[mrand.IntN(total)].CID); return err },
		func() error { return get(mrand.IntN(total)) })
	if size > DefaultInlineThreshold {
		// The contract makes Get verify every block against its CID
		// (SHA-256), which the raw anchor skips: this second anchor reads
		// the same way and verifies, to show what the store adds beyond
		// the hash.
		benchcmp.Compare(b, "leveldb get "+name+" vs raw+verify", o,
			func() error { _, err := s.Get(ctx, bs[mrand.IntN(total)].CID); return err },
			func() error {
				i := mrand.IntN(total)
				data, err := os.ReadFile(filepath.Join(rawDir, bs[i].CID.String()))
				if err == nil {
					err = blocks.Verify(bs[i].CID, data)
				}
				return err
			})
	}
}

// rawFilePut is the anchor for large blocks: write a temp file, fsync,
// rename into place.
func rawFilePut(dir string, b blocks.Block) error {
	f, err := os.CreateTemp(dir, "tmp-*")
	if err != nil {
		return err
	}
	if _, err := f.Write(b.Data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, b.CID.String()))
}

// BenchmarkInlineThreshold measures the same store with blocks inline
// (threshold above the size) against blocks in packs (threshold 0; before
// format 3, one file each), at several sizes; it is what
// DefaultInlineThreshold is chosen from.
func BenchmarkInlineThreshold(b *testing.B) {
	ctx := context.Background()
	n := benchCount(450)
	for _, size := range []int{4 << 10, 16 << 10, 64 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			o := opts(n)
			total := o.Rounds*o.Ops + 1
			bs := make([]blocks.Block, total)
			for i := range bs {
				bs[i] = newBlock(b, size)
			}
			inline := newTestStore(b, b.TempDir(), WithInlineThreshold(blocks.MaxBlockSize))
			files := newTestStore(b, b.TempDir(), WithInlineThreshold(0))
			var oi, ai int
			benchcmp.Compare(b, fmt.Sprintf("put %d KiB inline(ours) vs pack(anchor)", size>>10), o,
				func() error { oi++; return inline.Put(ctx, bs[oi-1]) },
				func() error { ai++; return files.Put(ctx, bs[ai-1]) })
			benchcmp.Compare(b, fmt.Sprintf("get %d KiB inline(ours) vs pack(anchor)", size>>10), o,
				func() error { _, err := inline.Get(ctx, bs[mrand.IntN(total)].CID); return err },
				func() error { _, err := files.Get(ctx, bs[mrand.IntN(total)].CID); return err })
		})
	}
}
