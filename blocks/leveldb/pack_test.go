package leveldb

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/syndtr/goleveldb/leveldb/util"

	"blocktree.dev/bt/blocks"
)

// crash closes s without its closing checkpoint, as a kill -9 leaves it:
// goleveldb's journal holds every write (synced or not) that returned.
func (s *Store) crash() {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.closed = true
	s.closeFiles()
	s.db.Close()
}

// wantBlocks checks that exactly want is stored (every block reads back
// and verifies) and that the counters agree.
func wantBlocks(t *testing.T, s *Store, want map[cid.Cid][]byte) {
	t.Helper()
	ctx := context.Background()
	var bytes int64
	for c, d := range want {
		got, err := s.Get(ctx, c)
		if err != nil || string(got) != string(d) {
			t.Fatalf("Get %s: %d bytes, %v", c, len(got), err)
		}
		bytes += int64(len(d))
	}
	n := 0
	for c, err := range s.All(ctx) {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := want[c]; !ok {
			t.Fatalf("unexpected block %s", c)
		}
		n++
	}
	if n != len(want) {
		t.Fatalf("All: %d blocks, want %d", n, len(want))
	}
	if cn, cb, err := s.Size(ctx); err != nil || cn != int64(len(want)) || cb != bytes {
		t.Fatalf("Size = %d, %d, %v; want %d, %d", cn, cb, err, len(want), bytes)
	}
}

// checkPacks walks every pack: each must be whole entries to its end.
func checkPacks(t *testing.T, dir string) int {
	t.Helper()
	s := &Store{dir: dir}
	ns, err := s.listPacks()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range ns {
		data, err := os.ReadFile(s.packPath(n))
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); {
			_, sz, hl, err := parseEntryHeader(data[off:])
			if err != nil || off+hl+int(sz) > len(data) {
				t.Fatalf("pack %d: bad entry at %d of %d: %v", n, off, len(data), err)
			}
			off += hl + int(sz)
		}
	}
	return len(ns)
}

func TestPutMany(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir)
	appends := 0
	s.testHook = func(p string) error {
		if p == "append" {
			appends++
		}
		return nil
	}
	want := map[cid.Cid][]byte{}
	var bs []blocks.Block
	for i := range 12 {
		b := newBlock(t, []int{100, 100 << 10, 256 << 10}[i%3])
		bs = append(bs, b)
		want[b.CID] = b.Data
	}
	bs = append(bs, bs[1], bs[0]) // duplicates
	if err := s.PutMany(ctx, bs); err != nil {
		t.Fatal(err)
	}
	if appends != 1 {
		t.Fatalf("%d pack appends (syncs) for one PutMany, want 1", appends)
	}
	wantBlocks(t, s, want)
	// Present blocks are renewed, new ones stored.
	extra := newBlock(t, 200<<10)
	want[extra.CID] = extra.Data
	if err := s.PutMany(ctx, []blocks.Block{bs[2], extra, bs[3]}); err != nil {
		t.Fatal(err)
	}
	wantBlocks(t, s, want)
	// One bad block: nothing stored.
	good, bad := newBlock(t, 50<<10), newBlock(t, 50<<10)
	bad.Data = append([]byte{bad.Data[0] ^ 1}, bad.Data[1:]...) // differs from the original whatever its first byte
	if err := s.PutMany(ctx, []blocks.Block{good, bad}); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("PutMany with a bad block = %v", err)
	}
	if err := s.PutMany(ctx, []blocks.Block{good, newBlock(t, blocks.MaxBlockSize+1)}); !errors.Is(err, blocks.ErrTooLarge) {
		t.Fatalf("PutMany with a large block = %v", err)
	}
	if err := s.PutMany(ctx, nil); err != nil {
		t.Fatal(err)
	}
	wantBlocks(t, s, want)
	s.Close()
	s = newTestStore(t, dir)
	wantBlocks(t, s, want)
	checkPacks(t, dir)
}

func TestPutManyQuota(t *testing.T) {
	ctx := context.Background()
	s := newTestStore(t, t.TempDir(), WithQuota(300<<10))
	bs := []blocks.Block{newBlock(t, 200<<10), newBlock(t, 200<<10)}
	if err := s.PutMany(ctx, bs); !errors.Is(err, blocks.ErrNoSpace) {
		t.Fatalf("PutMany over quota = %v", err)
	}
	wantBlocks(t, s, map[cid.Cid][]byte{})
	if err := s.PutMany(ctx, bs[:1]); err != nil {
		t.Fatal(err)
	}
}

// TestPackRecovery loses the index writes of Puts and PutManys (as a power
// cut may: they are not synced) and checks that Open finds every block
// again from the packs, with exact counters, and truncates a torn tail.
func TestPackRecovery(t *testing.T) {
	for _, torn := range []string{"none", "header", "data", "bad-data"} {
		t.Run("torn="+torn, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := newTestStore(t, dir, withPackSize(1<<20))
			want := map[cid.Cid][]byte{}
			put := func(n int) blocks.Block {
				b := newBlock(t, n)
				if err := s.Put(ctx, b); err != nil {
					t.Fatal(err)
				}
				want[b.CID] = b.Data
				return b
			}
			for i := range 6 {
				put([]int{1 << 10, 300 << 10}[i%2])
			}
			pinned := put(100 << 10)
			if err := s.Pin(ctx, "a", []cid.Cid{pinned.CID}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			saved := t.TempDir()
			if err := os.CopyFS(saved, os.DirFS(filepath.Join(dir, dirIndex))); err != nil {
				t.Fatal(err)
			}
			s = newTestStore(t, dir, withPackSize(1<<20))
			// Unsynced index writes from here on: they will be lost.
			for i := range 8 {
				put(100<<10 + i)
			}
			var many []blocks.Block
			for i := range 5 {
				b := newBlock(t, 150<<10+i)
				many = append(many, b)
				want[b.CID] = b.Data
			}
			if err := s.PutMany(ctx, many); err != nil {
				t.Fatal(err)
			}
			active, tail := s.active, s.tail
			s.crash()
			os.RemoveAll(filepath.Join(dir, dirIndex))
			if err := os.CopyFS(filepath.Join(dir, dirIndex), os.DirFS(saved)); err != nil {
				t.Fatal(err)
			}
			// A torn tail: an entry whose Put was never acknowledged.
			extra := newBlock(t, 64<<10)
			entry := append(appendEntryHeader(nil, extra.CID, len(extra.Data)), extra.Data...)
			switch torn {
			case "header":
				entry = entry[:20]
			case "data":
				entry = entry[:len(entry)-100]
			case "bad-data":
				entry[len(entry)-1] ^= 1
			}
			if torn != "none" {
				f, err := os.OpenFile(s.packPath(active), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.Write(entry)
				f.Close()
			}
			s = newTestStore(t, dir, withPackSize(1<<20))
			wantBlocks(t, s, want)
			if fi, err := os.Stat(s.packPath(active)); err != nil || fi.Size() != tail {
				t.Fatalf("pack %d after recovery: %v, %v; want %d bytes", active, fi.Size(), err, tail)
			}
			if st, err := s.Stat(ctx); err != nil || st.Pins != 1 || st.PinnedBlocks != 1 {
				t.Fatalf("Stat = %+v, %v", st, err)
			}
			checkPacks(t, dir)
			// Recovered blocks count as put at the recovery: GC keeps them
			// for the grace period.
			if res, err := s.GC(ctx, time.Hour, nil); err != nil || res.Deleted != 0 {
				t.Fatalf("GC after recovery = %+v, %v", res, err)
			}
			// And the store goes on.
			put(300 << 10)
			s.Close()
			s = newTestStore(t, dir, withPackSize(1<<20))
			wantBlocks(t, s, want)
		})
	}
}

// TestDeletedStayDeleted: a block deleted from a pack does not come back
// with recovery, even when its index write and the checkpoint are the
// last things in the journal.
func TestDeletedStayDeleted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir)
	want := map[cid.Cid][]byte{}
	var bs []blocks.Block
	for range 6 {
		b := newBlock(t, 100<<10)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
		want[b.CID] = b.Data
	}
	for _, b := range bs[:3] {
		if err := s.Delete(ctx, b.CID); err != nil {
			t.Fatal(err)
		}
		delete(want, b.CID)
	}
	s.crash()
	s = newTestStore(t, dir)
	wantBlocks(t, s, want)
}

func TestPackRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir, withPackSize(1<<20))
	want := map[cid.Cid][]byte{}
	for i := range 20 {
		b := newBlock(t, 200<<10+i)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		want[b.CID] = b.Data
	}
	if n := checkPacks(t, dir); n < 4 {
		t.Fatalf("%d packs, want at least 4", n)
	}
	s.Close()
	s = newTestStore(t, dir, withPackSize(1<<20))
	wantBlocks(t, s, want)
}

// fillAndThin puts n blocks of size bytes to s and deletes all but every
// keep-th; it returns the remaining blocks.
func fillAndThin(t *testing.T, s *Store, n, size, keep int) map[cid.Cid][]byte {
	t.Helper()
	ctx := context.Background()
	want := map[cid.Cid][]byte{}
	for i := range n {
		b := newBlock(t, size+i)
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		if i%keep == 0 {
			want[b.CID] = b.Data
		} else if err := s.Delete(ctx, b.CID); err != nil {
			t.Fatal(err)
		}
	}
	return want
}

func packBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	ents, _ := os.ReadDir(filepath.Join(dir, dirPacks))
	for _, e := range ents {
		fi, err := e.Info()
		if err == nil {
			n += fi.Size()
		}
	}
	return n
}

func TestCompaction(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir, withPackSize(1<<20))
	want := fillAndThin(t, s, 40, 100<<10, 4)
	if err := s.Pin(ctx, "x", []cid.Cid{blocks.Sum([]byte("missing"))}); err != nil {
		t.Fatal(err)
	}
	before := packBytes(t, dir)
	// Grace: nothing is collected, but the dead entries are compacted.
	res, err := s.GC(ctx, time.Hour, nil)
	if err != nil || res.Deleted != 0 {
		t.Fatalf("GC = %+v, %v", res, err)
	}
	after := packBytes(t, dir)
	t.Logf("packs: %d bytes before GC, %d after", before, after)
	if after > before/2 {
		t.Fatalf("compaction left %d of %d pack bytes", after, before)
	}
	wantBlocks(t, s, want)
	checkPacks(t, dir)
	// Compacting again may take the pack that was active the first time,
	// and never grows the packs.
	if _, err := s.GC(ctx, time.Hour, nil); err != nil || packBytes(t, dir) > after {
		t.Fatalf("second GC: %v, %d bytes", err, packBytes(t, dir))
	}
	wantBlocks(t, s, want)
	s.Close()
	s = newTestStore(t, dir, withPackSize(1<<20))
	wantBlocks(t, s, want)
	if st, err := s.Stat(ctx); err != nil || st.Pins != 1 || st.PinnedBlocks != 1 {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	// GC with grace 0 deletes them all, and the packs go.
	s.Unpin(ctx, "x")
	if _, err := s.GC(ctx, 0, nil); err != nil {
		t.Fatal(err)
	}
	wantBlocks(t, s, map[cid.Cid][]byte{})
	if n := packBytes(t, dir); n > compactMinSeal {
		t.Fatalf("%d pack bytes left after collecting everything", n)
	}
}

var errCrash = errors.New("simulated crash")

// TestCompactionCrash stops compaction at each of its steps, as a crash
// would, and checks that every block reads back after a reopen, that no
// deleted block returns, that the counters are exact, and that the next
// GC finishes the work.
func TestCompactionCrash(t *testing.T) {
	for _, point := range []string{"append", "compact-appended", "compact-switched", "compact-removed"} {
		t.Run(point, func(t *testing.T) {
			ctx := context.Background()
			dir := t.TempDir()
			s := newTestStore(t, dir, withPackSize(1<<20))
			want := fillAndThin(t, s, 30, 100<<10, 3)
			before := packBytes(t, dir)
			s.testHook = func(p string) error {
				if p == point {
					return errCrash
				}
				return nil
			}
			if _, err := s.GC(ctx, time.Hour, nil); !errors.Is(err, errCrash) {
				t.Fatalf("GC = %v, want the simulated crash", err)
			}
			s.crash()
			s = newTestStore(t, dir, withPackSize(1<<20))
			wantBlocks(t, s, want)
			checkPacks(t, dir)
			if _, err := s.GC(ctx, time.Hour, nil); err != nil {
				t.Fatal(err)
			}
			wantBlocks(t, s, want)
			if after := packBytes(t, dir); after > before*2/3 {
				t.Fatalf("packs: %d bytes before, %d after the second GC", before, after)
			}
			s.Close()
			s = newTestStore(t, dir, withPackSize(1<<20))
			wantBlocks(t, s, want)
		})
	}
}

// TestFailedAppend: a failed append, or one of a block that does not
// verify, leaves the pack as it was.
func TestFailedAppend(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir)
	a := newBlock(t, 100<<10)
	if err := s.Put(ctx, a); err != nil {
		t.Fatal(err)
	}
	tail := s.tail
	s.testHook = func(p string) error {
		if p == "append" {
			return errCrash
		}
		return nil
	}
	b := newBlock(t, 100<<10)
	if err := s.PutMany(ctx, []blocks.Block{b, newBlock(t, 50<<10)}); !errors.Is(err, errCrash) {
		t.Fatalf("PutMany = %v", err)
	}
	if fi, err := os.Stat(s.packPath(s.active)); err != nil || fi.Size() != tail {
		t.Fatalf("pack after a failed append: %d bytes, %v; want %d", fi.Size(), err, tail)
	}
	s.testHook = nil
	// A block that does not match its CID is written and synced while it
	// is hashed, then truncated away.
	for _, c := range []cid.Cid{b.CID, a.CID} { // absent, present
		bad := blocks.Block{CID: c, Data: append([]byte{b.Data[0] ^ 1}, b.Data[1:]...)}
		if err := s.Put(ctx, bad); !errors.Is(err, blocks.ErrIntegrity) {
			t.Fatalf("Put of a wrong block = %v", err)
		}
		if err := s.PutMany(ctx, []blocks.Block{newBlock(t, 70<<10), bad}); !errors.Is(err, blocks.ErrIntegrity) {
			t.Fatalf("PutMany with a wrong block = %v", err)
		}
		if fi, err := os.Stat(s.packPath(s.active)); err != nil || fi.Size() != tail {
			t.Fatalf("pack after a wrong block: %d bytes, %v; want %d", fi.Size(), err, tail)
		}
	}
	if err := s.Put(ctx, b); err != nil {
		t.Fatal(err)
	}
	s.crash()
	s = newTestStore(t, dir)
	wantBlocks(t, s, map[cid.Cid][]byte{a.CID: a.Data, b.CID: b.Data})
}

// TestFormatV2 opens a store written by format version 2 (frozen under
// testdata/format-v2, described in testdata/format-v2.txt): every block,
// inline or file, reads back with its pins, the store is upgraded to
// version 3 in place, and then takes pack blocks, deletes and collects
// file blocks, and reopens.
func TestFormatV2(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/format-v2")); err != nil {
		t.Fatal(err)
	}
	list, err := os.ReadFile("testdata/format-v2.txt")
	if err != nil {
		t.Fatal(err)
	}
	var all []blocks.Block
	for _, l := range strings.Split(string(list), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || strings.HasPrefix(l, "#") {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		r := rand.New(rand.NewPCG(uint64(len(all)), 2))
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		b, _ := blocks.NewBlock(data)
		if b.CID.String() != f[0] {
			t.Fatalf("block %d: CID %s, list says %s", len(all), b.CID, f[0])
		}
		all = append(all, b)
	}
	if len(all) != 9 {
		t.Fatalf("%d blocks in the list", len(all))
	}
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := newTestStore(t, dir, WithClock(clock))
	want := map[cid.Cid][]byte{}
	for _, b := range all[:7] {
		want[b.CID] = b.Data
	}
	wantBlocks(t, s, want)
	for _, b := range all[7:] {
		if _, err := s.Get(ctx, b.CID); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("deleted block %s: %v", b.CID, err)
		}
	}
	if st, err := s.Stat(ctx); err != nil || st != (blocks.Stat{Blocks: 7, Bytes: 152020, Pins: 2, PinnedBlocks: 4}) {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	if v, _ := s.db.Get(keyVersion, nil); len(v) != 1 || v[0] != formatVersion {
		t.Fatalf("version after upgrade = %x", v)
	}
	for name, idx := range map[string][]int{"keep": {1, 5, 6}, "other": {6, 8}} {
		got := map[cid.Cid]bool{}
		for c, err := range s.Pinned(ctx, name) {
			if err != nil {
				t.Fatal(err)
			}
			got[c] = true
		}
		if len(got) != len(idx) {
			t.Fatalf("pin %q: %d CIDs, want %d", name, len(got), len(idx))
		}
		for _, i := range idx {
			if !got[all[i].CID] {
				t.Fatalf("pin %q lacks block %d", name, i)
			}
		}
	}
	// New large blocks go to packs; file blocks stay files until deleted.
	nb := newBlock(t, 100<<10)
	if err := s.Put(ctx, nb); err != nil {
		t.Fatal(err)
	}
	packRecord(t, s, nb.CID)
	want[nb.CID] = nb.Data
	// GC (all written in 2030: older than the grace) takes the unpinned
	// blocks 0, 2, 3 (inline) and 4 (a file), not the new one.
	res, err := s.GC(ctx, time.Hour, nil)
	if err != nil || res.Deleted != 4 {
		t.Fatalf("GC = %+v, %v; want 4 deleted", res, err)
	}
	for _, i := range []int{0, 2, 3, 4} {
		delete(want, all[i].CID)
	}
	wantBlocks(t, s, want)
	assertFiles(t, s, all[5].CID, all[6].CID)
	if err := s.Delete(ctx, all[5].CID); err != nil {
		t.Fatal(err)
	}
	delete(want, all[5].CID)
	assertFiles(t, s, all[6].CID)
	s.Close()
	s = newTestStore(t, dir, WithClock(clock))
	wantBlocks(t, s, want)
}

// TestCheckpoints: the active pack's durable checkpoint advances as it
// grows (and at rotation and Close), and tombstones of the deleted entries
// below it go; entries deleted past it keep theirs until then.
func TestCheckpoints(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir, withPackSize(4<<20))
	s.ckEvery = 1 << 20
	tombs := func() int {
		n := 0
		it := s.db.NewIterator(util.BytesPrefix(prefixTomb), nil)
		for it.Next() {
			n++
		}
		it.Release()
		return n
	}
	want := map[cid.Cid][]byte{}
	a, b := newBlock(t, 100<<10), newBlock(t, 100<<10)
	for _, x := range []blocks.Block{a, b} {
		if err := s.Put(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, a.CID); err != nil {
		t.Fatal(err)
	}
	want[b.CID] = b.Data
	if n := tombs(); n != 1 || s.durable[s.active] != 0 {
		t.Fatalf("%d tombstones, checkpoint %d; want 1, 0", n, s.durable[s.active])
	}
	for range 12 {
		x := newBlock(t, 100<<10)
		if err := s.Put(ctx, x); err != nil {
			t.Fatal(err)
		}
		want[x.CID] = x.Data
	}
	cp, err := s.readCheckpoint(s.active)
	if err != nil || cp < 1<<20 || cp != s.durable[s.active] || tombs() != 0 {
		t.Fatalf("checkpoint %d (%d in memory), %v, %d tombstones", cp, s.durable[s.active], err, tombs())
	}
	s.crash()
	s = newTestStore(t, dir, withPackSize(4<<20))
	wantBlocks(t, s, want)
	s.Close()
	s = newTestStore(t, dir, withPackSize(4<<20))
	if cp, _ := s.readCheckpoint(s.active); cp != s.tail {
		t.Fatalf("checkpoint %d after Close and Open, pack end %d", cp, s.tail)
	}
	wantBlocks(t, s, want)
}
