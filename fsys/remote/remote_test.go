package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/host"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/p2p/p2ptest"
	"blocktree.dev/bt/paths"
)

// Tests run in-process libp2p nodes on 127.0.0.1 with a real fsys/host
// volume (goleveldb in t.TempDir) behind the server, and real block
// exchanges. Set BT_TEST_LOG=1 to see their logs.

type testNode struct {
	node   *p2p.Node
	id     *p2p.Identity
	nodeID paths.ID
	store  blocks.PinStore
	xch    *exchange.Exchange
}

func startNode(t testing.TB, d *nettest.Domain, name string, bs ...peer.AddrInfo) *testNode {
	t.Helper()
	pn := p2ptest.Start(t, d, name, p2ptest.WithBootstrap(bs...))
	st := memstore.New()
	x, err := exchange.New(pn.Node, st, exchange.Config{Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() }) // before the node's, registered earlier
	return &testNode{node: pn.Node, id: pn.Identity, nodeID: pn.NodeID, store: st, xch: x}
}

// fetcher is the daemon's FetchFunc: exchange.Fetch from the given peers.
func fetcher(x *exchange.Exchange) FetchFunc {
	return func(ctx context.Context, cids []cid.Cid, from []peer.ID) error {
		return x.Fetch(ctx, cids, exchange.Where{Peers: from}, nil)
	}
}

// hostVolume serves a real fsys/host volume at vol on n.
func hostVolume(t testing.TB, d *nettest.Domain, n *testNode, vol paths.Path) (*Server, *host.Host) {
	t.Helper()
	h, err := host.Open(host.Config{Dir: t.TempDir(), Volume: vol, Node: n.node.Path(), Store: n.store,
		HaveBlocks: HaveBlocks(fetcher(n.xch)), Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	s := NewServer(n.node, ServerConfig{NodeID: n.nodeID, Log: nettest.Logger()})
	t.Cleanup(func() { s.Close() })
	if err := s.Add(vol, h, d.GrantDay(t, n.nodeID, vol)); err != nil {
		t.Fatal(err)
	}
	return s, h
}

// signedTx returns a Tx by writer n (holding w) that puts recs, signed.
func signedTx(t testing.TB, n *testNode, w *caps.Writecap, vol paths.Path, base []fsys.Base, recs ...fsys.Record) *fsys.Tx {
	t.Helper()
	tx := &fsys.Tx{Volume: vol, Base: base, Put: recs, Op: "test", Time: time.Now(), Writecap: w, HostCert: n.id.Cert}
	if err := fsys.SignTx(tx, n.id.HostKey); err != nil {
		t.Fatal(err)
	}
	return tx
}

type pair struct {
	d      *nettest.Domain
	vol    paths.Path
	hostN  *testNode
	client *testNode
	srv    *Server
	h      *host.Host
	c      *Client
	info   fsys.VolumeInfo
	w      *caps.Writecap // the client's writecap for the volume
}

func newPair(t *testing.T) *pair {
	t.Helper()
	d := nettest.NewDomain(t)
	vol := d.Path(t)
	p := &pair{d: d, vol: vol}
	p.hostN = startNode(t, d, "n0")
	p.client = startNode(t, d, "n1", p.hostN.node.AddrInfo())
	p.srv, p.h = hostVolume(t, d, p.hostN, vol)
	ctx := nettest.Context(t, 20*time.Second)
	if err := p.client.node.Host().Connect(ctx, p.hostN.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	c, vi, err := Dial(ctx, p.client.node, p.hostN.node.ID(), vol, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.c, p.info = c, vi
	p.w = d.GrantDay(t, p.client.nodeID, vol)
	return p
}

// rootRecord is the volume's root directory record.
func (p *pair) rootRecord(sealed string) fsys.Record {
	return fsys.Record{Key: fsys.RecordKey{Ino: p.info.Root}, Sealed: []byte(sealed), Grant: p.vol}
}

func TestInfoChecksHostingProof(t *testing.T) {
	p := newPair(t)
	if p.info.Path != p.vol || p.info.Host != p.hostN.node.Path() || p.info.Root == 0 {
		t.Fatalf("info %+v", p.info)
	}
	// A host whose writecap does not cover the volume fails the proof.
	other := p.d.Path(t, "n0", "vol")
	p.srv.mu.Lock()
	p.srv.vols[other] = &volume{path: other, host: p.h, hostcap: p.d.GrantDay(t, p.hostN.nodeID, p.d.Path(t, "n0", "elsewhere"))}
	p.srv.mu.Unlock()
	ctx := nettest.Context(t, 10*time.Second)
	_, _, err := Dial(ctx, p.client.node, p.hostN.node.ID(), other, nil)
	if !errors.Is(err, fsys.ErrUnavailable) && !errors.Is(err, fsys.ErrPermission) {
		t.Fatalf("dial of a volume answered for another path: %v", err)
	}
	// Add refuses a writecap that does not cover the volume.
	if err := p.srv.Add(other, p.h, p.d.GrantDay(t, p.hostN.nodeID, p.d.Path(t, "x"))); !errors.Is(err, fsys.ErrPermission) {
		t.Fatalf("Add with a foreign writecap: %v", err)
	}
	// A volume the peer does not host.
	_, _, err = Dial(ctx, p.client.node, p.hostN.node.ID(), p.d.Path(t, "nope"), nil)
	if !errors.Is(err, fsys.ErrUnavailable) {
		t.Fatalf("dial of an unhosted volume: %v", err)
	}
}

func TestCommitGetListLogWatch(t *testing.T) {
	p := newPair(t)
	ctx := nettest.Context(t, 30*time.Second)
	watch, err := p.c.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A block only the client holds: the host must fetch it from the
	// committer before it acknowledges.
	blk, err := blocks.NewBlock(bytes.Repeat([]byte("ciphertext "), 100))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.client.store.Put(ctx, blk); err != nil {
		t.Fatal(err)
	}
	root := p.rootRecord("root v1")
	file := fsys.Record{Key: fsys.RecordKey{Ino: 77}, Parent: p.info.Root, Sealed: []byte("file"), Blocks: []cid.Cid{blk.CID}}
	entries := make([]fsys.Record, 0, 1500) // more than one frame's worth of records
	for i := range 1500 {
		var name [32]byte
		copy(name[:], fmt.Sprintf("entry-%d", i))
		entries = append(entries, fsys.Record{Key: fsys.RecordKey{Ino: p.info.Root, Name: name}, Sealed: bytes.Repeat([]byte{byte(i)}, 300)})
	}
	puts := append([]fsys.Record{root, file}, entries...)
	var bases []fsys.Base
	for _, r := range puts {
		bases = append(bases, fsys.Base{Key: r.Key})
	}
	tx := signedTx(t, p.client, p.w, p.vol, bases, puts...)
	ver, err := p.c.Commit(ctx, tx)
	if err != nil {
		t.Fatal(err)
	}
	if ver != 1 {
		t.Fatalf("version %d, want 1", ver)
	}
	if ok, _ := p.hostN.store.Has(ctx, blk.CID); !ok {
		t.Fatal("the host acknowledged a commit without holding its block")
	}
	got, err := p.c.Get(ctx, 0, file.Key, fsys.RecordKey{Ino: 999})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || string(got[0].Sealed) != "file" || got[0].Version != 1 || len(got[0].Blocks) != 1 || got[0].Blocks[0] != blk.CID {
		t.Fatalf("get: %+v", got)
	}
	list, err := p.c.List(ctx, 0, p.info.Root)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(entries) {
		t.Fatalf("list: %d records, want %d", len(list), len(entries))
	}
	select {
	case ch := <-watch:
		if ch.Version != 1 || len(ch.Keys) != len(entries)+2 {
			t.Fatalf("change %d with %d keys", ch.Version, len(ch.Keys))
		}
	case <-ctx.Done():
		t.Fatal("no change")
	}
	// A stale base is a conflict, carried back as fsys.ErrConflict.
	stale := signedTx(t, p.client, p.w, p.vol, []fsys.Base{{Key: root.Key}}, p.rootRecord("root v2"))
	if _, err := p.c.Commit(ctx, stale); !errors.Is(err, fsys.ErrConflict) {
		t.Fatalf("stale commit: %v", err)
	}
	// A writecap that does not cover the volume is refused.
	narrow := p.d.GrantDay(t, p.client.nodeID, p.d.Path(t, "n1"))
	bad := signedTx(t, p.client, narrow, p.vol, []fsys.Base{{Key: root.Key, Version: 1}}, p.rootRecord("root v2"))
	if _, err := p.c.Commit(ctx, bad); !errors.Is(err, fsys.ErrPermission) {
		t.Fatalf("commit without a covering writecap: %v", err)
	}
	ok := signedTx(t, p.client, p.w, p.vol, []fsys.Base{{Key: root.Key, Version: 1}}, p.rootRecord("root v2"))
	if ver, err = p.c.Commit(ctx, ok); err != nil || ver != 2 {
		t.Fatalf("second commit: %d, %v", ver, err)
	}
	old, err := p.c.Get(ctx, 1, root.Key)
	if err != nil || len(old) != 1 || string(old[0].Sealed) != "root v1" {
		t.Fatalf("get at 1: %+v, %v", old, err)
	}
	log, err := p.c.Log(ctx, root.Key, 10)
	if err != nil || len(log) != 2 || log[0].Version != 2 || log[0].Writer.IsZero() {
		t.Fatalf("log: %+v, %v", log, err)
	}
	rcs, err := p.c.Readcaps(ctx, p.client.nodeID)
	if err != nil || len(rcs) != 0 {
		t.Fatalf("readcaps: %v, %v", rcs, err)
	}
}

func TestUnreachableHost(t *testing.T) {
	p := newPair(t)
	ctx := nettest.Context(t, 30*time.Second)
	watch, err := p.c.Watch(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	p.hostN.xch.Close()
	p.hostN.node.Close()
	select {
	case _, ok := <-watch:
		if ok {
			t.Fatal("a change from a closed host")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watch channel still open 10 s after the host closed")
	}
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := p.c.Info(cctx); !errors.Is(err, fsys.ErrUnavailable) {
		t.Fatalf("info from a closed host: %v", err)
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestForeignDomainRefused(t *testing.T) {
	p := newPair(t)
	other := nettest.NewDomain(t)
	f := startNode(t, other, "stranger", p.hostN.node.AddrInfo())
	ctx := nettest.Context(t, 20*time.Second)
	if err := f.node.Host().Connect(ctx, p.hostN.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	_, _, err := Dial(ctx, f.node, p.hostN.node.ID(), p.vol, nil)
	if !errors.Is(err, fsys.ErrPermission) {
		t.Fatalf("a peer of another domain without a readcap: %v", err)
	}
}

func TestLocate(t *testing.T) {
	d := nettest.NewDomain(t)
	vol := d.Path(t)
	n0 := startNode(t, d, "n0")
	n1 := startNode(t, d, "n1", n0.node.AddrInfo())
	n2 := startNode(t, d, "n2", n0.node.AddrInfo())
	srv, _ := hostVolume(t, d, n0, vol)
	sub := d.Path(t, "n2", "docs")
	srv2, _ := hostVolume(t, d, n2, sub)
	ctx := nettest.Context(t, 60*time.Second)
	var wg sync.WaitGroup
	for _, s := range []*Server{srv, srv2} {
		wg.Go(func() { _ = s.Serve(ctx) })
	}
	t.Cleanup(func() { srv.Close(); srv2.Close(); wg.Wait() })

	t.Run("root-host", func(t *testing.T) {
		l := NewLocator(n1.node, LocatorConfig{RootHost: func(paths.ID) paths.Path { return n0.node.Path() }, LookupTimeout: 5 * time.Second})
		// n1 reaches the root host by its path once n0's record is in the
		// DHT; until then Locate fails (and does not cache the miss).
		var (
			v   Volume
			err error
		)
		nettest.WaitFor(t, 30*time.Second, "the root host", func() bool {
			v, err = l.Locate(ctx, d.Path(t, "a", "b"))
			return err == nil
		})
		if v.Path != vol || v.Local {
			t.Fatalf("locate: %+v, %v", v, err)
		}
		if _, err := v.Host.Info(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("providers", func(t *testing.T) {
		l := NewLocator(n1.node, LocatorConfig{LookupTimeout: 5 * time.Second})
		nettest.WaitFor(t, 30*time.Second, "provider records", func() bool {
			v, err := l.Locate(ctx, d.Path(t, "n2", "docs", "x"))
			if err != nil || v.Path != sub {
				l.Forget(sub)
				l.Forget(vol)
				return false
			}
			return true
		})
		v, err := l.Locate(ctx, d.Path(t, "n1"))
		if err != nil || v.Path != vol {
			t.Fatalf("locate /n1: %+v, %v", v, err)
		}
	})
	t.Run("local", func(t *testing.T) {
		l := NewLocator(n0.node, LocatorConfig{Local: srv.Volume})
		v, err := l.Locate(ctx, d.Path(t, "z"))
		if err != nil || !v.Local || v.Path != vol {
			t.Fatalf("locate local: %+v, %v", v, err)
		}
	})
	t.Run("nowhere", func(t *testing.T) {
		other := nettest.NewDomain(t)
		l := NewLocator(n1.node, LocatorConfig{LookupTimeout: 2 * time.Second})
		if _, err := l.Locate(ctx, other.Path(t, "a")); !errors.Is(err, fsys.ErrUnavailable) {
			t.Fatalf("locate in an unhosted domain: %v", err)
		}
	})
}

// BenchmarkInfo times one Info round trip (a stream per call) against the
// anchor p2p Ping (also a stream per round trip, no payload decoding).
func BenchmarkInfo(b *testing.B) {
	d := nettest.NewDomain(b)
	n0 := startNode(b, d, "n0")
	n1 := startNode(b, d, "n1", n0.node.AddrInfo())
	hostVolume(b, d, n0, d.Path(b))
	ctx := context.Background()
	c, _, err := Dial(ctx, n1.node, n0.node.ID(), d.Path(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	nettest.WaitFor(b, 20*time.Second, "record", func() bool { return n0.node.Published().Seq != 0 })
	var ping, info time.Duration
	b.Run("anchor=ping", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			if _, err := n1.node.Ping(ctx, n0.node.Path()); err != nil {
				b.Fatal(err)
			}
		}
		ping = time.Since(start) / time.Duration(b.N)
	})
	b.Run("info", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			if _, err := c.Info(ctx); err != nil {
				b.Fatal(err)
			}
		}
		info = time.Since(start) / time.Duration(b.N)
	})
	if ping > 0 {
		b.Logf("info %v per call, ping %v: ratio %.2f", info, ping, float64(info)/float64(ping))
	}
}

// TestCommitNoSyncAndSync: an unsynced commit over the wire is visible at
// the host at once and conflicts as usual; Sync makes it durable; Sync
// beyond the volume's version is ErrIntegrity; a host that predates the
// request (here: one whose fsys.Host is no Syncer, and a refusal) still
// works.
func TestCommitNoSyncAndSync(t *testing.T) {
	p := newPair(t)
	ctx := nettest.Context(t, 30*time.Second)
	root := p.rootRecord("root v1")
	ver, err := p.c.CommitNoSync(ctx, signedTx(t, p.client, p.w, p.vol, []fsys.Base{{Key: root.Key}}, root))
	if err != nil || ver != 1 {
		t.Fatalf("commit nosync: %d, %v", ver, err)
	}
	if got, err := p.h.Get(ctx, 0, root.Key); err != nil || len(got) != 1 || got[0].Version != 1 {
		t.Fatalf("not visible at the host: %v, %v", got, err)
	}
	stale := signedTx(t, p.client, p.w, p.vol, []fsys.Base{{Key: root.Key}}, p.rootRecord("root v2"))
	if _, err := p.c.CommitNoSync(ctx, stale); !errors.Is(err, fsys.ErrConflict) {
		t.Fatalf("stale commit: %v", err)
	}
	if err := p.c.Sync(ctx, ver); err != nil {
		t.Fatal(err)
	}
	if err := p.c.Sync(ctx, ver+5); !errors.Is(err, fsys.ErrIntegrity) {
		t.Fatalf("sync beyond the volume: %v", err)
	}
	if p.c.syncAll.Load() {
		t.Fatal("client fell back to synced commits against a current host")
	}
	// A host whose volume is no Syncer: CommitNoSync commits durably, Sync
	// has nothing to do.
	p.srv.mu.Lock()
	p.srv.vols[p.vol].host = plainHost{p.h}
	p.srv.mu.Unlock()
	next := signedTx(t, p.client, p.w, p.vol, []fsys.Base{{Key: root.Key, Version: 1}}, p.rootRecord("root v2"))
	if ver, err = p.c.CommitNoSync(ctx, next); err != nil || ver != 2 {
		t.Fatalf("commit nosync to a plain host: %d, %v", ver, err)
	}
	if err := p.c.Sync(ctx, ver); err != nil {
		t.Fatal(err)
	}
	// A host that refuses the request as a protocol error (it predates
	// it): the client falls back for good.
	if !refusedAsProtocol(kindErr(kindProtocol, "unknown op 8")) || refusedAsProtocol(kindErr(kindInvalid, "x")) {
		t.Fatal("refusedAsProtocol")
	}
}

type plainHost struct{ fsys.Host }
