package client_test

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/leveldb"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/client"
	"blocktree.dev/bt/fsys/host"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// testVolume is a domain, a volume /<root>/data and its in-process host.
type testVolume struct {
	d         *nettest.Domain
	vol       paths.Path
	hostDir   string
	storeDir  string
	hostStore blocks.PinStore
	host      *host.Host
	durable   bool
	// h is what clients see: a proxy to host, which tests may reopen.
	h  fsys.Host
	mu sync.Mutex
	// stores are the nodes' block stores, where haveBlocks looks.
	stores []blocks.Store
}

// haveBlocks copies a committer's blocks into the host store: what a
// remote host's fetch does.
func (tv *testVolume) haveBlocks(ctx context.Context, tx *fsys.Tx, cids []cid.Cid) error {
	tv.mu.Lock()
	stores := tv.stores
	tv.mu.Unlock()
	return haveBlocksFrom(tv.hostStore, stores...)(ctx, tx, cids)
}

// proxy forwards to the volume's current host.
type proxy struct{ tv *testVolume }

func (p proxy) cur() *host.Host {
	p.tv.mu.Lock()
	defer p.tv.mu.Unlock()
	return p.tv.host
}

func (p proxy) Info(ctx context.Context) (fsys.VolumeInfo, error) { return p.cur().Info(ctx) }
func (p proxy) Get(ctx context.Context, at uint64, keys ...fsys.RecordKey) ([]fsys.Record, error) {
	return p.cur().Get(ctx, at, keys...)
}
func (p proxy) List(ctx context.Context, at uint64, dir fsys.Ino) ([]fsys.Record, error) {
	return p.cur().List(ctx, at, dir)
}
func (p proxy) Commit(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	return p.cur().Commit(ctx, tx)
}
func (p proxy) CommitNoSync(ctx context.Context, tx *fsys.Tx) (uint64, error) {
	return p.cur().CommitNoSync(ctx, tx)
}
func (p proxy) Sync(ctx context.Context, version uint64) error { return p.cur().Sync(ctx, version) }
func (p proxy) Readcaps(ctx context.Context, reader paths.ID) ([]fsys.Readcap, error) {
	return p.cur().Readcaps(ctx, reader)
}
func (p proxy) Log(ctx context.Context, key fsys.RecordKey, limit int) ([]fsys.LogEntry, error) {
	return p.cur().Log(ctx, key, limit)
}
func (p proxy) Watch(ctx context.Context, after uint64) (<-chan fsys.Change, error) {
	return p.cur().Watch(ctx, after)
}

// newTestVolume makes a volume; durable: leveldb stores on disk, else
// memstores (the host index is always goleveldb).
func newTestVolume(t testing.TB, durable bool) *testVolume {
	t.Helper()
	tv := &testVolume{d: nettest.NewDomain(t), durable: durable}
	tv.vol = tv.d.Path(t, "data")
	dir := t.TempDir()
	tv.hostDir = filepath.Join(dir, "host")
	tv.storeDir = filepath.Join(dir, "blocks")
	if durable {
		s, err := leveldb.Open(tv.storeDir)
		if err != nil {
			t.Fatal(err)
		}
		tv.hostStore = s
	} else {
		tv.hostStore = memstore.New()
	}
	t.Cleanup(func() { tv.hostStore.Close() })
	tv.open(t)
	return tv
}

func (tv *testVolume) open(t testing.TB) {
	t.Helper()
	h, err := host.Open(host.Config{Dir: tv.hostDir, Volume: tv.vol, Node: tv.d.Path(t, "server"), Store: tv.hostStore,
		HaveBlocks: tv.haveBlocks, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	tv.mu.Lock()
	tv.host = h
	tv.mu.Unlock()
	if tv.h == nil {
		tv.h = proxy{tv}
	}
}

// testNode is one node with its own block store and client.
type testNode struct {
	key   *softkey.Key
	id    paths.ID
	path  paths.Path
	wc    *caps.Writecap
	store blocks.PinStore
	c     *client.Client
	hk    crypto.PrivKey
	cert  *caps.HostCert
}

// newNode makes a node name with a writecap for the volume (write) or
// for its own path only.
func (tv *testVolume) newNode(t testing.TB, name string, write bool) *testNode {
	t.Helper()
	n := &testNode{key: nettest.NewKey(t)}
	n.id = nettest.PrincipalID(t, n.key.PublicKey())
	n.path = tv.d.Path(t, name)
	if write {
		n.wc = tv.d.GrantDay(t, n.id, tv.vol)
	} else {
		n.wc = tv.d.GrantDay(t, n.id, n.path)
	}
	tv.startNode(t, n, nil)
	return n
}

// newNodeWithKey is a fresh start (new store, new client) of old's node.
func (tv *testVolume) newNodeWithKey(t testing.TB, name string, old *testNode) *testNode {
	t.Helper()
	n := &testNode{key: old.key, id: old.id, path: old.path, wc: old.wc}
	tv.startNode(t, n, nil)
	return n
}

func (tv *testVolume) startNode(t testing.TB, n *testNode, mod func(*client.Config)) {
	t.Helper()
	if tv.durable {
		s, err := leveldb.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		n.store = s
	} else {
		n.store = memstore.New()
	}
	t.Cleanup(func() { n.store.Close() })
	tv.mu.Lock()
	tv.stores = append(tv.stores, n.store)
	tv.mu.Unlock()
	hk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := caps.IssueHostCert(context.Background(), n.key, hk.GetPublic(), now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	n.hk, n.cert = hk, cert
	n.c = newClientWith(t, tv, n, mod)
}

// newClientWith makes a client for n, with mod changing its config.
func newClientWith(t testing.TB, tv *testVolume, n *testNode, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{
		Node: n.path, NodeID: n.id, HostKey: n.hk, HostCert: n.cert, Writecap: n.wc,
		Decapsulate: n.key.ECDH, Store: n.store,
		Fetch: func(ctx context.Context, cids []cid.Cid, _ paths.Path) error {
			for _, id := range cids {
				data, err := tv.hostStore.Get(ctx, id)
				if err != nil {
					return err
				}
				if err := n.store.Put(ctx, blocks.Block{CID: id, Data: data}); err != nil {
					return err
				}
			}
			return nil
		},
		Locate: func(ctx context.Context, p paths.Path) (fsys.Host, paths.Path, error) {
			if !p.HasPrefix(tv.vol) {
				return nil, paths.Path{}, fsys.ErrNotExist
			}
			return tv.h, tv.vol, nil
		},
		Log: nettest.Logger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// haveBlocks copies a committer's blocks into the host store: what a
// remote host's fetch does.
func haveBlocksFrom(hostStore blocks.Store, stores ...blocks.Store) func(ctx context.Context, tx *fsys.Tx, cids []cid.Cid) error {
	return func(ctx context.Context, tx *fsys.Tx, cids []cid.Cid) error {
		for _, id := range cids {
			if ok, _ := hostStore.Has(ctx, id); ok {
				continue
			}
			var err error = blocks.ErrNotFound
			for _, s := range stores {
				var data []byte
				if data, err = s.Get(ctx, id); err == nil {
					err = hostStore.Put(ctx, blocks.Block{CID: id, Data: data})
					break
				}
			}
			if err != nil {
				return err
			}
		}
		return nil
	}
}

func ctxT(t testing.TB) context.Context { return nettest.Context(t, 60*time.Second) }

// must returns v, or panics (failing the test) on an error.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error = %v, want %v", err, want)
	}
}

// setup makes a durable (or not) volume, one writing node whose client
// initialised the volume, and returns the root.
func setup(t testing.TB, durable bool) (*testVolume, *testNode, fsys.Attr) {
	t.Helper()
	tv := newTestVolume(t, durable)
	n := tv.newNode(t, "laptop", true)
	tv.reopenWithBlocks(t, n)
	ctx := ctxT(t)
	if err := n.c.InitVolume(ctx, tv.h, 0o755); err != nil {
		t.Fatal(err)
	}
	root := must(n.c.Walk(ctx, tv.vol))
	return tv, n, root
}

// reopenWithBlocks is kept for the tests' readability: the host always
// fetches from every node's store.
func (tv *testVolume) reopenWithBlocks(t testing.TB, nodes ...*testNode) {}

func join(t testing.TB, p paths.Path, comps ...string) paths.Path {
	t.Helper()
	q, err := p.Join(comps...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
