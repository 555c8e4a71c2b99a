package client_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"blocktree.dev/bt/fsys"
)

// TestFlush: close as Flush commits in the background; Fsync waits for it
// and commits the rest; another client then reads everything.
func TestFlush(t *testing.T) {
	tv, n, root := setup(t, true)
	ctx := ctxT(t)
	const N = 20
	for i := range N {
		a := must(n.c.Create(ctx, root.Ino, fmt.Sprintf("f%d", i), 0o644, true))
		must(n.c.WriteAt(ctx, a.Ino, []byte(fmt.Sprintf("file %d", i)), 0))
		must(0, n.c.Flush(ctx, a.Ino))
		if i%2 == 0 { // written again after the flush
			must(n.c.WriteAt(ctx, a.Ino, []byte("!"), int64(len(fmt.Sprintf("file %d", i)))))
		}
	}
	for i := range N {
		a := must(n.c.Lookup(ctx, root.Ino, fmt.Sprintf("f%d", i)))
		must(0, n.c.Fsync(ctx, a.Ino))
	}
	m := tv.newNode(t, "desk", true)
	must(n.c.Grant(ctx, tv.vol, m.id, fsys.RightRead, time.Time{}))
	for i := range N {
		want := []byte(fmt.Sprintf("file %d", i))
		if i%2 == 0 {
			want = append(want, '!')
		}
		a := must(m.c.Walk(ctx, join(t, tv.vol, fmt.Sprintf("f%d", i))))
		if got := readAll(t, m.c, a.Ino, 64); !bytes.Equal(got, want) {
			t.Fatalf("f%d: %q, want %q", i, got, want)
		}
	}
}
