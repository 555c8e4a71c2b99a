package leveldb

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/syndtr/goleveldb/leveldb"
	"github.com/syndtr/goleveldb/leveldb/opt"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/benchcmp"
)

// BenchmarkPutConcurrent1KiB: W writers put 1 KiB blocks at once, against
// the anchor of BenchmarkPutGet1KiB (raw goleveldb, synced puts, same keys
// and values) driven by W writers too. One timed operation is every
// writer putting putsPerWriter blocks; run with -benchtime=1x
// (BT_BENCH_N: blocks per side).
func BenchmarkPutConcurrent1KiB(b *testing.B) {
	benchConcurrent(b, "1KiB", benchCount(20_000), 1<<10)
}

// BenchmarkPutConcurrent256KiB: as BenchmarkPutConcurrent1KiB with 256 KiB
// blocks, against the raw file-per-block anchor of BenchmarkPutGet256KiB
// (write, fsync, rename) driven by W writers.
func BenchmarkPutConcurrent256KiB(b *testing.B) {
	benchConcurrent(b, "256KiB", benchCount(2000), 256<<10)
}

// putsPerWriter is how many blocks each writer puts in one timed operation.
const putsPerWriter = 8

func benchConcurrent(b *testing.B, name string, n, size int) {
	for _, w := range []int{2, 8} {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			ctx := context.Background()
			per := w * putsPerWriter
			o := benchcmp.Options{Rounds: 9, Ops: max(n/(9*per), 1)}
			total := (o.Rounds*o.Ops + 1) * per // plus the warm-up op
			fmt.Printf("%s blocks, %d writers: %d puts per side (one op = %d puts)\n", name, w, total, per)
			bs := make([]blocks.Block, total)
			for i := range bs {
				bs[i] = newBlock(b, size)
			}
			s := newTestStore(b, b.TempDir())
			var put func(i int) error
			if size <= DefaultInlineThreshold {
				db, err := leveldb.OpenFile(b.TempDir(), nil)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { db.Close() })
				put = func(i int) error {
					return db.Put(blockKey(bs[i].CID), bs[i].Data, &opt.WriteOptions{Sync: true})
				}
			} else {
				raw := b.TempDir()
				put = func(i int) error { return rawFilePut(raw, bs[i]) }
			}
			// op runs w writers over the next per blocks.
			op := func(next *int, put func(i int) error) func() error {
				return func() error {
					start := *next
					*next += per
					errs := make([]error, w)
					var wg sync.WaitGroup
					for g := range w {
						wg.Go(func() {
							for j := range putsPerWriter {
								if err := put(start + g*putsPerWriter + j); err != nil {
									errs[g] = err
									return
								}
							}
						})
					}
					wg.Wait()
					for _, err := range errs {
						if err != nil {
							return err
						}
					}
					return nil
				}
			}
			var oi, ai int
			r := benchcmp.Compare(b, fmt.Sprintf("leveldb put %s concurrent w=%d (op = %d puts)", name, w, per), o,
				op(&oi, func(i int) error { return s.Put(ctx, bs[i]) }),
				op(&ai, put))
			b.ReportMetric(float64(r.Ours.Nanoseconds())/float64(per), "ours-ns/put")
		})
	}
}
