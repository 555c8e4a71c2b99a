package leveldb

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
)

// mountTmpfs mounts a tmpfs of the given size (e.g. "2m") in a temporary
// directory, or skips (fails under BT_REQUIRE_REAL=1) when it cannot.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		msg := "cannot mount tmpfs: " + err.Error() + ": " + string(out)
		if os.Getenv("BT_REQUIRE_REAL") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

func TestNoSpace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		headroom uint64 // 0: the OS's ENOSPC, not the free-space check
		small    int    // every small-th block is 1 KiB (inline), others 100 KiB (packs)
		many     int    // blocks per PutMany; 0: Put
	}{
		{"guard-mixed", indexHeadroom, 2, 0},
		{"guard-inline", indexHeadroom, 1, 0},
		{"guard-packs-many", indexHeadroom, 1 << 30, 4},
		{"os-packs", 0, 1 << 30, 0},
		{"os-packs-many", 0, 1 << 30, 4},
		{"os-mixed", 0, 2, 0},
		{"os-mixed-many", 0, 2, 3},
		{"os-inline", 0, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) { testNoSpace(t, tc.headroom, tc.small, tc.many) })
	}
}

func testNoSpace(t *testing.T, headroom uint64, small, many int) {
	ctx := context.Background()
	mnt := mountTmpfs(t, "16m")
	dir := filepath.Join(mnt, "store")
	// On the OS's ENOSPC path the disk is filled by someone else too: a
	// file beside the store, removed when space is freed below. (Deleting
	// inline blocks alone gives space back only when goleveldb compacts,
	// and a compaction needs room to write its new tables first.)
	filler := filepath.Join(mnt, "someone-else")
	if headroom == 0 {
		if err := os.WriteFile(filler, make([]byte, 6<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := newTestStore(t, dir)
	s.headroom = headroom
	var acked []blocks.Block
	full := false
	for i := 0; i < 20000 && !full; i++ {
		n := 100 << 10
		if i%small == 0 {
			n = 1 << 10
		}
		b := newBlock(t, n)
		bs := []blocks.Block{b}
		var err error
		if many > 0 {
			for range many - 1 {
				bs = append(bs, newBlock(t, n))
			}
			err = s.PutMany(ctx, bs)
		} else {
			err = s.Put(ctx, b)
		}
		switch {
		case err == nil:
			acked = append(acked, bs...)
		case errors.Is(err, blocks.ErrNoSpace):
			t.Logf("full after %d blocks: %v", len(acked), err)
			full = true
		default:
			t.Fatalf("Put %d: %v", i, err)
		}
	}
	if !full {
		t.Fatal("never ran out of space")
	}
	// A failed append was truncated away: the packs are whole entries.
	checkPacks(t, dir)
	if s.activeFile != nil && !s.sealed {
		if fi, err := os.Stat(s.packPath(s.active)); err != nil || fi.Size() != s.tail {
			t.Fatalf("active pack: %d bytes, %v; the store thinks %d", fi.Size(), err, s.tail)
		}
	}
	check := func() {
		t.Helper()
		for _, b := range acked {
			got, err := s.Get(ctx, b.CID)
			if err != nil || string(got) != string(b.Data) {
				t.Fatalf("acknowledged %s: %v", b.CID, err)
			}
		}
	}
	check()
	// Free space: delete half of the blocks (and the other file).
	if headroom == 0 {
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
	var kept []blocks.Block
	for i, b := range acked {
		if i < len(acked)/2 {
			if err := s.Delete(ctx, b.CID); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			continue
		}
		kept = append(kept, b)
	}
	acked = kept
	b := newBlock(t, 100<<10)
	if err := s.Put(ctx, b); err != nil {
		t.Fatalf("Put after freeing space: %v", err)
	}
	acked = append(acked, b)
	sb := newBlock(t, 1<<10)
	if err := s.Put(ctx, sb); err != nil {
		t.Fatalf("small Put after freeing space: %v", err)
	}
	acked = append(acked, sb)
	check()
	// And after reopening.
	check()
	// GC (everything pinned) compacts the packs, or finds no room to.
	var keep []cid.Cid
	for _, b := range acked {
		keep = append(keep, b.CID)
	}
	switch err := s.Pin(ctx, "keep", keep); {
	case errors.Is(err, blocks.ErrNoSpace) && headroom == 0:
		// The OS's ENOSPC: the index may have no room for a pin of
		// thousands of CIDs; that Pin fails cleanly, and GC is skipped.
		t.Logf("Pin on a full disk: %v", err)
	case err != nil:
		t.Fatalf("Pin: %v", err)
	default:
		if res, err := s.GC(ctx, 0, nil); err != nil || res.Deleted != 0 {
			t.Fatalf("GC = %+v, %v", res, err)
		}
	}
	check()
	s.Close()
	s = newTestStore(t, dir)
	s.headroom = headroom
	checkPacks(t, dir)
	if n, _, err := s.Size(ctx); err != nil || n != int64(len(acked)) {
		t.Fatalf("Size = %d, %v; want %d", n, err, len(acked))
	}
}
