// Package storetest is the conformance suite every blocks.Store
// implementation runs from its tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) blocks.Store { return newTestStore(t) })
//	}
//
// open must return a new, empty store for each call; Run closes it at the
// end of each subtest (Close is idempotent, so open may also register its
// own cleanup).
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// Run runs the conformance suite against stores made by open.
func Run(t *testing.T, open func(t *testing.T) blocks.Store) {
	t.Helper()
	newStore := func(t *testing.T) blocks.Store {
		t.Helper()
		s := open(t)
		t.Cleanup(func() { _ = s.Close() })
		return s
	}
	tests := []struct {
		name string
		f    func(t *testing.T, s blocks.Store)
	}{
		{"PutGet", testPutGet},
		{"GetNotFound", testGetNotFound},
		{"PutWrongBytes", testPutWrongBytes},
		{"PutTooLarge", testPutTooLarge},
		{"PutIdempotent", testPutIdempotent},
		{"DeleteIdempotent", testDeleteIdempotent},
		{"Has", testHas},
		{"AllAndSize", testAllAndSize},
		{"EmptyAndMaxBlock", testEdgeSizes},
		{"CopiesBytes", testCopies},
		{"Concurrent", testConcurrent},
		{"Closed", testClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.f(t, newStore(t)) })
	}
	t.Run("PutMany", func(t *testing.T) {
		s := newStore(t)
		bp, ok := s.(blocks.BatchPutter)
		if !ok {
			t.Skip("not a blocks.BatchPutter")
		}
		testPutMany(t, s, bp)
	})
}

// testPutMany: PutMany stores every block (sizes from empty to the
// largest, duplicates and present blocks included) as Put would, refuses
// bad blocks with Put's errors, and fails with ErrClosed after Close.
func testPutMany(t *testing.T, s blocks.Store, bp blocks.BatchPutter) {
	ctx := context.Background()
	var bs []blocks.Block
	var total int64
	for i, n := range []int{0, 1, 100, 4096, 20 << 10, 256 << 10, 256<<10 + 1, blocks.MaxBlockSize} {
		b := block(t, 100+uint64(i), n)
		bs = append(bs, b)
		total += int64(n)
	}
	put(t, s, bs[2]) // present before
	if err := bp.PutMany(ctx, append(bs, bs[5], bs[0])); err != nil {
		t.Fatalf("PutMany: %v", err)
	}
	wantSize(t, s, int64(len(bs)), total)
	for _, b := range bs {
		got, err := s.Get(ctx, b.CID)
		if err != nil || !bytes.Equal(got, b.Data) {
			t.Fatalf("Get %d bytes after PutMany: %v", len(b.Data), err)
		}
	}
	if err := bp.PutMany(ctx, nil); err != nil {
		t.Fatalf("PutMany of nothing: %v", err)
	}
	if err := bp.PutMany(ctx, bs); err != nil { // all present: renewals
		t.Fatalf("PutMany again: %v", err)
	}
	wantSize(t, s, int64(len(bs)), total)
	x := block(t, 200, 300<<10)
	bad := blocks.Block{CID: x.CID, Data: x.Data[1:]}
	if err := bp.PutMany(ctx, []blocks.Block{bad}); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("PutMany of a wrong block = %v, want ErrIntegrity", err)
	}
	big := make([]byte, blocks.MaxBlockSize+1)
	if err := bp.PutMany(ctx, []blocks.Block{{CID: blocks.Sum(big), Data: big}}); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("PutMany of a large block = %v, want ErrTooLarge", err)
	}
	if ok, _ := s.Has(ctx, x.CID); ok {
		t.Fatal("a refused block is stored")
	}
	wantSize(t, s, int64(len(bs)), total)
	// The caller may reuse its buffers afterwards.
	y := block(t, 201, 64<<10)
	data := bytes.Clone(y.Data)
	if err := bp.PutMany(ctx, []blocks.Block{{CID: y.CID, Data: data}}); err != nil {
		t.Fatal(err)
	}
	data[0] ^= 1
	if got, err := s.Get(ctx, y.CID); err != nil || !bytes.Equal(got, y.Data) {
		t.Fatalf("Get after the caller changed its buffer: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bp.PutMany(ctx, []blocks.Block{block(t, 202, 10)}); !errors.Is(err, blocks.ErrClosed) {
		t.Fatalf("PutMany after Close = %v, want ErrClosed", err)
	}
}

// block returns a pseudo-random block of n ≤ MaxBlockSize bytes; the same
// seed and size give the same block. Safe to call from any goroutine.
func block(_ *testing.T, seed uint64, n int) blocks.Block {
	r := rand.New(rand.NewPCG(seed, 7))
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return blocks.Block{CID: blocks.Sum(data), Data: data}
}

func put(t *testing.T, s blocks.Store, b blocks.Block) {
	t.Helper()
	if err := s.Put(context.Background(), b); err != nil {
		t.Fatalf("Put %s: %v", b.CID, err)
	}
}

func wantSize(t *testing.T, s blocks.Store, n, bytes int64) {
	t.Helper()
	gn, gb, err := s.Size(context.Background())
	if err != nil {
		t.Fatalf("Size: %v", err)
	}
	if gn != n || gb != bytes {
		t.Fatalf("Size = %d blocks %d bytes, want %d, %d", gn, gb, n, bytes)
	}
}

func testPutGet(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	for i, n := range []int{1, 100, 4096, 256 << 10} {
		b := block(t, uint64(i), n)
		put(t, s, b)
		got, err := s.Get(ctx, b.CID)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !bytes.Equal(got, b.Data) {
			t.Fatalf("Get(%d bytes) returned different bytes", n)
		}
	}
}

func testGetNotFound(t *testing.T, s blocks.Store) {
	b := block(t, 1, 10)
	_, err := s.Get(context.Background(), b.CID)
	if !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Get absent = %v, want ErrNotFound", err)
	}
}

func testPutWrongBytes(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	b := block(t, 1, 100)
	other := block(t, 2, 100)
	bad := []blocks.Block{
		{CID: b.CID, Data: other.Data},
		{CID: b.CID, Data: b.Data[:99]},
		{CID: b.CID, Data: append(bytes.Clone(b.Data), 0)},
		{CID: b.CID, Data: nil},
		{CID: cid.NewCidV0(b.CID.Hash()), Data: b.Data},
		{CID: cid.NewCidV1(cid.DagProtobuf, b.CID.Hash()), Data: b.Data},
	}
	flipped := bytes.Clone(b.Data)
	flipped[50] ^= 1
	bad = append(bad, blocks.Block{CID: b.CID, Data: flipped})
	for i, x := range bad {
		if err := s.Put(ctx, x); !errors.Is(err, blocks.ErrIntegrity) {
			t.Errorf("bad Put %d = %v, want ErrIntegrity", i, err)
		}
	}
	if ok, err := s.Has(ctx, b.CID); err != nil || ok {
		t.Fatalf("after refused Puts Has = %v, %v; want false", ok, err)
	}
	wantSize(t, s, 0, 0)
}

func testPutTooLarge(t *testing.T, s blocks.Store) {
	data := make([]byte, blocks.MaxBlockSize+1)
	b := blocks.Block{CID: blocks.Sum(data), Data: data}
	if err := s.Put(context.Background(), b); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("Put of %d bytes = %v, want ErrTooLarge", len(data), err)
	}
	wantSize(t, s, 0, 0)
}

func testPutIdempotent(t *testing.T, s blocks.Store) {
	b := block(t, 3, 1000)
	for range 3 {
		put(t, s, b)
	}
	wantSize(t, s, 1, 1000)
}

func testDeleteIdempotent(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	b := block(t, 4, 500)
	if err := s.Delete(ctx, b.CID); err != nil {
		t.Fatalf("Delete absent: %v", err)
	}
	put(t, s, b)
	for range 2 {
		if err := s.Delete(ctx, b.CID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
	}
	if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
	}
	wantSize(t, s, 0, 0)
	put(t, s, b) // can be stored again
	wantSize(t, s, 1, 500)
}

func testHas(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	b := block(t, 5, 10)
	if ok, err := s.Has(ctx, b.CID); err != nil || ok {
		t.Fatalf("Has before Put = %v, %v", ok, err)
	}
	put(t, s, b)
	if ok, err := s.Has(ctx, b.CID); err != nil || !ok {
		t.Fatalf("Has after Put = %v, %v", ok, err)
	}
}

func testAllAndSize(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	wantSize(t, s, 0, 0)
	want := map[cid.Cid]bool{}
	var total int64
	for i := range 50 {
		b := block(t, uint64(100+i), 10+i)
		put(t, s, b)
		want[b.CID] = true
		total += int64(len(b.Data))
	}
	wantSize(t, s, 50, total)
	got := map[cid.Cid]bool{}
	for c, err := range s.All(ctx) {
		if err != nil {
			t.Fatalf("All: %v", err)
		}
		if got[c] {
			t.Fatalf("All yielded %s twice", c)
		}
		got[c] = true
	}
	if len(got) != len(want) {
		t.Fatalf("All yielded %d CIDs, want %d", len(got), len(want))
	}
	for c := range want {
		if !got[c] {
			t.Fatalf("All missed %s", c)
		}
	}
	// Stopping early is allowed.
	n := 0
	for _, err := range s.All(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 3 {
			break
		}
	}
}

func testEdgeSizes(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	for _, n := range []int{0, blocks.MaxBlockSize} {
		b := block(t, 9, n)
		put(t, s, b)
		got, err := s.Get(ctx, b.CID)
		if err != nil || !bytes.Equal(got, b.Data) {
			t.Fatalf("%d-byte block: Get = %d bytes, %v", n, len(got), err)
		}
	}
	wantSize(t, s, 2, blocks.MaxBlockSize)
}

func testCopies(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	b := block(t, 6, 64)
	orig := bytes.Clone(b.Data)
	put(t, s, b)
	b.Data[0] ^= 0xff // the caller reuses its buffer
	got, err := s.Get(ctx, b.CID)
	if err != nil || !bytes.Equal(got, orig) {
		t.Fatalf("Get after caller changed its buffer = %v", err)
	}
	got[1] ^= 0xff // the caller changes what Get returned
	again, err := s.Get(ctx, b.CID)
	if err != nil || !bytes.Equal(again, orig) {
		t.Fatalf("Get after caller changed a returned slice = %v", err)
	}
}

func testConcurrent(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	const workers, per = 8, 40
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				// Workers overlap: each block is used by two workers.
				b := block(t, uint64(1000+(w/2)*per+i), 100+i)
				if err := s.Put(ctx, b); err != nil {
					errs <- err
					return
				}
				got, err := s.Get(ctx, b.CID)
				if err != nil && !errors.Is(err, blocks.ErrNotFound) { // the twin may have deleted it
					errs <- err
					return
				}
				if err == nil && !bytes.Equal(got, b.Data) {
					errs <- fmt.Errorf("get %s: wrong bytes", b.CID)
					return
				}
				if _, err := s.Has(ctx, b.CID); err != nil {
					errs <- err
					return
				}
				if i%3 == 0 {
					if err := s.Delete(ctx, b.CID); err != nil {
						errs <- err
						return
					}
				}
				if i%10 == 0 {
					for _, err := range s.All(ctx) {
						if err != nil {
							errs <- err
							return
						}
					}
					if _, _, err := s.Size(ctx); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Settle: blocks never deleted must all be there.
	var n, total int64
	for pair := range workers / 2 {
		for i := range per {
			b := block(t, uint64(1000+pair*per+i), 100+i)
			if i%3 == 0 {
				_ = s.Delete(ctx, b.CID)
				continue
			}
			if ok, err := s.Has(ctx, b.CID); err != nil || !ok {
				t.Fatalf("block %d/%d missing after concurrent run: %v", pair, i, err)
			}
			n++
			total += int64(len(b.Data))
		}
	}
	wantSize(t, s, n, total)
}

func testClosed(t *testing.T, s blocks.Store) {
	ctx := context.Background()
	b := block(t, 8, 10)
	put(t, s, b)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := s.Put(ctx, block(t, 9, 10)); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Has(ctx, b.CID); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Has after Close = %v, want ErrClosed", err)
	}
	if err := s.Delete(ctx, b.CID); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Delete after Close = %v, want ErrClosed", err)
	}
	if _, _, err := s.Size(ctx); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Size after Close = %v, want ErrClosed", err)
	}
	var allErr error
	for _, err := range s.All(ctx) {
		if err != nil {
			allErr = err
			break
		}
	}
	if !errors.Is(allErr, blocks.ErrClosed) {
		t.Errorf("All after Close = %v, want ErrClosed", allErr)
	}
}
