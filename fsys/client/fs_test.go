package client_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/client"
	"blocktree.dev/bt/internal/nettest"
)

func names(ents []fsys.DirEntry) string {
	var s []string
	for _, e := range ents {
		s = append(s, e.Name)
	}
	return strings.Join(s, ",")
}

func TestNamespace(t *testing.T) {
	tv, n, root := setup(t, false)
	ctx := ctxT(t)
	c := n.c
	d := must(c.Mkdir(ctx, root.Ino, "dir", 0o750))
	if d.Kind != fsys.KindDir || d.Nlink != 2 || d.Mode != 0o750 || d.Owner != n.id {
		t.Fatalf("mkdir = %+v", d)
	}
	if r := must(c.Getattr(ctx, root.Ino)); r.Nlink != 3 || r.Size != 1 {
		t.Fatalf("root after mkdir = %+v", r)
	}
	_, err := c.Mkdir(ctx, root.Ino, "dir", 0o750)
	wantErr(t, err, fsys.ErrExist)
	f := must(c.Create(ctx, d.Ino, "f", 0o600, true))
	_, err = c.Create(ctx, d.Ino, "f", 0o600, true)
	wantErr(t, err, fsys.ErrExist)
	if g := must(c.Create(ctx, d.Ino, "f", 0o600, false)); g.Ino != f.Ino {
		t.Fatalf("O_CREAT without O_EXCL gave a new inode")
	}
	_, err = c.Create(ctx, root.Ino, "dir", 0o600, false)
	wantErr(t, err, fsys.ErrIsDir)
	s := must(c.Symlink(ctx, d.Ino, "ln", "../some/target"))
	if s.Kind != fsys.KindSymlink || s.Size != uint64(len("../some/target")) {
		t.Fatalf("symlink = %+v", s)
	}
	if tgt := must(c.Readlink(ctx, s.Ino)); tgt != "../some/target" {
		t.Fatalf("readlink = %q", tgt)
	}
	_, err = c.Readlink(ctx, f.Ino)
	wantErr(t, err, fsys.ErrInvalid)
	if got := names(must(c.Readdir(ctx, d.Ino))); got != "f,ln" {
		t.Fatalf("readdir = %s", got)
	}
	if a := must(c.Lookup(ctx, d.Ino, "f")); a.Ino != f.Ino {
		t.Fatalf("lookup = %+v", a)
	}
	_, err = c.Lookup(ctx, d.Ino, "nope")
	wantErr(t, err, fsys.ErrNotExist)
	_, err = c.Lookup(ctx, f.Ino, "x")
	wantErr(t, err, fsys.ErrNotDir)
	_, err = c.Create(ctx, d.Ino, strings.Repeat("x", 256), 0o600, true)
	wantErr(t, err, fsys.ErrNameTooLong)
	for _, bad := range []string{"", ".", "..", "a/b", "a\x00b"} {
		_, err = c.Create(ctx, d.Ino, bad, 0o600, true)
		wantErr(t, err, fsys.ErrInvalid)
	}
	// rmdir: non-empty, not a dir; unlink: a dir.
	wantErr(t, c.Rmdir(ctx, root.Ino, "dir"), fsys.ErrNotEmpty)
	wantErr(t, c.Rmdir(ctx, d.Ino, "f"), fsys.ErrNotDir)
	wantErr(t, c.Unlink(ctx, root.Ino, "dir"), fsys.ErrIsDir)
	wantErr(t, c.Unlink(ctx, d.Ino, "nope"), fsys.ErrNotExist)

	// Setattr.
	mode := uint32(0o640)
	mt := time.Unix(1700000000, 5)
	a := must(c.Setattr(ctx, f.Ino, fsys.SetAttr{Mode: &mode, Mtime: &mt}))
	if a.Mode != 0o640 || !a.Mtime.Equal(mt) {
		t.Fatalf("setattr = %+v", a)
	}
	a = must(c.Setattr(ctx, d.Ino, fsys.SetAttr{Mode: &mode}))
	if a.Mode != 0o640 {
		t.Fatalf("setattr dir = %+v", a)
	}
	sz := uint64(10)
	_, err = c.Setattr(ctx, d.Ino, fsys.SetAttr{Size: &sz})
	wantErr(t, err, fsys.ErrIsDir)

	// Rename: replace, noreplace, exchange, into own subtree.
	g := must(c.Create(ctx, d.Ino, "g", 0o600, true))
	wantErr(t, c.Rename(ctx, d.Ino, "f", d.Ino, "g", fsys.RenameNoReplace), fsys.ErrExist)
	if err := c.Rename(ctx, d.Ino, "f", d.Ino, "g", fsys.RenameExchange); err != nil {
		t.Fatal(err)
	}
	if a := must(c.Lookup(ctx, d.Ino, "g")); a.Ino != f.Ino {
		t.Fatal("exchange did not swap")
	}
	if a := must(c.Lookup(ctx, d.Ino, "f")); a.Ino != g.Ino {
		t.Fatal("exchange did not swap")
	}
	if err := c.Rename(ctx, d.Ino, "f", d.Ino, "g", 0); err != nil { // replace
		t.Fatal(err)
	}
	if a := must(c.Lookup(ctx, d.Ino, "g")); a.Ino != g.Ino {
		t.Fatal("replace")
	}
	if got := names(must(c.Readdir(ctx, d.Ino))); got != "g,ln" {
		t.Fatalf("after replace: %s", got)
	}
	wantErr(t, c.Rename(ctx, d.Ino, "nope", d.Ino, "x", 0), fsys.ErrNotExist)
	wantErr(t, c.Rename(ctx, d.Ino, "g", d.Ino, "x", fsys.RenameExchange), fsys.ErrNotExist)
	sub := must(c.Mkdir(ctx, d.Ino, "sub", 0o755))
	wantErr(t, c.Rename(ctx, root.Ino, "dir", sub.Ino, "loop", 0), fsys.ErrInvalid)
	// Across directories, with nlink.
	if err := c.Rename(ctx, d.Ino, "sub", root.Ino, "sub2", 0); err != nil {
		t.Fatal(err)
	}
	if r := must(c.Getattr(ctx, root.Ino)); r.Nlink != 4 || r.Size != 2 {
		t.Fatalf("root after move = %+v", r)
	}
	if dd := must(c.Getattr(ctx, d.Ino)); dd.Nlink != 2 || dd.Size != 2 {
		t.Fatalf("dir after move = %+v", dd)
	}
	// rename dir onto a non-empty dir, and onto a file.
	must(c.Create(ctx, sub.Ino, "x", 0o600, true))
	e := must(c.Mkdir(ctx, root.Ino, "empty", 0o755))
	wantErr(t, c.Rename(ctx, root.Ino, "empty", root.Ino, "sub2", 0), fsys.ErrNotEmpty)
	wantErr(t, c.Rename(ctx, root.Ino, "empty", d.Ino, "g", 0), fsys.ErrNotDir)
	wantErr(t, c.Rename(ctx, d.Ino, "g", root.Ino, "empty", 0), fsys.ErrIsDir)
	if err := c.Rename(ctx, root.Ino, "sub2", root.Ino, "empty", 0); err != nil { // onto an empty dir
		t.Fatal(err)
	}
	if a := must(c.Lookup(ctx, root.Ino, "empty")); a.Ino != sub.Ino {
		t.Fatal("dir replace")
	}
	_ = e
	// Cleanup works.
	if err := c.Unlink(ctx, sub.Ino, "x"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rmdir(ctx, root.Ino, "empty"); err != nil {
		t.Fatal(err)
	}
	if got := names(must(c.Readdir(ctx, root.Ino))); got != "dir" {
		t.Fatalf("root: %s", got)
	}
	// Walk.
	if a := must(c.Walk(ctx, join(t, tv.vol, "dir", "g"))); a.Ino != g.Ino {
		t.Fatal("walk")
	}
}

// model is a file's expected content.
type model []byte

func (m *model) writeAt(p []byte, off int) {
	if end := off + len(p); end > len(*m) {
		*m = append(*m, make([]byte, end-len(*m))...)
	}
	copy((*m)[off:], p)
}

func readAll(t testing.TB, c *client.Client, ino fsys.Ino, size int) []byte {
	t.Helper()
	buf := make([]byte, size+100)
	k := must(c.ReadAt(context.Background(), ino, buf, 0))
	return buf[:k]
}

func TestRandomAccessWrites(t *testing.T) {
	tv, n, root := setup(t, true)
	ctx := ctxT(t)
	f := must(n.c.Create(ctx, root.Ino, "rand", 0o644, true))
	var m model
	r := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 60; i++ {
		off := r.IntN(6 * fsys.ChunkSize)
		p := make([]byte, 1+r.IntN(fsys.ChunkSize+100))
		rand.Read(p)
		must(n.c.WriteAt(ctx, f.Ino, p, int64(off)))
		m.writeAt(p, off)
		if i%7 == 3 {
			if err := n.c.Fsync(ctx, f.Ino); err != nil {
				t.Fatal(err)
			}
		}
		if i%13 == 5 { // truncate down and up
			sz := uint64(r.IntN(len(m) + 1))
			must(n.c.Setattr(ctx, f.Ino, fsys.SetAttr{Size: &sz}))
			m = m[:sz]
			if i%2 == 0 {
				sz2 := sz + uint64(r.IntN(fsys.ChunkSize))
				must(n.c.Setattr(ctx, f.Ino, fsys.SetAttr{Size: &sz2}))
				m = append(m, make([]byte, sz2-sz)...)
			}
		}
		if got := readAll(t, n.c, f.Ino, len(m)); !bytes.Equal(got, m) {
			t.Fatalf("step %d: content differs (len %d vs %d)", i, len(got), len(m))
		}
	}
	if err := n.c.Fsync(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	// Another client sees the committed file.
	o := tv.newNode(t, "other", true)
	must(n.c.Grant(ctx, tv.vol, o.id, fsys.RightRead, time.Time{}))
	a := must(o.c.Walk(ctx, join(t, tv.vol, "rand")))
	if a.Size != uint64(len(m)) {
		t.Fatalf("size %d, want %d", a.Size, len(m))
	}
	if got := readAll(t, o.c, a.Ino, len(m)); !bytes.Equal(got, m) {
		t.Fatal("other client reads different content")
	}
	// A small random write reseals one chunk only: one new block.
	before := must(tv.hostStore.Stat(ctx)).Blocks
	must(o.c.WriteAt(ctx, a.Ino, []byte("patch"), 3*fsys.ChunkSize+17))
	if err := o.c.Fsync(ctx, a.Ino); err != nil {
		t.Fatal(err)
	}
	if after := must(tv.hostStore.Stat(ctx)).Blocks; after != before+1 {
		t.Fatalf("random write added %d blocks, want 1", after-before)
	}
}

// TestSmallWrites: small writes start small chunk buffers that grow as
// writes extend them (past 64 KiB to a whole chunk), at and past their
// end, across truncates; the content matches a model before and after
// commits.
func TestSmallWrites(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxOff int
		maxLen int
	}{
		{"tiny", 300, 50},
		{"within-small", 60 << 10, 4000},
		{"across-small", 200 << 10, 9000},
		{"across-chunks", 2*fsys.ChunkSize + 500, 5000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, n, root := setup(t, true)
			ctx := ctxT(t)
			f := must(n.c.Create(ctx, root.Ino, "small", 0o644, true))
			var m model
			r := mrand.New(mrand.NewPCG(3, uint64(tc.maxOff)))
			for i := 0; i < 80; i++ {
				off := len(m) // mostly appends, as programs write
				if i%3 == 0 {
					off = r.IntN(tc.maxOff)
				}
				p := make([]byte, 1+r.IntN(tc.maxLen))
				rand.Read(p)
				must(n.c.WriteAt(ctx, f.Ino, p, int64(off)))
				m.writeAt(p, off)
				switch i % 11 {
				case 4:
					if err := n.c.Flush(ctx, f.Ino); err != nil {
						t.Fatal(err)
					}
				case 7:
					if err := n.c.Fsync(ctx, f.Ino); err != nil {
						t.Fatal(err)
					}
				case 9:
					sz := uint64(r.IntN(len(m) + 1))
					must(n.c.Setattr(ctx, f.Ino, fsys.SetAttr{Size: &sz}))
					m = m[:sz]
				}
				if got := readAll(t, n.c, f.Ino, len(m)); !bytes.Equal(got, m) {
					t.Fatalf("step %d: content differs (len %d vs %d)", i, len(got), len(m))
				}
			}
		})
	}
}

func TestSparseLargeFile(t *testing.T) {
	_, n, root := setup(t, false)
	ctx := ctxT(t)
	f := must(n.c.Create(ctx, root.Ino, "big", 0o644, true))
	const off = 5 << 30
	p := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1 KiB
	must(n.c.WriteAt(ctx, f.Ino, p, off))
	if err := n.c.Fsync(ctx, f.Ino); err != nil {
		t.Fatal(err)
	}
	a := must(n.c.Getattr(ctx, f.Ino))
	if a.Size != off+1024 {
		t.Fatalf("size = %d", a.Size)
	}
	buf := make([]byte, 4096)
	k := must(n.c.ReadAt(ctx, f.Ino, buf, 1<<30))
	if k != 4096 || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatal("hole does not read as zeros")
	}
	k = must(n.c.ReadAt(ctx, f.Ino, buf, off-100))
	if k != 1124 || !bytes.Equal(buf[:100], make([]byte, 100)) || !bytes.Equal(buf[100:1124], p) {
		t.Fatalf("read around the data: %d bytes", k)
	}
}

func TestConcurrentCreates(t *testing.T) {
	tv, a, root := setup(t, false)
	b := tv.newNode(t, "desk", true)
	tv.reopenWithBlocks(t, a, b)
	ctx := ctxT(t)
	must(a.c.Grant(ctx, tv.vol, b.id, fsys.RightRead, time.Time{}))
	dir := must(a.c.Mkdir(ctx, root.Ino, "shared", 0o755))
	bdir := must(b.c.Walk(ctx, join(t, tv.vol, "shared")))
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i, cl := range []*client.Client{a.c, b.c} {
		d := dir.Ino
		if i == 1 {
			d = bdir.Ino
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 100; j++ {
				if _, err := cl.Create(ctx, d, fmt.Sprintf("n%d-%03d", i, j), 0o644, true); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each client sees all 200 once the host's change stream has caught
	// it up with the other's commits.
	for _, cl := range []*client.Client{a.c, b.c} {
		var n int
		var size uint64
		nettest.WaitFor(t, 10*time.Second, "200 entries in both clients' view", func() bool {
			d := must(cl.Walk(ctx, join(t, tv.vol, "shared")))
			n, size = len(must(cl.Readdir(ctx, d.Ino))), d.Size
			return n == 200 && size == 200
		})
	}
}

func TestConcurrentWritesSameFile(t *testing.T) {
	tv, a, root := setup(t, false)
	b := tv.newNode(t, "desk", true)
	tv.reopenWithBlocks(t, a, b)
	ctx := ctxT(t)
	must(a.c.Grant(ctx, tv.vol, b.id, fsys.RightRead, time.Time{}))
	f := must(a.c.Create(ctx, root.Ino, "f", 0o644, true))
	bf := must(b.c.Walk(ctx, join(t, tv.vol, "f")))
	// Different chunks: both survive.
	pa := bytes.Repeat([]byte("A"), 100)
	pb := bytes.Repeat([]byte("B"), 100)
	must(a.c.WriteAt(ctx, f.Ino, pa, 0))
	must(b.c.WriteAt(ctx, bf.Ino, pb, fsys.ChunkSize))
	must(0, a.c.Fsync(ctx, f.Ino))
	must(0, b.c.Fsync(ctx, bf.Ino))
	o := tv.newNode(t, "third", true)
	must(a.c.Grant(ctx, tv.vol, o.id, fsys.RightRead, time.Time{}))
	of := must(o.c.Walk(ctx, join(t, tv.vol, "f")))
	got := readAll(t, o.c, of.Ino, int(of.Size))
	if len(got) != fsys.ChunkSize+100 || !bytes.Equal(got[:100], pa) || !bytes.Equal(got[fsys.ChunkSize:], pb) {
		t.Fatalf("merged file wrong: %d bytes", len(got))
	}
}

func TestNoReadcap(t *testing.T) {
	tv, n, root := setup(t, false)
	ctx := ctxT(t)
	f := must(n.c.Create(ctx, root.Ino, "secret", 0o600, true))
	must(n.c.WriteAt(ctx, f.Ino, []byte("classified"), 0))
	must(0, n.c.Fsync(ctx, f.Ino))
	o := tv.newNode(t, "stranger", true)
	_, err := o.c.Walk(ctx, join(t, tv.vol, "secret"))
	wantErr(t, err, fsys.ErrPermission)
	_, err = o.c.Root(ctx, tv.d.ID)
	if err == nil {
		t.Fatal("root without readcap")
	}
	// Grant on the file only: it can read the file, not the root.
	must(n.c.Grant(ctx, join(t, tv.vol, "secret"), o.id, fsys.RightRead, time.Time{}))
	o2 := tv.newNode(t, "stranger2", true)
	must(n.c.Grant(ctx, join(t, tv.vol, "secret"), o2.id, fsys.RightRead, time.Time{}))
	a := must(o2.c.Walk(ctx, join(t, tv.vol, "secret")))
	if got := readAll(t, o2.c, a.Ino, 100); string(got) != "classified" {
		t.Fatalf("granted reader got %q", got)
	}
	_, err = o2.c.Walk(ctx, tv.vol)
	wantErr(t, err, fsys.ErrPermission)
}

func TestWritecapNotCovering(t *testing.T) {
	tv, n, root := setup(t, false)
	ctx := ctxT(t)
	o := tv.newNode(t, "reader", false) // writecap for its own path only
	must(n.c.Grant(ctx, tv.vol, o.id, fsys.RightRead, time.Time{}))
	r := must(o.c.Walk(ctx, tv.vol))
	_, err := o.c.Create(ctx, r.Ino, "x", 0o644, true)
	wantErr(t, err, fsys.ErrPermission)
	// A write point under the volume that o's writecap covers: none, so a
	// grant to o's own path is not in this volume. Grant write via a
	// sub-writecap: the root gives o /vol/shared, and n marks it.
	d := must(n.c.Mkdir(ctx, root.Ino, "shared", 0o777))
	_ = d
	o.c.AddWritecap(tv.d.GrantDay(t, o.id, join(t, tv.vol, "shared")))
	od := must(o.c.Walk(ctx, join(t, tv.vol, "shared")))
	_, err = o.c.Create(ctx, od.Ino, "y", 0o644, true)
	wantErr(t, err, fsys.ErrPermission) // not a write point yet
	nIssuer := tv.newNode(t, "admin", true)
	_ = nIssuer
	// The root-key holder makes /vol/shared a write point (Grant write
	// without an issuer is not supported; set through a client with one).
	_, err = n.c.Grant(ctx, join(t, tv.vol, "shared"), o.id, fsys.RightWrite, time.Time{})
	wantErr(t, err, fsys.ErrNotSupported)
}

func TestGrantWrite(t *testing.T) {
	tv := newTestVolume(t, false)
	n := tv.newNode(t, "laptop", true)
	ctx := ctxT(t)
	issued := make(chan *caps.Writecap, 1)
	n.c.Close()
	n.c = newClientWith(t, tv, n, func(cfg *client.Config) {
		cfg.Issuer = n.key
		cfg.Issued = func(ctx context.Context, w *caps.Writecap) error { issued <- w; return nil }
	})
	must(0, n.c.InitVolume(ctx, tv.h, 0o755))
	root := must(n.c.Walk(ctx, tv.vol))
	must(n.c.Mkdir(ctx, root.Ino, "shared", 0o777))
	o := tv.newNode(t, "reader", false)
	must(n.c.Grant(ctx, tv.vol, o.id, fsys.RightRead, time.Time{}))
	w := must(n.c.Grant(ctx, join(t, tv.vol, "shared"), o.id, fsys.RightWrite, time.Time{}))
	if got := <-issued; got != w {
		t.Fatalf("Grant returned %v, Issued was handed %v", w, got)
	}
	o.c.AddWritecap(w)
	od := must(o.c.Walk(ctx, join(t, tv.vol, "shared")))
	must(o.c.Create(ctx, od.Ino, "y", 0o644, true))
	r := must(o.c.Walk(ctx, tv.vol))
	_, err := o.c.Create(ctx, r.Ino, "z", 0o644, true)
	wantErr(t, err, fsys.ErrPermission)
}

func TestNoPlaintextAtHost(t *testing.T) {
	tv, n, root := setup(t, true)
	ctx := ctxT(t)
	markers := []string{"MARKERdirname0x5eC", "MARKERfilename0x5eC", "MARKERcontent0x5eC", "MARKERlinktarget0x5eC", "MARKERsmall0x5eC"}
	d := must(n.c.Mkdir(ctx, root.Ino, markers[0], 0o755))
	f := must(n.c.Create(ctx, d.Ino, markers[1], 0o644, true))
	content := bytes.Repeat([]byte(markers[2]), 50000)
	must(n.c.WriteAt(ctx, f.Ino, content, 0))
	must(0, n.c.Fsync(ctx, f.Ino))
	must(n.c.Symlink(ctx, d.Ino, "ln", markers[3]))
	s := must(n.c.Create(ctx, d.Ino, "small", 0o644, true))
	must(n.c.WriteAt(ctx, s.Ino, []byte(markers[4]), 0))
	must(0, n.c.Fsync(ctx, s.Ino))
	must(0, n.c.Rename(ctx, d.Ino, markers[1], d.Ino, markers[1]+"2", 0))
	tv.host.Close()
	checked := 0
	for _, dir := range []string{tv.hostDir, tv.storeDir} {
		filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
			if err != nil || info.IsDir() {
				return err
			}
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			checked++
			for _, m := range markers {
				if bytes.Contains(data, []byte(m)) || bytes.Contains(data, []byte(m[6:])) {
					t.Errorf("%s holds plaintext %q", p, m)
				}
			}
			return nil
		})
	}
	if checked < 3 {
		t.Fatalf("checked only %d files", checked)
	}
}

func TestVersions(t *testing.T) {
	tv, n, root := setup(t, false)
	ctx := ctxT(t)
	v0 := must(n.c.Getattr(ctx, root.Ino)).Version
	f := must(n.c.Create(ctx, root.Ino, "doc", 0o644, true))
	must(n.c.WriteAt(ctx, f.Ino, []byte("first"), 0))
	must(0, n.c.Fsync(ctx, f.Ino))
	v1 := must(n.c.Getattr(ctx, f.Ino)).Version
	must(n.c.WriteAt(ctx, f.Ino, []byte("second version"), 0))
	must(0, n.c.Fsync(ctx, f.Ino))
	must(n.c.Create(ctx, root.Ino, "later", 0o644, true))
	p := join(t, tv.vol, "doc")
	log := must(n.c.Log(ctx, p, 0))
	if len(log) != 3 || log[0].Op != "write" || log[2].Op != "create" || log[0].Writer != n.wc.Prefix() {
		t.Fatalf("log = %+v", log)
	}
	a := must(n.c.GetattrAt(ctx, p, v1))
	if a.Size != 5 {
		t.Fatalf("size at v1 = %d", a.Size)
	}
	buf := make([]byte, 64)
	k := must(n.c.ReadAtVersion(ctx, p, v1, buf, 0))
	if string(buf[:k]) != "first" {
		t.Fatalf("content at v1 = %q", buf[:k])
	}
	if got := names(must(n.c.ReaddirAt(ctx, tv.vol, v1))); got != "doc" {
		t.Fatalf("ls --at v1 = %s", got)
	}
	if got := names(must(n.c.ReaddirAt(ctx, tv.vol, v0))); got != "" {
		t.Fatalf("ls --at v0 = %s", got)
	}
	if got := names(must(n.c.Readdir(ctx, root.Ino))); got != "doc,later" {
		t.Fatalf("ls = %s", got)
	}
	_, err := n.c.GetattrAt(ctx, join(t, tv.vol, "later"), v1)
	wantErr(t, err, fsys.ErrNotExist)
}

func TestRevokeRead(t *testing.T) {
	tv, n, root := setup(t, false)
	ctx := ctxT(t)
	d := must(n.c.Mkdir(ctx, root.Ino, "team", 0o755))
	f := must(n.c.Create(ctx, d.Ino, "plan", 0o644, true))
	must(n.c.WriteAt(ctx, f.Ino, []byte("v1"), 0))
	must(0, n.c.Fsync(ctx, f.Ino))
	p := join(t, tv.vol, "team")
	a := tv.newNode(t, "alice", false)
	b := tv.newNode(t, "bob", false)
	must(n.c.Grant(ctx, p, a.id, fsys.RightRead, time.Time{}))
	must(n.c.Grant(ctx, p, b.id, fsys.RightRead, time.Time{}))
	must(a.c.Walk(ctx, join(t, p, "plan")))
	must(b.c.Walk(ctx, join(t, p, "plan")))
	must(0, n.c.Revoke(ctx, p, a.id, fsys.RightRead))
	// A fresh client of alice's has no readcap any more.
	a2 := tv.newNodeWithKey(t, "alice", a)
	_, err := a2.c.Walk(ctx, join(t, p, "plan"))
	wantErr(t, err, fsys.ErrPermission)
	// Bob's readcap was rewrapped; a fresh client of his reads.
	b2 := tv.newNodeWithKey(t, "bob", b)
	x := must(b2.c.Walk(ctx, join(t, p, "plan")))
	if got := readAll(t, b2.c, x.Ino, 10); string(got) != "v1" {
		t.Fatalf("bob reads %q", got)
	}
	// The owner still reads and writes.
	if got := names(must(n.c.Readdir(ctx, d.Ino))); got != "plan" {
		t.Fatalf("owner lists %s", got)
	}
	must(n.c.Create(ctx, d.Ino, "new", 0o644, true))
	if got := names(must(b2.c.Readdir(ctx, must(b2.c.Walk(ctx, p)).Ino))); got != "new,plan" {
		t.Fatalf("bob lists %s", got)
	}
	if rc := must(tv.host.Readcaps(ctx, a.id)); len(rc) != 0 {
		t.Fatalf("alice still has %d readcaps", len(rc))
	}
}

func TestOfflineReads(t *testing.T) {
	tv, n, root := setup(t, false)
	ctx := ctxT(t)
	d := must(n.c.Mkdir(ctx, root.Ino, "d", 0o755))
	f := must(n.c.Create(ctx, d.Ino, "f", 0o644, true))
	must(n.c.WriteAt(ctx, f.Ino, []byte("cached data"), 0))
	must(0, n.c.Fsync(ctx, f.Ino))
	// Warm the cache.
	must(n.c.Readdir(ctx, d.Ino))
	must(n.c.Lookup(ctx, d.Ino, "f"))
	readAll(t, n.c, f.Ino, 20)
	tv.host.Close()
	nettest.WaitFor(t, 5*time.Second, "watch to end", func() bool {
		_, err := n.c.Readdir(ctx, d.Ino) // works either way
		return err == nil
	})
	if got := names(must(n.c.Readdir(ctx, d.Ino))); got != "f" {
		t.Fatalf("offline readdir %s", got)
	}
	if a := must(n.c.Lookup(ctx, d.Ino, "f")); a.Size != 11 {
		t.Fatalf("offline lookup %+v", a)
	}
	if got := readAll(t, n.c, f.Ino, 20); string(got) != "cached data" {
		t.Fatalf("offline read %q", got)
	}
	_, err := n.c.Create(ctx, d.Ino, "g", 0o644, true)
	wantErr(t, err, fsys.ErrUnavailable)
	must(n.c.WriteAt(ctx, f.Ino, []byte("more"), 11))
	wantErr(t, n.c.Fsync(ctx, f.Ino), fsys.ErrUnavailable)
}

func TestNotify(t *testing.T) {
	tv, a, root := setup(t, false)
	b := tv.newNode(t, "desk", true)
	tv.reopenWithBlocks(t, a, b)
	ctx := ctxT(t)
	must(a.c.Grant(ctx, tv.vol, b.id, fsys.RightRead, time.Time{}))
	f := must(a.c.Create(ctx, root.Ino, "f", 0o644, true))
	bf := must(b.c.Walk(ctx, join(t, tv.vol, "f")))
	var mu sync.Mutex
	var got []fsys.Invalidation
	b.c.Notify(func(inv fsys.Invalidation) {
		mu.Lock()
		got = append(got, inv)
		mu.Unlock()
	})
	must(a.c.WriteAt(ctx, f.Ino, []byte("x"), 0))
	must(0, a.c.Fsync(ctx, f.Ino))
	must(0, a.c.Rename(ctx, root.Ino, "f", root.Ino, "g", 0))
	nettest.WaitFor(t, 5*time.Second, "invalidations", func() bool {
		mu.Lock()
		defer mu.Unlock()
		var ino, name bool
		for _, inv := range got {
			ino = ino || inv.Ino == bf.Ino
			name = name || (inv.Dir == root.Ino && inv.Name == "f")
		}
		return ino && name
	})
	// And b sees the new state.
	nettest.WaitFor(t, 5*time.Second, "fresh size", func() bool {
		a, err := b.c.Getattr(ctx, bf.Ino)
		return err == nil && a.Size == 1
	})
	_, err := b.c.Lookup(ctx, root.Ino, "f")
	wantErr(t, err, fsys.ErrNotExist)
}

func TestUnlinkOpenFile(t *testing.T) {
	_, n, root := setup(t, false)
	ctx := ctxT(t)
	f := must(n.c.Create(ctx, root.Ino, "tmp", 0o644, true))
	must(n.c.WriteAt(ctx, f.Ino, []byte("still here"), 0))
	must(0, n.c.Fsync(ctx, f.Ino))
	must(0, n.c.Unlink(ctx, root.Ino, "tmp"))
	if got := readAll(t, n.c, f.Ino, 20); string(got) != "still here" {
		t.Fatalf("read after unlink %q", got)
	}
	_, err := n.c.WriteAt(ctx, f.Ino, []byte("x"), 0)
	wantErr(t, err, fsys.ErrNotExist)
	_, err = n.c.Lookup(ctx, root.Ino, "tmp")
	wantErr(t, err, fsys.ErrNotExist)
}

func TestManySmallFiles(t *testing.T) {
	_, n, root := setup(t, true)
	ctx := ctxT(t)
	const N = 300
	d := must(n.c.Mkdir(ctx, root.Ino, "many", 0o755))
	start := time.Now()
	for i := 0; i < N; i++ {
		f := must(n.c.Create(ctx, d.Ino, fmt.Sprintf("f%04d", i), 0o644, true))
		must(n.c.WriteAt(ctx, f.Ino, []byte(fmt.Sprintf("file %d", i)), 0))
		must(0, n.c.Fsync(ctx, f.Ino))
	}
	created := time.Since(start)
	ents := must(n.c.Readdir(ctx, d.Ino))
	if len(ents) != N || !sort.SliceIsSorted(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name }) {
		t.Fatalf("%d entries", len(ents))
	}
	for i, e := range ents {
		if got := readAll(t, n.c, e.Ino, 20); string(got) != fmt.Sprintf("file %d", i) {
			t.Fatalf("%s: %q", e.Name, got)
		}
	}
	for _, e := range ents {
		must(0, n.c.Unlink(ctx, d.Ino, e.Name))
	}
	t.Logf("%d files: create+write+fsync %v (%v/file), total %v", N, created, created/N, time.Since(start))
}

// TestLateGrantSeen: a node that looked before it was granted read sees
// the grant once the reload interval has passed, without a restart.
func TestLateGrantSeen(t *testing.T) {
	tv, a, root := setup(t, false)
	ctx := ctxT(t)
	must(a.c.Create(ctx, root.Ino, "f", 0o644, true))
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	b := &testNode{key: nettest.NewKey(t)}
	b.id = nettest.PrincipalID(t, b.key.PublicKey())
	b.path = tv.d.Path(t, "late")
	b.wc = tv.d.GrantDay(t, b.id, b.path)
	tv.startNode(t, b, func(c *client.Config) { c.Clock = clock })
	p := join(t, tv.vol, "f")
	if _, err := b.c.Walk(ctx, p); err == nil {
		t.Fatal("read without a readcap")
	} else {
		wantErr(t, err, fsys.ErrPermission)
	}
	must(a.c.Grant(ctx, tv.vol, b.id, fsys.RightRead, time.Time{}))
	if _, err := b.c.Walk(ctx, p); err == nil {
		t.Fatal("readcaps reloaded on every walk: want at most one load per interval")
	}
	mu.Lock()
	now = now.Add(3 * time.Second)
	mu.Unlock()
	if _, err := b.c.Walk(ctx, p); err != nil {
		t.Fatalf("the grant is not seen after the reload interval: %v", err)
	}
}
