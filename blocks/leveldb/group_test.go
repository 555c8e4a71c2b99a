package leveldb

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// TestGroupCommit holds the first Put's append until the other Puts are
// queued behind it, so that they form one group: their pack entries share
// one append and sync and their inline records one batch, a block that
// does not verify fails only its own caller, and every other block is
// stored, readable, counted and still there after a reopen.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir)
	queued := s.group.Len
	release := make(chan struct{})
	var appends atomic.Int32
	s.testHook = func(p string) error {
		if p == "append" && appends.Add(1) == 1 {
			<-release
		}
		return nil
	}
	first := newBlock(t, 100<<10)
	firstErr := make(chan error, 1)
	go func() { firstErr <- s.Put(ctx, first) }()
	for appends.Load() == 0 {
		runtime.Gosched() // the first Put leads alone, into its append
	}
	want := map[cid.Cid][]byte{}
	var reqs [][]blocks.Block
	for i := range 6 {
		size := []int{100, 64 << 10}[i%2]
		bs := []blocks.Block{newBlock(t, size)}
		if i == 4 {
			bs = append(bs, newBlock(t, 200<<10), newBlock(t, 300))
		}
		reqs = append(reqs, bs)
	}
	bad := newBlock(t, 70<<10)
	bad.Data[0] ^= 1
	badInline := newBlock(t, 500)
	badInline.Data[0] ^= 1
	reqs = append(reqs, []blocks.Block{bad}, []blocks.Block{badInline})
	errs := make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, bs := range reqs {
		wg.Go(func() {
			if len(bs) == 1 {
				errs[i] = s.Put(ctx, bs[0])
			} else {
				errs[i] = s.PutMany(ctx, bs)
			}
		})
	}
	// The bad inline block fails before it queues (verified at once).
	for queued() < len(reqs)-1 {
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	if err := <-firstErr; err != nil {
		t.Fatal(err)
	}
	want[first.CID] = first.Data
	var bytes int64 = int64(len(first.Data))
	for i, bs := range reqs {
		if i >= 6 {
			if !errors.Is(errs[i], blocks.ErrIntegrity) {
				t.Fatalf("request %d (bad block) = %v, want ErrIntegrity", i, errs[i])
			}
			if ok, _ := s.Has(ctx, bs[0].CID); ok {
				t.Fatalf("bad block %d stored", i)
			}
			continue
		}
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		for _, b := range bs {
			want[b.CID] = b.Data
			bytes += int64(len(b.Data))
		}
	}
	// The first append, then the group's: its bad block made it truncate
	// and append the rest again, so 3 in all, not one per request.
	if n := appends.Load(); n != 3 {
		t.Fatalf("%d pack appends, want 3 (the first Put, then one group with a retry)", n)
	}
	check := func(s *Store) {
		t.Helper()
		for c, data := range want {
			got, err := s.Get(ctx, c)
			if err != nil || string(got) != string(data) {
				t.Fatalf("Get %s: %d bytes, %v", c, len(got), err)
			}
		}
		if n, by, err := s.Size(ctx); err != nil || n != int64(len(want)) || by != bytes {
			t.Fatalf("Size = %d, %d, %v; want %d, %d", n, by, err, len(want), bytes)
		}
	}
	check(s)
	checkPacks(t, dir)
	s.Close()
	s = newTestStore(t, dir)
	check(s)
}

// TestGroupCommitSameBlock: two requests of one group that store the same
// new block: the second waits for the next group, and both succeed.
func TestGroupCommitSameBlock(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, t.TempDir())
	release := make(chan struct{})
	var appends atomic.Int32
	s.testHook = func(p string) error {
		if p == "append" && appends.Add(1) == 1 {
			<-release
		}
		return nil
	}
	go s.Put(ctx, newBlock(t, 100<<10))
	for appends.Load() == 0 {
		runtime.Gosched()
	}
	b := newBlock(t, 80<<10)
	errs := make(chan error, 2)
	go func() { errs <- s.Put(ctx, b) }()
	go func() { errs <- s.PutMany(ctx, []blocks.Block{newBlock(t, 90<<10), b}) }()
	for {
		if s.group.Len() == 2 {
			break
		}
		runtime.Gosched()
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n, _, err := s.Size(ctx); err != nil || n != 3 {
		t.Fatalf("Size = %d, %v; want 3", n, err)
	}
}
