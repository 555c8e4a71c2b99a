package wasm

import (
	"context"
	"crypto/rand"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/client"
	"blocktree.dev/bt/fsys/host"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

// testVolume is a volume /<root>/data on an in-process fsys host, and
// real fsys clients for nodes of the domain (as in fsys's own tests).
type testVolume struct {
	d         *nettest.Domain
	vol       paths.Path
	hostStore blocks.PinStore
	h         *host.Host
	stores    []blocks.Store
}

func newTestVolume(t testing.TB, d *nettest.Domain) *testVolume {
	t.Helper()
	tv := &testVolume{d: d, vol: d.Path(t, "data"), hostStore: memstore.New()}
	t.Cleanup(func() { tv.hostStore.Close() })
	h, err := host.Open(host.Config{Dir: t.TempDir(), Volume: tv.vol, Node: d.Path(t, "server"), Store: tv.hostStore,
		HaveBlocks: func(ctx context.Context, tx *fsys.Tx, cids []cid.Cid) error {
			for _, id := range cids {
				if ok, _ := tv.hostStore.Has(ctx, id); ok {
					continue
				}
				var err error = blocks.ErrNotFound
				for _, s := range tv.stores {
					var data []byte
					if data, err = s.Get(ctx, id); err == nil {
						err = tv.hostStore.Put(ctx, blocks.Block{CID: id, Data: data})
						break
					}
				}
				if err != nil {
					return err
				}
			}
			return nil
		}, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	tv.h = h
	return tv
}

// fsNode is a node's fsys client.
type fsNode struct {
	id paths.ID
	c  *client.Client
}

// client makes a fsys client for node name, with a writecap for the
// volume.
func (tv *testVolume) client(t testing.TB, name string) *fsNode {
	t.Helper()
	key := nettest.NewKey(t)
	id := nettest.PrincipalID(t, key.PublicKey())
	store := memstore.New()
	t.Cleanup(func() { store.Close() })
	tv.stores = append(tv.stores, store)
	hk, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert, err := caps.IssueHostCert(context.Background(), key, hk.GetPublic(), now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{
		Node: tv.d.Path(t, name), NodeID: id, HostKey: hk, HostCert: cert, Writecap: tv.d.GrantDay(t, id, tv.vol),
		Decapsulate: key.ECDH, Store: store,
		Fetch: func(ctx context.Context, cids []cid.Cid, _ paths.Path) error {
			for _, c := range cids {
				data, err := tv.hostStore.Get(ctx, c)
				if err != nil {
					return err
				}
				if err := store.Put(ctx, blocks.Block{CID: c, Data: data}); err != nil {
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
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &fsNode{id: id, c: c}
}
