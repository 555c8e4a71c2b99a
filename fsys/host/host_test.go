package host_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/leveldb"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/host"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// writer signs raw Txs (records with opaque sealed bytes: the host never
// reads them).
type writer struct {
	vol  paths.Path
	wc   *caps.Writecap
	hk   crypto.PrivKey
	cert *caps.HostCert
}

// world is a deterministic domain (from seeds) so a crash-test child and
// its parent agree on it.
type world struct {
	root, node *softkey.Key
	rootID     paths.ID
	vol        paths.Path
}

func newWorld(t testing.TB, seed byte) *world {
	t.Helper()
	s := make([]byte, 32)
	s[0] = seed
	root, err := softkey.FromSeed(s)
	if err != nil {
		t.Fatal(err)
	}
	s[1] = 1
	node, err := softkey.FromSeed(s)
	if err != nil {
		t.Fatal(err)
	}
	rid, _ := caps.PrincipalID(root.PublicKey())
	vol, _ := paths.New(rid, "data")
	return &world{root: root, node: node, rootID: rid, vol: vol}
}

func (w *world) writer(t testing.TB, prefix paths.Path) *writer {
	t.Helper()
	ctx := context.Background()
	nid, _ := caps.PrincipalID(w.node.PublicKey())
	now := time.Now()
	wc, err := caps.Issue(ctx, w.root, nil, nid, prefix, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	hk, _, _ := crypto.GenerateEd25519Key(rand.Reader)
	cert, err := caps.IssueHostCert(ctx, w.node, hk.GetPublic(), now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return &writer{vol: w.vol, wc: wc, hk: hk, cert: cert}
}

func (wr *writer) tx(t testing.TB, op string, base []fsys.Base, put []fsys.Record, del []fsys.RecordKey) *fsys.Tx {
	t.Helper()
	tx := &fsys.Tx{Volume: wr.vol, Base: base, Put: put, Delete: del, Op: op, Time: time.Now(), Writecap: wr.wc, HostCert: wr.cert}
	if err := fsys.SignTx(tx, wr.hk); err != nil {
		t.Fatal(err)
	}
	return tx
}

func openHost(t testing.TB, dir string, vol paths.Path, store blocks.PinStore) *host.Host {
	t.Helper()
	node, _ := paths.New(vol.Root(), "server")
	h, err := host.Open(host.Config{Dir: dir, Volume: vol, Node: node, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func sealed(s string) []byte { return []byte("opaque:" + s) }

func entryKey(dir fsys.Ino, name string) fsys.RecordKey {
	k := fsys.RecordKey{Ino: dir}
	copy(k.Name[:], name)
	k.Name[31] = 1
	return k
}

// initRoot writes the root record.
func initRoot(t testing.TB, h *host.Host, wr *writer) fsys.Ino {
	t.Helper()
	info, err := h.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	k := fsys.RecordKey{Ino: info.Root}
	if _, err := h.Commit(context.Background(), wr.tx(t, "init", []fsys.Base{{Key: k}},
		[]fsys.Record{{Key: k, Sealed: sealed("root"), Grant: wr.vol}}, nil)); err != nil {
		t.Fatal(err)
	}
	return info.Root
}

func newStore(t testing.TB, dir string) *leveldb.Store {
	t.Helper()
	s, err := leveldb.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestCommitChecks(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, 1)
	dir := t.TempDir()
	store := newStore(t, filepath.Join(dir, "blocks"))
	h := openHost(t, filepath.Join(dir, "host"), w.vol, store)
	wr := w.writer(t, w.vol)
	root := initRoot(t, h, wr)
	rk := fsys.RecordKey{Ino: root}
	e1 := entryKey(root, "a")

	v, err := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: e1}}, []fsys.Record{{Key: e1, Sealed: sealed("a1")}}, nil))
	if err != nil || v != 2 {
		t.Fatalf("commit = %d, %v", v, err)
	}
	t.Run("stale base", func(t *testing.T) {
		_, err := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: e1}}, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil))
		if !errors.Is(err, fsys.ErrConflict) {
			t.Fatalf("got %v", err)
		}
		_, err = h.Commit(ctx, wr.tx(t, "write", []fsys.Base{{Key: e1, Version: 1}}, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil))
		if !errors.Is(err, fsys.ErrConflict) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no base", func(t *testing.T) {
		_, err := h.Commit(ctx, wr.tx(t, "write", nil, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil))
		if !errors.Is(err, fsys.ErrInvalid) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("forged signature", func(t *testing.T) {
		tx := wr.tx(t, "write", []fsys.Base{{Key: e1, Version: 2}}, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil)
		tx.Sig[3] ^= 1
		if _, err := h.Commit(ctx, tx); !errors.Is(err, fsys.ErrPermission) {
			t.Fatalf("flipped bit: %v", err)
		}
		tx = wr.tx(t, "write", []fsys.Base{{Key: e1, Version: 2}}, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil)
		tx.Put[0].Sealed = sealed("changed after signing")
		if _, err := h.Commit(ctx, tx); !errors.Is(err, fsys.ErrPermission) {
			t.Fatalf("changed content: %v", err)
		}
		other, _, _ := crypto.GenerateEd25519Key(rand.Reader)
		tx = wr.tx(t, "write", []fsys.Base{{Key: e1, Version: 2}}, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil)
		fsys.SignTx(tx, other)
		if _, err := h.Commit(ctx, tx); !errors.Is(err, fsys.ErrPermission) {
			t.Fatalf("other key: %v", err)
		}
	})
	t.Run("writecap not covering", func(t *testing.T) {
		sub, _ := w.vol.Join("sub")
		narrow := w.writer(t, sub)
		_, err := h.Commit(ctx, narrow.tx(t, "write", []fsys.Base{{Key: e1, Version: 2}}, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil))
		if !errors.Is(err, fsys.ErrPermission) {
			t.Fatalf("got %v", err)
		}
		// A write point for sub: a directory inode with Grant = sub.
		d := fsys.Ino(0x1234)
		dk := fsys.RecordKey{Ino: d}
		if _, err := h.Commit(ctx, wr.tx(t, "mkdir", []fsys.Base{{Key: dk}}, []fsys.Record{{Key: dk, Parent: root, Sealed: sealed("d"), Grant: sub}}, nil)); err != nil {
			t.Fatal(err)
		}
		ek := entryKey(d, "x")
		if _, err := h.Commit(ctx, narrow.tx(t, "create", []fsys.Base{{Key: ek}}, []fsys.Record{{Key: ek, Sealed: sealed("x")}}, nil)); err != nil {
			t.Fatalf("write under its grant: %v", err)
		}
		// It may not move the write point out, nor set a grant it lacks.
		cur, _ := h.Get(ctx, 0, dk)
		_, err = h.Commit(ctx, narrow.tx(t, "setattr", []fsys.Base{{Key: dk, Version: cur[0].Version}}, []fsys.Record{{Key: dk, Parent: root, Sealed: sealed("d2")}}, nil))
		if !errors.Is(err, fsys.ErrPermission) {
			t.Fatalf("drop grant: %v", err)
		}
		// The root record is not under sub.
		rcur, _ := h.Get(ctx, 0, rk)
		_, err = h.Commit(ctx, narrow.tx(t, "setattr", []fsys.Base{{Key: rk, Version: rcur[0].Version}}, []fsys.Record{{Key: rk, Sealed: sealed("r2"), Grant: w.vol}}, nil))
		if !errors.Is(err, fsys.ErrPermission) {
			t.Fatalf("root: %v", err)
		}
	})
	t.Run("missing block", func(t *testing.T) {
		c, _ := blocks.NewBlock([]byte("not stored"))
		d := fsys.Ino(0x5678)
		dk := fsys.RecordKey{Ino: d}
		_, err := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: dk}}, []fsys.Record{{Key: dk, Parent: root, Sealed: sealed("f"), Blocks: []cid.Cid{c.CID}}}, nil))
		if !errors.Is(err, fsys.ErrInvalid) {
			t.Fatalf("got %v", err)
		}
		if err := store.Put(ctx, c); err != nil {
			t.Fatal(err)
		}
		v, err := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: dk}}, []fsys.Record{{Key: dk, Parent: root, Sealed: sealed("f"), Blocks: []cid.Cid{c.CID}}}, nil))
		if err != nil {
			t.Fatal(err)
		}
		// Pins follow commits by at most PinDelay; SyncPins does not wait.
		if err := h.SyncPins(ctx); err != nil {
			t.Fatal(err)
		}
		if ok, _ := store.IsPinned(ctx, c.CID); !ok {
			t.Fatal("block not pinned")
		}
		_ = v
	})
	t.Run("wrong volume", func(t *testing.T) {
		other, _ := paths.New(w.rootID, "other")
		wr2 := *wr
		wr2.vol = other
		_, err := h.Commit(ctx, wr2.tx(t, "write", []fsys.Base{{Key: e1, Version: 2}}, []fsys.Record{{Key: e1, Sealed: sealed("a2")}}, nil))
		if !errors.Is(err, fsys.ErrInvalid) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestVersionsAndWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newWorld(t, 2)
	dir := t.TempDir()
	store := newStore(t, filepath.Join(dir, "blocks"))
	h := openHost(t, filepath.Join(dir, "host"), w.vol, store)
	wr := w.writer(t, w.vol)
	root := initRoot(t, h, wr)
	ch, err := h.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := entryKey(root, "a")
	var vers []uint64
	base := uint64(0)
	for i := 0; i < 5; i++ {
		v, err := h.Commit(ctx, wr.tx(t, "write", []fsys.Base{{Key: e, Version: base}}, []fsys.Record{{Key: e, Sealed: sealed(strconv.Itoa(i))}}, nil))
		if err != nil {
			t.Fatal(err)
		}
		vers = append(vers, v)
		base = v
	}
	v, err := h.Commit(ctx, wr.tx(t, "unlink", []fsys.Base{{Key: e, Version: base}}, nil, []fsys.RecordKey{e}))
	if err != nil {
		t.Fatal(err)
	}
	for i, ver := range vers {
		got, err := h.Get(ctx, ver, e)
		if err != nil || len(got) != 1 || string(got[0].Sealed) != string(sealed(strconv.Itoa(i))) || got[0].Version != ver {
			t.Fatalf("Get at %d = %v, %v", ver, got, err)
		}
		l, _ := h.List(ctx, ver, root)
		if len(l) != 1 {
			t.Fatalf("List at %d: %d", ver, len(l))
		}
	}
	if got, _ := h.Get(ctx, 0, e); len(got) != 0 {
		t.Fatal("deleted record still current")
	}
	if l, _ := h.List(ctx, 0, root); len(l) != 0 {
		t.Fatal("deleted entry listed")
	}
	if l, _ := h.List(ctx, 1, root); len(l) != 0 {
		t.Fatal("entry listed before it existed")
	}
	log, err := h.Log(ctx, e, 0)
	if err != nil || len(log) != 6 || log[0].Version != v || log[0].Op != "unlink" || log[5].Version != vers[0] {
		t.Fatalf("log = %+v, %v", log, err)
	}
	if log, _ := h.Log(ctx, e, 2); len(log) != 2 {
		t.Fatal("log limit")
	}
	// Watch: every change in order, from the init on.
	for want := uint64(1); want <= v; want++ {
		select {
		case c := <-ch:
			if c.Version != want {
				t.Fatalf("change %d, want %d", c.Version, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no change")
		}
	}
	// A late watcher gets the replay.
	ch2, _ := h.Watch(ctx, 3)
	if c := <-ch2; c.Version != 4 {
		t.Fatalf("replay starts at %d", c.Version)
	}
	// Reopen: everything is still there.
	h.Close()
	if _, err := h.Get(ctx, 0, e); !errors.Is(err, fsys.ErrUnavailable) {
		t.Fatalf("closed host: %v", err)
	}
	if _, ok := <-ch; ok {
		t.Fatal("watch channel open after close")
	}
	h = openHost(t, filepath.Join(dir, "host"), w.vol, store)
	info, _ := h.Info(ctx)
	if info.Version != v || info.Root != root {
		t.Fatalf("reopened info %+v", info)
	}
}

func TestSlowWatcherDropped(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, 3)
	dir := t.TempDir()
	store := newStore(t, filepath.Join(dir, "blocks"))
	node, _ := paths.New(w.rootID, "server")
	h, err := host.Open(host.Config{Dir: filepath.Join(dir, "host"), Volume: w.vol, Node: node, Store: store, WatchBuffer: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	wr := w.writer(t, w.vol)
	root := initRoot(t, h, wr)
	ch, _ := h.Watch(ctx, 1)
	for i := 0; i < 5; i++ { // never read: the commits must not block
		k := entryKey(root, strconv.Itoa(i))
		if _, err := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: k}}, []fsys.Record{{Key: k, Sealed: sealed("x")}}, nil)); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for range ch {
		n++
	}
	if n != 2 {
		t.Fatalf("slow watcher got %d changes before being dropped", n)
	}
}

// TestHelperCommitter is the child of TestCrash: it commits Txs (each a new
// entry with one block) and prints "ACK <entry-name-hex> <version> <cid>"
// after each acknowledged commit, until killed.
func TestHelperCommitter(t *testing.T) {
	dir := os.Getenv("BT_FSYS_CRASH_DIR")
	if dir == "" {
		t.Skip("subprocess helper for TestCrash")
	}
	w := newWorld(t, 9)
	store, err := leveldb.Open(filepath.Join(dir, "blocks"))
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	node, _ := paths.New(w.rootID, "server")
	h, err := host.Open(host.Config{Dir: filepath.Join(dir, "host"), Volume: w.vol, Node: node, Store: store})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	ctx := context.Background()
	wr := w.writer(t, w.vol)
	info, _ := h.Info(ctx)
	rk := fsys.RecordKey{Ino: info.Root}
	if got, _ := h.Get(ctx, 0, rk); len(got) == 0 {
		initRoot(t, h, wr)
	}
	// Four committers at once, so that commits share batches (group
	// commit) and pins lag behind them when the kill comes.
	var outMu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	for range 3 {
		go commitLoop(t, h, store, wr, info.Root, &outMu, out)
	}
	commitLoop(t, h, store, wr, info.Root, &outMu, out)
}

func commitLoop(t *testing.T, h *host.Host, store *leveldb.Store, wr *writer, root fsys.Ino, outMu *sync.Mutex, out *bufio.Writer) {
	ctx := context.Background()
	info := fsys.VolumeInfo{Root: root}
	for {
		var k fsys.RecordKey
		k.Ino = info.Root
		rand.Read(k.Name[:])
		data := make([]byte, 1000+mrand.IntN(200000))
		rand.Read(data)
		b, _ := blocks.NewBlock(data)
		if err := store.Put(ctx, b); err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		fk := fsys.RecordKey{Ino: fsys.Ino(mrand.Uint64() | 1)}
		tx := wr.tx(t, "create", []fsys.Base{{Key: k}, {Key: fk}},
			[]fsys.Record{{Key: k, Sealed: sealed("e")}, {Key: fk, Parent: info.Root, Sealed: sealed("f"), Blocks: []cid.Cid{b.CID}}}, nil)
		var v uint64
		var err error
		switch os.Getenv("BT_FSYS_CRASH_MODE") {
		case "nosync": // acknowledged when applied, never synced
			v, err = h.CommitNoSync(ctx, tx)
		case "nosync+sync": // acknowledged when Sync returned
			if v, err = h.CommitNoSync(ctx, tx); err == nil {
				err = h.Sync(ctx, v)
			}
		default:
			v, err = h.Commit(ctx, tx)
		}
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(2)
		}
		outMu.Lock()
		fmt.Fprintf(out, "ACK %s %d %d %s\n", hex.EncodeToString(k.Name[:]), uint64(fk.Ino), v, b.CID)
		out.Flush()
		outMu.Unlock()
	}
}

// TestCrash kills (SIGKILL) a child committing in each mode and checks
// that every acknowledged commit is there after reopening: a synced
// Commit, a CommitNoSync followed by Sync, and a CommitNoSync alone (a
// process kill does not lose what was written to the journal; a power
// loss could, which this test does not simulate).
func TestCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test")
	}
	for _, mode := range []string{"sync", "nosync+sync", "nosync"} {
		t.Run(mode, func(t *testing.T) { testCrash(t, mode) })
	}
}

func testCrash(t *testing.T, mode string) {
	ctx := context.Background()
	dir := t.TempDir()
	w := newWorld(t, 9)
	type ack struct {
		name    [32]byte
		ino     fsys.Ino
		version uint64
		c       cid.Cid
	}
	var acked []ack
	deadline := time.Now().Add(8 * time.Second)
	for iter := 0; iter < 6 && time.Now().Before(deadline); iter++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperCommitter$")
		cmd.Env = append(os.Environ(), "BT_FSYS_CRASH_DIR="+dir, "BT_FSYS_CRASH_MODE="+mode)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(time.Duration(200+mrand.IntN(400))*time.Millisecond, func() { cmd.Process.Signal(syscall.SIGKILL) })
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 5 && f[0] == "ACK" {
				var a ack
				nb, _ := hex.DecodeString(f[1])
				copy(a.name[:], nb)
				ino, _ := strconv.ParseUint(f[2], 10, 64)
				a.ino = fsys.Ino(ino)
				a.version, _ = strconv.ParseUint(f[3], 10, 64)
				a.c, _ = cid.Decode(f[4])
				acked = append(acked, a)
			} else if len(f) > 0 && f[0] == "ERR" {
				t.Fatalf("child: %s", sc.Text())
			}
		}
		cmd.Wait()
	}
	if len(acked) == 0 {
		t.Fatal("no commit acknowledged")
	}
	store := newStore(t, filepath.Join(dir, "blocks"))
	h := openHost(t, filepath.Join(dir, "host"), w.vol, store)
	info, _ := h.Info(ctx)
	for _, a := range acked {
		k := fsys.RecordKey{Ino: info.Root, Name: a.name}
		got, err := h.Get(ctx, 0, k, fsys.RecordKey{Ino: a.ino})
		if err != nil || len(got) != 2 || got[0].Version != a.version {
			t.Fatalf("acknowledged version %d lost: %v, %v", a.version, got, err)
		}
		if _, err := store.Get(ctx, a.c); err != nil {
			t.Fatalf("block of version %d: %v", a.version, err)
		}
		if ok, _ := store.IsPinned(ctx, a.c); !ok {
			t.Fatalf("block of version %d not pinned", a.version)
		}
	}
	for _, a := range acked {
		if info.Version < a.version {
			t.Fatalf("volume version %d < acknowledged %d", info.Version, a.version)
		}
	}
	// The volume still takes commits.
	wr := w.writer(t, w.vol)
	k := entryKey(info.Root, "after")
	if _, err := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: k}}, []fsys.Record{{Key: k, Sealed: sealed("x")}}, nil)); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d acknowledged commits survived the kills", mode, len(acked))
}

// TestGroupCommit commits from many goroutines at once: every Tx gets its
// own version, a Tx based on what an earlier Tx of the same batch changed
// conflicts, watchers see every version in order, and pins follow.
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, 4)
	dir := t.TempDir()
	store := newStore(t, filepath.Join(dir, "blocks"))
	h := openHost(t, filepath.Join(dir, "host"), w.vol, store)
	wr := w.writer(t, w.vol)
	root := initRoot(t, h, wr)
	ch, err := h.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	shared := entryKey(root, "shared")
	const workers, each = 8, 10
	var mu sync.Mutex
	versions := map[uint64]bool{}
	sharedWins := 0
	var cids []cid.Cid
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				k := entryKey(root, fmt.Sprintf("%d-%d", g, i))
				fk := fsys.RecordKey{Ino: fsys.Ino(g*1000 + i + 1)}
				b, _ := blocks.NewBlock([]byte(fmt.Sprintf("block %d %d", g, i)))
				if err := store.Put(ctx, b); err != nil {
					t.Error(err)
					return
				}
				v, err := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: k}, {Key: fk}},
					[]fsys.Record{{Key: k, Sealed: sealed("e")}, {Key: fk, Parent: root, Sealed: sealed("f"), Blocks: []cid.Cid{b.CID}}}, nil))
				if err != nil {
					t.Error(err)
					return
				}
				// Everyone creates "shared" based on its absence: one wins.
				sv, serr := h.Commit(ctx, wr.tx(t, "create", []fsys.Base{{Key: shared}}, []fsys.Record{{Key: shared, Sealed: sealed("s")}}, nil))
				if serr != nil && !errors.Is(serr, fsys.ErrConflict) {
					t.Error(serr)
					return
				}
				mu.Lock()
				if versions[v] || (serr == nil && versions[sv]) {
					t.Errorf("version %d or %d given twice", v, sv)
				}
				versions[v] = true
				if serr == nil {
					versions[sv] = true
					sharedWins++
				}
				cids = append(cids, b.CID)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if sharedWins != 1 {
		t.Fatalf("%d creates of one absent record succeeded", sharedWins)
	}
	info, _ := h.Info(ctx)
	if want := uint64(1 + workers*each + 1); info.Version != want || len(versions) != workers*each+1 {
		t.Fatalf("version %d, %d versions acknowledged; want %d", info.Version, len(versions), want)
	}
	for v := uint64(2); v <= info.Version; v++ {
		if c := <-ch; c.Version != v {
			t.Fatalf("watcher got version %d, want %d", c.Version, v)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range cids {
		for {
			ok, _ := store.IsPinned(ctx, c)
			if ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("block %s not pinned after %v", c, 10*time.Second)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestCommitNoSync: an unsynced commit is visible at once (Get, Watch,
// Info) and conflicts like a synced one; Sync covers it, at once when a
// later synced Commit already did; Sync beyond the current version is
// ErrIntegrity.
func TestCommitNoSync(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	w := newWorld(t, 3)
	store := newStore(t, filepath.Join(dir, "blocks"))
	h := openHost(t, filepath.Join(dir, "host"), w.vol, store)
	wr := w.writer(t, w.vol)
	root := initRoot(t, h, wr)
	ch, err := h.Watch(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	k := entryKey(root, "a")
	v, err := h.CommitNoSync(ctx, wr.tx(t, "create", []fsys.Base{{Key: k}}, []fsys.Record{{Key: k, Sealed: sealed("a")}}, nil))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := h.Get(ctx, 0, k); err != nil || len(got) != 1 || got[0].Version != v {
		t.Fatalf("unsynced commit not visible: %v, %v", got, err)
	}
	if chg := <-ch; chg.Version != v {
		t.Fatalf("watch: version %d, want %d", chg.Version, v)
	}
	if info, _ := h.Info(ctx); info.Version != v {
		t.Fatalf("info: version %d, want %d", info.Version, v)
	}
	// A stale base conflicts with it.
	if _, err := h.CommitNoSync(ctx, wr.tx(t, "create", []fsys.Base{{Key: k}}, []fsys.Record{{Key: k, Sealed: sealed("b")}}, nil)); !errors.Is(err, fsys.ErrConflict) {
		t.Fatalf("stale base: %v", err)
	}
	if err := h.Sync(ctx, v); err != nil {
		t.Fatal(err)
	}
	if err := h.Sync(ctx, v+1); !errors.Is(err, fsys.ErrIntegrity) {
		t.Fatalf("sync beyond the volume: %v", err)
	}
	// Concurrent unsynced commits and Syncs share batches.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := entryKey(root, fmt.Sprintf("c%d", i))
			v, err := h.CommitNoSync(ctx, wr.tx(t, "create", []fsys.Base{{Key: k}}, []fsys.Record{{Key: k, Sealed: sealed("c")}}, nil))
			if err == nil && i%2 == 0 {
				err = h.Sync(ctx, v)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Reopened, everything is there.
	h.Close()
	h2 := openHost(t, filepath.Join(dir, "host"), w.vol, store)
	if info, _ := h2.Info(ctx); info.Version != v+32 {
		t.Fatalf("after reopen: version %d, want %d", info.Version, v+32)
	}
	if err := h2.Sync(ctx, v+32); err != nil {
		t.Fatal(err)
	}
}
