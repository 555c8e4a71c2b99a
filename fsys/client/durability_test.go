package client_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/internal/nettest"
)

// countingHost counts how a client commits and syncs.
type countingHost struct {
	proxy
	commits, noSyncs, syncs atomic.Int64
	syncedTo                atomic.Uint64
}

func (h *countingHost) Commit(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	h.commits.Add(1)
	return h.proxy.Commit(ctx, tx)
}

func (h *countingHost) CommitNoSync(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	h.noSyncs.Add(1)
	return h.proxy.CommitNoSync(ctx, tx)
}

func (h *countingHost) Sync(ctx context.Context, v uint64) error {
	h.syncs.Add(1)
	h.syncedTo.Store(v)
	return h.proxy.Sync(ctx, v)
}

// plainHost hides the Syncer of the host: a host that predates it.
type plainHost struct{ fsys.Host }

// TestWriteBackDurability: against a Syncer, namespace operations and
// close-time data commits do not wait for durability, another node sees
// them at once, and Fsync (of the file or of a directory) syncs up to
// the client's latest version; against a plain Host every commit is
// durable and Fsync syncs nothing.
func TestWriteBackDurability(t *testing.T) {
	ctx := ctxT(t)
	tv := newTestVolume(t, true)
	ch := &countingHost{proxy: proxy{tv}}
	tv.h = ch
	n := tv.newNode(t, "laptop", true)
	other := tv.newNode(t, "phone", true)
	if err := n.c.InitVolume(ctx, tv.h, 0o755); err != nil {
		t.Fatal(err)
	}
	root := must(n.c.Walk(ctx, tv.vol))
	must(n.c.Grant(ctx, tv.vol, other.id, fsys.RightRead, time.Time{}))
	if ch.commits.Load() != 2 || ch.noSyncs.Load() != 0 {
		t.Fatalf("init, grant: %d commits, %d unsynced; want both durable", ch.commits.Load(), ch.noSyncs.Load())
	}
	d := must(n.c.Mkdir(ctx, root.Ino, "d", 0o755))
	f := must(n.c.Create(ctx, d.Ino, "f", 0o644, true))
	if ch.commits.Load() != 2 || ch.noSyncs.Load() != 2 || ch.syncs.Load() != 0 {
		t.Fatalf("namespace ops: %d commits, %d unsynced, %d syncs", ch.commits.Load(), ch.noSyncs.Load(), ch.syncs.Load())
	}
	// Visible to another node at once, unsynced.
	od := must(other.c.Walk(ctx, join(t, tv.vol, "d")))
	if of := must(other.c.Lookup(ctx, od.Ino, "f")); of.Ino != f.Ino {
		t.Fatalf("other node sees %016x, want %016x", uint64(of.Ino), uint64(f.Ino))
	}
	// Flush (close) commits in the background, unsynced.
	must(n.c.WriteAt(ctx, f.Ino, []byte("hello"), 0))
	if err := n.c.Flush(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	// Fsync of a directory syncs the client's versions.
	if err := n.c.Fsync(ctx, d.Ino); err != nil {
		t.Fatal(err)
	}
	if ch.syncs.Load() == 0 && ch.commits.Load() < 3 {
		t.Fatal("directory fsync synced nothing")
	}
	// Fsync of a file with pending data: one durable commit.
	must(n.c.WriteAt(ctx, f.Ino, []byte("world"), 5))
	before, syncsBefore := ch.commits.Load(), ch.syncs.Load()
	if err := n.c.Fsync(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	// The durable commit, or (when the background commit of the Flush
	// took the write along) a Sync.
	if ch.commits.Load() != before+1 && ch.syncs.Load() == syncsBefore {
		t.Fatalf("fsync: %d durable commits and no sync", ch.commits.Load()-before)
	}
	// Nothing new: fsync again syncs nothing.
	s := ch.syncs.Load()
	if err := n.c.Fsync(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if ch.syncs.Load() != s {
		t.Fatal("fsync with nothing new asked the host to sync")
	}
	// The other node sees it once the host's change stream reaches it.
	buf := make([]byte, 10)
	nettest.WaitFor(t, 10*time.Second, "the other node to read the synced file", func() bool {
		k, err := other.c.ReadAt(ctx, f.Ino, buf, 0)
		return err == nil && string(buf[:k]) == "helloworld"
	})

	// A host that is not a Syncer: every commit durable, Fsync has no
	// Sync to call.
	tv2 := newTestVolume(t, true)
	tv2.h = plainHost{proxy{tv2}}
	m := tv2.newNode(t, "laptop", true)
	if err := m.c.InitVolume(ctx, tv2.h, 0o755); err != nil {
		t.Fatal(err)
	}
	r2 := must(m.c.Walk(ctx, tv2.vol))
	g := must(m.c.Create(ctx, r2.Ino, "g", 0o644, true))
	must(m.c.WriteAt(ctx, g.Ino, []byte("x"), 0))
	if err := m.c.Fsync(ctx, g.Ino); err != nil {
		t.Fatal(err)
	}
	if err := m.c.Fsync(ctx, r2.Ino); err != nil {
		t.Fatal(err)
	}
}

// TestCommitFile: CommitFile commits a file's pending writes without
// waiting for durability (no durable commit, no Sync), waits for a commit
// that Flush started, and does nothing when nothing is pending; another
// node reads the data at once.
func TestCommitFile(t *testing.T) {
	ctx := ctxT(t)
	tv := newTestVolume(t, true)
	ch := &countingHost{proxy: proxy{tv}}
	tv.h = ch
	n := tv.newNode(t, "laptop", true)
	other := tv.newNode(t, "phone", true)
	if err := n.c.InitVolume(ctx, tv.h, 0o755); err != nil {
		t.Fatal(err)
	}
	root := must(n.c.Walk(ctx, tv.vol))
	must(n.c.Grant(ctx, tv.vol, other.id, fsys.RightRead, time.Time{}))
	f := must(n.c.Create(ctx, root.Ino, "f", 0o644, true))
	must(n.c.WriteAt(ctx, f.Ino, []byte("hello"), 0))
	if err := n.c.Flush(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	must(n.c.WriteAt(ctx, f.Ino, []byte("world"), 5))
	durable, syncs := ch.commits.Load(), ch.syncs.Load()
	if err := n.c.CommitFile(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if ch.commits.Load() != durable || ch.syncs.Load() != syncs {
		t.Fatalf("CommitFile: %d durable commits, %d syncs; want none", ch.commits.Load()-durable, ch.syncs.Load()-syncs)
	}
	unsynced := ch.noSyncs.Load()
	if err := n.c.CommitFile(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	if ch.noSyncs.Load() != unsynced {
		t.Fatal("CommitFile with nothing pending committed")
	}
	if of := must(other.c.Walk(ctx, join(t, tv.vol, "f"))); of.Ino != f.Ino || of.Size != 10 {
		t.Fatalf("other node sees %016x of %d bytes, want %016x of 10", uint64(of.Ino), of.Size, uint64(f.Ino))
	}
	buf := make([]byte, 10)
	nettest.WaitFor(t, 10*time.Second, "the other node to read the committed file", func() bool {
		k, err := other.c.ReadAt(ctx, f.Ino, buf, 0)
		return err == nil && string(buf[:k]) == "helloworld"
	})
	if err := n.c.CommitFile(ctx, fsys.Ino(12345)); !errors.Is(err, fsys.ErrNotExist) {
		t.Fatalf("CommitFile of an unknown inode: %v, want ErrNotExist", err)
	}
}
