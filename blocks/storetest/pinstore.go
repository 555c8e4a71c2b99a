package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// RunPinStore runs the pin and garbage-collection conformance suite
// against stores made by open. Stores that implement blocks.PinStore run
// it in addition to Run:
//
//	func TestPinConformance(t *testing.T) {
//		storetest.RunPinStore(t, func(t *testing.T, now func() time.Time) blocks.PinStore {
//			return newTestStore(t, WithClock(now))
//		})
//	}
//
// open must return a new, empty store without a quota that reads the time
// (for the last-Put stamps and GC's grace period) only from now, a clock the
// suite sets; now is safe for concurrent use. No test sleeps.
func RunPinStore(t *testing.T, open func(t *testing.T, now func() time.Time) blocks.PinStore) {
	t.Helper()
	tests := []struct {
		name string
		f    func(t *testing.T, s blocks.PinStore, clk *clock)
	}{
		{"PinUnpinReplace", testPinUnpinReplace},
		{"PinNames", testPinNames},
		{"SharedCIDs", testSharedCIDs},
		{"PinnedMissing", testPinnedMissing},
		{"GCGrace", testGCGrace},
		{"GCRePutRenews", testGCRenew},
		{"GCProgressAndCancel", testGCProgress},
		{"Stat", testStat},
		{"GCConcurrentWrites", testGCConcurrent},
		{"PinClosed", testPinClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			s := open(t, clk.Now)
			t.Cleanup(func() { _ = s.Close() })
			tt.f(t, s, clk)
		})
	}
}

// clock is the suite's settable clock. Now is safe for concurrent use.
type clock struct {
	ns atomic.Int64

	// mu guards windows: the start times of the put→pin windows open in
	// testGCConcurrent, which Advance must not stretch past the grace.
	mu      sync.Mutex
	windows map[int]int64
}

func newClock() *clock {
	c := &clock{windows: map[int]int64{}}
	c.ns.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// open starts writer w's put→pin window at the current time.
func (c *clock) open(w int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.windows[w] = c.ns.Load()
}

func (c *clock) close(w int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.windows, w)
}

// advanceWithin advances the clock by d unless that would make an open
// window as long as grace (a writer breaking the safety rule); it reports
// whether it advanced.
func (c *clock) advanceWithin(d, grace time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := c.ns.Load() + int64(d)
	for _, start := range c.windows {
		if next-start >= int64(grace) {
			return false
		}
	}
	c.ns.Store(next)
	return true
}

func pin(t *testing.T, s blocks.PinStore, name string, cids ...cid.Cid) {
	t.Helper()
	if err := s.Pin(context.Background(), name, cids); err != nil {
		t.Fatalf("Pin %q: %v", name, err)
	}
}

// pinned returns the CIDs of a pin as a set, failing on duplicates.
func pinned(t *testing.T, s blocks.PinStore, name string) (map[cid.Cid]bool, error) {
	t.Helper()
	got := map[cid.Cid]bool{}
	for c, err := range s.Pinned(context.Background(), name) {
		if err != nil {
			return nil, err
		}
		if got[c] {
			t.Fatalf("Pinned %q yielded %s twice", name, c)
		}
		got[c] = true
	}
	return got, nil
}

func wantPinned(t *testing.T, s blocks.PinStore, name string, want ...cid.Cid) {
	t.Helper()
	got, err := pinned(t, s, name)
	if err != nil {
		t.Fatalf("Pinned %q: %v", name, err)
	}
	if len(got) != len(want) {
		t.Fatalf("Pinned %q = %d CIDs, want %d", name, len(got), len(want))
	}
	for _, c := range want {
		if !got[c] {
			t.Fatalf("Pinned %q misses %s", name, c)
		}
	}
}

func wantIsPinned(t *testing.T, s blocks.PinStore, c cid.Cid, want bool) {
	t.Helper()
	ok, err := s.IsPinned(context.Background(), c)
	if err != nil || ok != want {
		t.Fatalf("IsPinned %s = %v, %v; want %v", c, ok, err, want)
	}
}

func pins(t *testing.T, s blocks.PinStore) map[string]int64 {
	t.Helper()
	got := map[string]int64{}
	for pi, err := range s.Pins(context.Background()) {
		if err != nil {
			t.Fatalf("Pins: %v", err)
		}
		if _, dup := got[pi.Name]; dup {
			t.Fatalf("Pins yielded %q twice", pi.Name)
		}
		got[pi.Name] = pi.Blocks
	}
	return got
}

func wantStat(t *testing.T, s blocks.PinStore, want blocks.Stat) {
	t.Helper()
	got, err := s.Stat(context.Background())
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if got != want {
		t.Fatalf("Stat = %+v, want %+v", got, want)
	}
}

func gc(t *testing.T, s blocks.PinStore, grace time.Duration) blocks.GCResult {
	t.Helper()
	res, err := s.GC(context.Background(), grace, nil)
	if err != nil {
		t.Fatalf("GC: %v", err)
	}
	return res
}

func wantPresent(t *testing.T, s blocks.PinStore, b blocks.Block, want bool) {
	t.Helper()
	got, err := s.Get(context.Background(), b.CID)
	switch {
	case want && (err != nil || !bytes.Equal(got, b.Data)):
		t.Fatalf("Get %s = %d bytes, %v; want the block", b.CID, len(got), err)
	case !want && !errors.Is(err, blocks.ErrNotFound):
		t.Fatalf("Get %s = %v, want ErrNotFound", b.CID, err)
	}
}

func testPinUnpinReplace(t *testing.T, s blocks.PinStore, _ *clock) {
	ctx := context.Background()
	b1, b2, b3 := block(t, 1, 10), block(t, 2, 20), block(t, 3, 30)
	for _, b := range []blocks.Block{b1, b2, b3} {
		put(t, s, b)
	}
	if _, err := pinned(t, s, "a"); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Pinned of an absent pin = %v, want ErrNotFound", err)
	}
	pin(t, s, "a", b1.CID, b2.CID, b1.CID) // duplicates count once
	wantPinned(t, s, "a", b1.CID, b2.CID)
	if got := pins(t, s); len(got) != 1 || got["a"] != 2 {
		t.Fatalf("Pins = %v, want a:2", got)
	}
	wantIsPinned(t, s, b1.CID, true)
	wantIsPinned(t, s, b3.CID, false)

	pin(t, s, "a", b2.CID, b3.CID) // replace
	wantPinned(t, s, "a", b2.CID, b3.CID)
	wantIsPinned(t, s, b1.CID, false)
	wantIsPinned(t, s, b2.CID, true)
	wantIsPinned(t, s, b3.CID, true)

	pin(t, s, "a", b2.CID, b3.CID) // same set again
	wantPinned(t, s, "a", b2.CID, b3.CID)

	pin(t, s, "empty") // an empty pin exists
	wantPinned(t, s, "empty")
	if got := pins(t, s); len(got) != 2 || got["a"] != 2 || got["empty"] != 0 {
		t.Fatalf("Pins = %v, want a:2 empty:0", got)
	}

	for range 2 { // the second Unpin is a no-op
		if err := s.Unpin(ctx, "a"); err != nil {
			t.Fatalf("Unpin: %v", err)
		}
	}
	if _, err := pinned(t, s, "a"); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Pinned after Unpin = %v, want ErrNotFound", err)
	}
	for _, b := range []blocks.Block{b1, b2, b3} {
		wantIsPinned(t, s, b.CID, false)
		wantPresent(t, s, b, true) // unpinning deletes nothing
	}
	if got := pins(t, s); len(got) != 1 || got["empty"] != 0 {
		t.Fatalf("Pins = %v, want empty:0", got)
	}
	if err := s.Unpin(ctx, "never"); err != nil {
		t.Fatalf("Unpin absent: %v", err)
	}
	if err := s.Pin(ctx, "undef", []cid.Cid{b1.CID, cid.Undef}); err == nil {
		t.Fatal("Pin of an undefined CID succeeded")
	}
	if _, err := pinned(t, s, "undef"); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("a refused Pin left a pin: %v", err)
	}
}

func testPinNames(t *testing.T, s blocks.PinStore, _ *clock) {
	ctx := context.Background()
	b := block(t, 1, 10)
	for _, name := range []string{"", strings.Repeat("x", 256), "a\x00b", "\x00", "\xff", "a\xc3"} {
		if err := s.Pin(ctx, name, []cid.Cid{b.CID}); !errors.Is(err, blocks.ErrBadPin) {
			t.Errorf("Pin %q = %v, want ErrBadPin", name, err)
		}
	}
	if got := pins(t, s); len(got) != 0 {
		t.Fatalf("refused Pins left pins: %v", got)
	}
	wantIsPinned(t, s, b.CID, false)
	good := []string{"a", strings.Repeat("x", 255), strings.Repeat("é", 127), "/a/b c", "日本", "\x01\x7f"}
	for _, name := range good {
		pin(t, s, name, b.CID)
		wantPinned(t, s, name, b.CID)
	}
	got := pins(t, s)
	if len(got) != len(good) {
		t.Fatalf("Pins = %d, want %d", len(got), len(good))
	}
	for _, name := range good {
		if got[name] != 1 {
			t.Fatalf("Pins misses %q: %v", name, got)
		}
	}
	// Names that are prefixes of one another stay apart.
	c2 := block(t, 2, 10).CID
	pin(t, s, "ab", c2)
	wantPinned(t, s, "a", b.CID)
	wantPinned(t, s, "ab", c2)
}

func testSharedCIDs(t *testing.T, s blocks.PinStore, _ *clock) {
	ctx := context.Background()
	b1, b2 := block(t, 1, 10), block(t, 2, 10)
	pin(t, s, "x", b1.CID, b2.CID)
	pin(t, s, "y", b2.CID)
	if err := s.Unpin(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	wantIsPinned(t, s, b1.CID, false)
	wantIsPinned(t, s, b2.CID, true) // still named by y
	pin(t, s, "y")
	wantIsPinned(t, s, b2.CID, false)
}

func testPinnedMissing(t *testing.T, s blocks.PinStore, clk *clock) {
	ctx := context.Background()
	a, b := block(t, 1, 100), block(t, 2, 200)
	pin(t, s, "p", a.CID, b.CID) // neither is stored
	wantPinned(t, s, "p", a.CID, b.CID)
	wantIsPinned(t, s, a.CID, true)
	if ok, err := s.Has(ctx, a.CID); err != nil || ok {
		t.Fatalf("Has of a pinned, never-put block = %v, %v", ok, err)
	}
	wantStat(t, s, blocks.Stat{Pins: 1, PinnedBlocks: 2})
	put(t, s, a) // repair
	clk.Advance(48 * time.Hour)
	if res := gc(t, s, time.Hour); res.Deleted != 0 || res.Scanned != 1 {
		t.Fatalf("GC = %+v, want 1 scanned, 0 deleted", res)
	}
	wantPresent(t, s, a, true)
	wantStat(t, s, blocks.Stat{Blocks: 1, Bytes: 100, Pins: 1, PinnedBlocks: 2})
}

func testGCGrace(t *testing.T, s blocks.PinStore, clk *clock) {
	// Sizes straddle typical inline thresholds (blocks/leveldb: 16 KiB).
	a, b, c, d := block(t, 1, 100), block(t, 2, 40<<10), block(t, 3, 300), block(t, 4, 20<<10)
	for _, x := range []blocks.Block{a, b, c} {
		put(t, s, x)
	}
	pin(t, s, "keep", a.CID)
	clk.Advance(30 * time.Minute)
	put(t, s, d)
	if res := gc(t, s, time.Hour); res != (blocks.GCResult{Scanned: 4, Kept: 3}) {
		t.Fatalf("GC before grace = %+v, want 4 scanned, 3 kept", res)
	}
	clk.Advance(31 * time.Minute) // a, b, c are 61 min old, d 31 min
	res := gc(t, s, time.Hour)
	want := blocks.GCResult{Scanned: 4, Deleted: 2, Freed: int64(len(b.Data) + len(c.Data)), Kept: 1}
	if res != want {
		t.Fatalf("GC = %+v, want %+v", res, want)
	}
	wantPresent(t, s, a, true) // pinned
	wantPresent(t, s, b, false)
	wantPresent(t, s, c, false)
	wantPresent(t, s, d, true) // young
	wantSize(t, s, 2, int64(len(a.Data)+len(d.Data)))
	// Exactly at the grace boundary a block is kept: older means older.
	clk.Advance(29 * time.Minute) // d is 60 min old
	if res := gc(t, s, time.Hour); res.Deleted != 0 || res.Kept != 1 {
		t.Fatalf("GC at the boundary = %+v, want d kept", res)
	}
	clk.Advance(time.Nanosecond)
	if res := gc(t, s, time.Hour); res.Deleted != 1 || res.Freed != int64(len(d.Data)) {
		t.Fatalf("GC past the boundary = %+v, want d deleted", res)
	}
	// Grace 0 takes everything unpinned that is not from this instant.
	e := block(t, 5, 10)
	put(t, s, e)
	clk.Advance(time.Second)
	if res := gc(t, s, 0); res.Deleted != 1 {
		t.Fatalf("GC grace 0 = %+v, want 1 deleted", res)
	}
	wantPresent(t, s, a, true)
	wantSize(t, s, 1, int64(len(a.Data)))
	// The store works on after GC.
	put(t, s, b)
	wantPresent(t, s, b, true)
}

func testGCRenew(t *testing.T, s blocks.PinStore, clk *clock) {
	small, large := block(t, 1, 100), block(t, 2, 64<<10)
	put(t, s, small)
	put(t, s, large)
	clk.Advance(2 * time.Hour)
	put(t, s, small) // renews
	put(t, s, large)
	if res := gc(t, s, time.Hour); res.Deleted != 0 || res.Kept != 2 {
		t.Fatalf("GC after re-Put = %+v, want both kept", res)
	}
	clk.Advance(2 * time.Hour)
	if res := gc(t, s, time.Hour); res.Deleted != 2 {
		t.Fatalf("GC = %+v, want both deleted", res)
	}
	wantSize(t, s, 0, 0)
}

func testGCProgress(t *testing.T, s blocks.PinStore, clk *clock) {
	const n = 600
	var total int64
	for i := range n {
		b := block(t, uint64(i), 50+i%7)
		put(t, s, b)
		total += int64(len(b.Data))
	}
	clk.Advance(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res, err := s.GC(ctx, time.Minute, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("GC with a cancelled context = %+v, %v; want context.Canceled", res, err)
	}
	n0, b0, _ := s.Size(context.Background())
	if n0 != n-res.Deleted || b0 != total-res.Freed {
		t.Fatalf("after cancelled GC Size = %d, %d; result %+v", n0, b0, res)
	}
	// Cancel from the progress callback: GC stops and reports what it did.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	var calls int
	res, err = s.GC(ctx, time.Minute, func(p blocks.GCProgress) {
		calls++
		cancel()
	})
	if err == nil && res.Deleted != n0 {
		t.Fatalf("GC cancelled in progress = %+v, %v", res, err)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("GC cancelled in progress = %v, want context.Canceled", err)
	}
	n1, b1, _ := s.Size(context.Background())
	if n1 != n0-res.Deleted || b1 != b0-res.Freed {
		t.Fatalf("after GC Size = %d, %d; result %+v; before %d, %d", n1, b1, res, n0, b0)
	}
	// A full run reports monotone progress ending at the result.
	var last blocks.GCProgress
	res, err = s.GC(context.Background(), time.Minute, func(p blocks.GCProgress) {
		if p.Scanned < last.Scanned || p.Deleted < last.Deleted || p.Freed < last.Freed {
			t.Errorf("progress went back: %+v after %+v", p, last)
		}
		last = p
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != n1 || res.Freed != b1 {
		t.Fatalf("GC = %+v, want %d deleted, %d freed", res, n1, b1)
	}
	if last != (blocks.GCProgress{Scanned: res.Scanned, Deleted: res.Deleted, Freed: res.Freed}) {
		t.Fatalf("last progress %+v, result %+v", last, res)
	}
	wantSize(t, s, 0, 0)
}

func testStat(t *testing.T, s blocks.PinStore, clk *clock) {
	wantStat(t, s, blocks.Stat{})
	a, b, c := block(t, 1, 100), block(t, 2, 30<<10), block(t, 3, 7)
	missing := block(t, 4, 1)
	put(t, s, a)
	put(t, s, b)
	put(t, s, c)
	put(t, s, a)
	pin(t, s, "x", a.CID, b.CID)
	pin(t, s, "y", b.CID, missing.CID)
	pin(t, s, "z")
	wantStat(t, s, blocks.Stat{Blocks: 3, Bytes: 100 + 30<<10 + 7, Pins: 3, PinnedBlocks: 3})
	pin(t, s, "x", c.CID)
	wantStat(t, s, blocks.Stat{Blocks: 3, Bytes: 100 + 30<<10 + 7, Pins: 3, PinnedBlocks: 3})
	clk.Advance(time.Hour)
	gc(t, s, time.Minute) // a goes
	wantStat(t, s, blocks.Stat{Blocks: 2, Bytes: 30<<10 + 7, Pins: 3, PinnedBlocks: 3})
	if err := s.Unpin(context.Background(), "y"); err != nil {
		t.Fatal(err)
	}
	wantStat(t, s, blocks.Stat{Blocks: 2, Bytes: 30<<10 + 7, Pins: 2, PinnedBlocks: 1})
	if err := s.Delete(context.Background(), c.CID); err != nil { // Delete ignores pins
		t.Fatal(err)
	}
	wantStat(t, s, blocks.Stat{Blocks: 1, Bytes: 30 << 10, Pins: 2, PinnedBlocks: 1})
}

// testGCConcurrent: writers put blocks from a shared pool (so blocks drift
// out of pins, grow old, get collected and are put again) and pin them
// within the grace period, while GC runs over and over with the clock
// moving on; every block a writer has pinned must be there whenever it
// looks, and at the end.
func testGCConcurrent(t *testing.T, s blocks.PinStore, clk *clock) {
	const (
		writers = 4
		rounds  = 25
		perPin  = 6
		pool    = 40
		grace   = 10 * time.Second
	)
	ctx := context.Background()
	poolBlocks := make([]blocks.Block, pool)
	for i := range poolBlocks {
		n := 100 + i
		if i%4 == 0 {
			n = 20<<10 + i // a file in blocks/leveldb
		}
		poolBlocks[i] = block(t, uint64(5000+i), n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	final := make([][]blocks.Block, writers)
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			name := fmt.Sprintf("writer-%d", w)
			for round := range rounds {
				set := make([]blocks.Block, perPin)
				cids := make([]cid.Cid, perPin)
				for i := range set {
					set[i] = poolBlocks[r.IntN(pool)]
					cids[i] = set[i].CID
				}
				clk.open(w)
				for _, b := range set {
					if err := s.Put(ctx, b); err != nil {
						errs <- err
						return
					}
				}
				if err := s.Pin(ctx, name, cids); err != nil {
					errs <- err
					return
				}
				clk.close(w)
				for _, b := range set {
					got, err := s.Get(ctx, b.CID)
					if err != nil || !bytes.Equal(got, b.Data) {
						errs <- fmt.Errorf("%s round %d: pinned block %s: %d bytes, %v", name, round, b.CID, len(got), err)
						return
					}
				}
				if round%7 == 6 && w%2 == 0 {
					if err := s.Unpin(ctx, name); err != nil {
						errs <- err
						return
					}
					set = nil
				}
				final[w] = set
			}
		})
	}
	stop := make(chan struct{})
	var gcs, deleted atomic.Int64
	var gcWG sync.WaitGroup
	gcWG.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.advanceWithin(3*time.Second, grace)
			res, err := s.GC(ctx, grace, nil)
			if err != nil {
				errs <- fmt.Errorf("GC: %w", err)
				return
			}
			gcs.Add(1)
			deleted.Add(res.Deleted)
		}
	})
	wg.Wait()
	close(stop)
	gcWG.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d GC runs during the writes deleted %d blocks", gcs.Load(), deleted.Load())
	want := map[cid.Cid]blocks.Block{}
	for w, set := range final {
		name := fmt.Sprintf("writer-%d", w)
		for _, b := range set {
			want[b.CID] = b
			wantPresent(t, s, b, true)
		}
		if set == nil {
			if _, err := pinned(t, s, name); !errors.Is(err, blocks.ErrNotFound) {
				t.Fatalf("Pinned %q after Unpin = %v", name, err)
			}
		}
	}
	// Once everything is old, GC leaves exactly the pinned blocks.
	clk.Advance(2 * grace)
	gc(t, s, grace)
	var total int64
	for _, b := range want {
		wantPresent(t, s, b, true)
		total += int64(len(b.Data))
	}
	wantSize(t, s, int64(len(want)), total)
	st, err := s.Stat(ctx)
	if err != nil || st.PinnedBlocks != int64(len(want)) {
		t.Fatalf("Stat = %+v, %v; want %d pinned blocks", st, err, len(want))
	}
}

func testPinClosed(t *testing.T, s blocks.PinStore, _ *clock) {
	ctx := context.Background()
	b := block(t, 1, 10)
	put(t, s, b)
	pin(t, s, "p", b.CID)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, "p", nil); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Pin after Close = %v", err)
	}
	if err := s.Unpin(ctx, "p"); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Unpin after Close = %v", err)
	}
	if _, err := s.IsPinned(ctx, b.CID); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("IsPinned after Close = %v", err)
	}
	if _, err := s.GC(ctx, 0, nil); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("GC after Close = %v", err)
	}
	if _, err := s.Stat(ctx); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Stat after Close = %v", err)
	}
	if _, err := pinned(t, s, "p"); !errors.Is(err, blocks.ErrClosed) {
		t.Errorf("Pinned after Close = %v", err)
	}
	var perr error
	for _, err := range s.Pins(ctx) {
		perr = err
	}
	if !errors.Is(perr, blocks.ErrClosed) {
		t.Errorf("Pins after Close = %v", perr)
	}
}
