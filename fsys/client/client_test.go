package client_test

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	"blocktree.dev/bt/fsys"
)

func TestBasicCreateWriteRead(t *testing.T) {
	for _, durable := range []bool{false, true} {
		name := "memstore"
		if durable {
			name = "leveldb"
		}
		t.Run(name, func(t *testing.T) {
			tv, n, root := setup(t, durable)
			ctx := ctxT(t)
			if root.Kind != fsys.KindDir || root.Mode != 0o755 {
				t.Fatalf("root = %+v", root)
			}
			a := must(n.c.Create(ctx, root.Ino, "hello.txt", 0o644, true))
			data := make([]byte, 3*fsys.ChunkSize+1234)
			rand.Read(data)
			if _, err := n.c.WriteAt(ctx, a.Ino, data, 0); err != nil {
				t.Fatal(err)
			}
			if err := n.c.Fsync(ctx, a.Ino); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(data)+10)
			k := must(n.c.ReadAt(ctx, a.Ino, got, 0))
			if k != len(data) || !bytes.Equal(got[:k], data) {
				t.Fatalf("read %d bytes, mismatch", k)
			}
			// A second client reads it through the host.
			m := tv.newNode(t, "desk", true)
			if _, err := n.c.Grant(ctx, tv.vol, m.id, fsys.RightRead, time.Time{}); err != nil {
				t.Fatal(err)
			}
			b := must(m.c.Walk(ctx, join(t, tv.vol, "hello.txt")))
			if b.Size != uint64(len(data)) {
				t.Fatalf("size %d", b.Size)
			}
			got2 := make([]byte, len(data))
			k = must(m.c.ReadAt(ctx, b.Ino, got2, 0))
			if k != len(data) || !bytes.Equal(got2, data) {
				t.Fatalf("second client read %d bytes, mismatch", k)
			}
		})
	}
}
