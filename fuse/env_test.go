package fuse

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"blocktree.dev/bt/blocks/leveldb"
	"blocktree.dev/bt/fsys"
	"blocktree.dev/bt/fsys/client"
	"blocktree.dev/bt/fsys/host"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
)

// testEnv is a file system to mount: the real client.Client of a node over
// the in-process host of its domain's volume, on goleveldb stores in
// t.TempDir().
type testEnv struct {
	fs     *client.Client
	self   paths.ID
	domain *nettest.Domain
	vol    paths.Path
	host   *host.Host
	store  *leveldb.Store
	// hosts are the volumes the clients can locate, by domain root.
	hosts map[paths.ID]*host.Host
}

// newTestEnv makes a domain, a node "a" that hosts the domain's root
// volume, and a's client.
func newTestEnv(t testing.TB) *testEnv {
	t.Helper()
	ctx := nettest.Context(t, time.Minute)
	d := nettest.NewDomain(t)
	e := &testEnv{self: d.ID, domain: d, vol: d.Path(t), hosts: map[paths.ID]*host.Host{}}
	store, err := leveldb.Open(filepath.Join(t.TempDir(), "blocks"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	node := d.Path(t, "a")
	h, err := host.Open(host.Config{Dir: filepath.Join(t.TempDir(), "volume"), Volume: e.vol, Node: node, Store: store, Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	e.host = h
	e.hosts[d.ID] = h
	e.store = store
	e.fs, _ = e.client(t, "a", e.vol, store)
	if err := e.fs.InitVolume(ctx, h, 0o755); err != nil {
		t.Fatal(err)
	}
	return e
}

// client makes the client of node name in e's domain, with a writecap
// for prefix, over store.
func (e *testEnv) client(t testing.TB, name string, prefix paths.Path, store *leveldb.Store) (*client.Client, paths.ID) {
	t.Helper()
	key := nettest.NewKey(t)
	path := e.domain.Path(t, name)
	w := e.domain.GrantDay(t, nettest.PrincipalID(t, key.PublicKey()), prefix)
	id, err := p2p.NewIdentity(context.Background(), key, w, path, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{
		Node:        path,
		NodeID:      nettest.PrincipalID(t, key.PublicKey()),
		HostKey:     id.HostKey,
		HostCert:    id.Cert,
		Writecap:    w,
		Decapsulate: key.ECDH,
		Store:       store,
		Locate: func(ctx context.Context, p paths.Path) (fsys.Host, paths.Path, error) {
			h, ok := e.hosts[p.Root()]
			if !ok {
				return nil, paths.Path{}, fmt.Errorf("locate %s: %w", p, fsys.ErrNotExist)
			}
			return h, p.RootPath(), nil
		},
		Log: nettest.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, nettest.PrincipalID(t, key.PublicKey())
}

// unreadable returns the root ID of another domain, hosted where e's
// clients can locate it, that e's node holds no readcap for.
func (e *testEnv) unreadable(t testing.TB) paths.ID {
	t.Helper()
	ctx := nettest.Context(t, time.Minute)
	other := newTestEnv(t)
	root, err := other.fs.Root(ctx, other.self)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.fs.Create(ctx, root.Ino, "secret", 0o600, true); err != nil {
		t.Fatal(err)
	}
	e.hosts[other.self] = other.host
	return other.self
}

// peer makes a second node of e's domain, "b", with a readcap and a
// writecap for the whole volume, whose client shares e's host and block
// store: "another node" for invalidation tests.
func (e *testEnv) peer(t testing.TB) *client.Client {
	t.Helper()
	ctx := nettest.Context(t, time.Minute)
	c, id := e.client(t, "b", e.vol, e.store)
	if _, err := e.fs.Grant(ctx, e.vol, id, fsys.RightRead, time.Time{}); err != nil {
		t.Fatal(err)
	}
	return c
}
