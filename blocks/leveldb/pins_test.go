package leveldb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// TestFormatV1 opens a store written by format version 1 (frozen under
// testdata/format-v1, described in testdata/format-v1.txt): every block
// reads back, the store is upgraded in place, its blocks count as put at
// the upgrade, and it then works as a version-2 store.
func TestFormatV1(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/format-v1")); err != nil {
		t.Fatal(err)
	}
	list, err := os.ReadFile("testdata/format-v1.txt")
	if err != nil {
		t.Fatal(err)
	}
	var want []blocks.Block
	for _, l := range strings.Split(string(list), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || strings.HasPrefix(l, "#") {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		r := rand.New(rand.NewPCG(uint64(len(want)), 1))
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		b, _ := blocks.NewBlock(data)
		if b.CID.String() != f[0] {
			t.Fatalf("block %d: CID %s, list says %s", len(want), b.CID, f[0])
		}
		want = append(want, b)
	}
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := newTestStore(t, dir, WithClock(clock))
	for _, b := range want {
		got, err := s.Get(ctx, b.CID)
		if err != nil || string(got) != string(b.Data) {
			t.Fatalf("Get %s from a version-1 store: %d bytes, %v", b.CID, len(got), err)
		}
	}
	if st, err := s.Stat(ctx); err != nil || st != (blocks.Stat{Blocks: 5, Bytes: 65636}) {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	if v, _ := s.db.Get(keyVersion, nil); len(v) != 1 || v[0] != formatVersion {
		t.Fatalf("version after upgrade = %x", v)
	}
	if err := s.Pin(ctx, "keep", []cid.Cid{want[0].CID, want[4].CID}); err != nil {
		t.Fatal(err)
	}
	if res, err := s.GC(ctx, time.Hour, nil); err != nil || res.Deleted != 0 || res.Kept != 3 {
		t.Fatalf("GC right after the upgrade = %+v, %v; want 3 kept", res, err)
	}
	s.Close()
	now = now.Add(2 * time.Hour)
	s = newTestStore(t, dir, WithClock(clock)) // reopens as version 2
	if res, err := s.GC(ctx, time.Hour, nil); err != nil || res.Deleted != 3 {
		t.Fatalf("GC after the grace = %+v, %v; want 3 deleted", res, err)
	}
	for i, b := range want {
		_, err := s.Get(ctx, b.CID)
		if (i == 0 || i == 4) != (err == nil) {
			t.Fatalf("block %d after GC: %v", i, err)
		}
	}
	if st, err := s.Stat(ctx); err != nil || st != (blocks.Stat{Blocks: 2, Bytes: 40960, Pins: 1, PinnedBlocks: 2}) {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	assertFiles(t, s, want[4].CID)
}

// assertFiles checks that the block files are exactly those of cids.
func assertFiles(t *testing.T, s *Store, cids ...cid.Cid) {
	t.Helper()
	want := map[string]bool{}
	for _, c := range cids {
		want[s.blobPath(c)] = true
	}
	n := 0
	filepath.WalkDir(filepath.Join(s.dir, dirBlobs), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
			if !want[p] {
				t.Errorf("unexpected block file %s", p)
			}
		}
		return nil
	})
	if n != len(want) {
		t.Errorf("%d block files, want %d", n, len(want))
	}
}

// TestPinsDurable: pins, reference counts and counters survive a reopen,
// and GC removes the files of the large blocks it deletes.
func TestPinsDurable(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Unix(1_900_000_000, 0)
	clock := func() time.Time { return now }
	s := newTestStore(t, dir, WithClock(clock))
	var bs []blocks.Block
	for i := range 6 {
		b := newBlock(t, []int{100, 40 << 10}[i%2])
		if err := s.Put(ctx, b); err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	if err := s.Pin(ctx, "a", []cid.Cid{bs[0].CID, bs[1].CID}); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, "b", []cid.Cid{bs[1].CID, bs[3].CID}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	now = now.Add(time.Hour)
	s = newTestStore(t, dir, WithClock(clock))
	if st, err := s.Stat(ctx); err != nil || st.Pins != 2 || st.PinnedBlocks != 3 || st.Blocks != 6 {
		t.Fatalf("Stat after reopen = %+v, %v", st, err)
	}
	res, err := s.GC(ctx, time.Minute, nil)
	if err != nil || res.Deleted != 3 || res.Freed != 200+40<<10 {
		t.Fatalf("GC = %+v, %v", res, err)
	}
	assertFiles(t, s) // large blocks are in packs
	if _, err := s.Get(ctx, bs[5].CID); !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Get of a collected block = %v", err)
	}
	if n, by, _ := s.Size(ctx); n != 3 || by != 100+2*(40<<10) {
		t.Fatalf("Size = %d, %d", n, by)
	}
}

// TestPinLarge: a pin of 100,000 CIDs is one batch larger than goleveldb's
// write buffer (so goleveldb commits it as a transaction); replacing half
// of it and unpinning it keep the reference counts exact, across a reopen.
func TestPinLarge(t *testing.T) {
	if testing.Short() {
		t.Skip("large pin")
	}
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStore(t, dir)
	const n = 100_000
	cids := make([]cid.Cid, n)
	for i := range cids {
		cids[i] = blocks.Sum([]byte(fmt.Sprint(i)))
	}
	start := time.Now()
	if err := s.Pin(ctx, "big", cids); err != nil {
		t.Fatal(err)
	}
	t.Logf("pin of %d CIDs: %v", n, time.Since(start))
	if err := s.Pin(ctx, "small", cids[:10]); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := s.Pin(ctx, "big", cids[n/2:]); err != nil {
		t.Fatal(err)
	}
	t.Logf("replace of %d of them: %v", n/2, time.Since(start))
	s.Close()
	s = newTestStore(t, dir)
	if st, err := s.Stat(ctx); err != nil || st.Pins != 2 || st.PinnedBlocks != n/2+10 {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	for _, i := range []int{0, 9, 10, n/2 - 1, n / 2, n - 1} {
		want := i < 10 || i >= n/2
		if ok, err := s.IsPinned(ctx, cids[i]); err != nil || ok != want {
			t.Fatalf("IsPinned %d = %v, %v", i, ok, err)
		}
	}
	count := 0
	for _, err := range s.Pinned(ctx, "big") {
		if err != nil {
			t.Fatal(err)
		}
		count++
	}
	if count != n/2 {
		t.Fatalf("Pinned big = %d CIDs", count)
	}
	if err := s.Unpin(ctx, "big"); err != nil {
		t.Fatal(err)
	}
	if st, err := s.Stat(ctx); err != nil || st.Pins != 1 || st.PinnedBlocks != 10 {
		t.Fatalf("Stat after Unpin = %+v, %v", st, err)
	}
}
