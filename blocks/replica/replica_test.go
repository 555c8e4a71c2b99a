package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/paths"
)

// These are unit tests of the service's logic over an in-memory store and
// an in-memory exchange; integration/blocks_test.go runs it in real
// daemons over the real exchange.

// fakeNet is a set of remote nodes, each with its own store.
type fakeNet struct {
	mu        sync.Mutex
	stores    map[peer.ID]*memstore.Store
	failing   map[peer.ID]bool
	providers map[cid.Cid][]peer.ID
}

func newFakeNet() *fakeNet {
	return &fakeNet{stores: map[peer.ID]*memstore.Store{}, failing: map[peer.ID]bool{}, providers: map[cid.Cid][]peer.ID{}}
}

// fakeExchange is one node's view of fakeNet.
type fakeExchange struct {
	net   *fakeNet
	self  peer.ID
	local blocks.PinStore
}

func (x *fakeExchange) Fetch(ctx context.Context, cids []cid.Cid, where exchange.Where, fn func(blocks.Block) error) error {
	x.net.mu.Lock()
	defer x.net.mu.Unlock()
	var missing int
	for _, c := range cids {
		found := false
		for _, p := range x.net.providers[where.Root] {
			if p == x.self || x.net.failing[p] {
				continue
			}
			data, err := x.net.stores[p].Get(ctx, c)
			if err != nil {
				continue
			}
			if err := x.local.Put(ctx, blocks.Block{CID: c, Data: data}); err != nil {
				return err
			}
			if err := fn(blocks.Block{CID: c, Data: data}); err != nil {
				return err
			}
			found = true
			break
		}
		if !found {
			missing++
		}
	}
	if missing > 0 {
		return fmt.Errorf("fake exchange: %d blocks: %w", missing, blocks.ErrNotFound)
	}
	return nil
}

func (x *fakeExchange) Provide(ctx context.Context, root cid.Cid) error {
	x.net.mu.Lock()
	defer x.net.mu.Unlock()
	if !slices.Contains(x.net.providers[root], x.self) {
		x.net.providers[root] = append(x.net.providers[root], x.self)
	}
	return nil
}

func (x *fakeExchange) Replicate(ctx context.Context, p peer.ID, pin string, root cid.Cid, cids []cid.Cid) error {
	x.net.mu.Lock()
	defer x.net.mu.Unlock()
	if x.net.failing[p] {
		return errors.New("unreachable")
	}
	dst := x.net.stores[p]
	for _, c := range cids {
		data, err := x.local.Get(ctx, c)
		if err != nil {
			return err
		}
		if err := dst.Put(ctx, blocks.Block{CID: c, Data: data}); err != nil {
			return err
		}
	}
	if err := dst.Pin(ctx, ReplicaPinPrefix+pin, cids); err != nil {
		return err
	}
	x.net.providers[root] = append(x.net.providers[root], p)
	return nil
}

// testNode is a service with its store in fakeNet.
type testNode struct {
	id    peer.ID
	store *memstore.Store
	svc   *Service
}

func (n *fakeNet) node(t *testing.T, name string, members func() []Member, pol Policy) *testNode {
	t.Helper()
	id := peer.ID(name)
	st := memstore.New()
	n.mu.Lock()
	n.stores[id] = st
	n.mu.Unlock()
	svc := New(st, &fakeExchange{net: n, self: id, local: st}, members, Config{Policy: pol, ScrubInterval: -1})
	return &testNode{id: id, store: st, svc: svc}
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readBack(t *testing.T, n *testNode, res PutResult) []byte {
	t.Helper()
	var out bytes.Buffer
	if err := n.svc.Get(context.Background(), res.Root, res.Key, exchange.Where{}, &out); err != nil {
		t.Fatalf("Get: %v", err)
	}
	return out.Bytes()
}

func TestPutGetLocal(t *testing.T) {
	net := newFakeNet()
	a := net.node(t, "a", func() []Member { return nil }, Policy{})
	data := randomBytes(1, 600<<10)
	res, err := a.svc.Put(context.Background(), bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != uint64(len(data)) || res.Blocks != 3 || len(res.Replicas) != 0 {
		t.Fatalf("Put = %+v", res)
	}
	if got := readBack(t, a, res); !bytes.Equal(got, data) {
		t.Fatal("read back differs")
	}
	st, err := a.store.Stat(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Blocks != 4 || st.Pins != 1 || st.PinnedBlocks != 4 {
		t.Fatalf("Stat = %+v, want 4 blocks (3 chunks + manifest) under 1 pin", st)
	}
	// A wrong key: an integrity error, no plaintext.
	var out bytes.Buffer
	bad := slices.Clone(res.Key)
	bad[0] ^= 1
	if err := a.svc.Get(context.Background(), res.Root, bad, exchange.Where{}, &out); !errors.Is(err, blocks.ErrIntegrity) || out.Len() != 0 {
		t.Fatalf("Get with a wrong key: %v (%d bytes out)", err, out.Len())
	}
	// A root that is a chunk, not a manifest.
	if err := a.svc.Get(context.Background(), mustPinned(t, a.store, res.Root)[1], res.Key, exchange.Where{}, &out); !errors.Is(err, ErrBadRoot) {
		t.Fatalf("Get of a chunk as a root: %v, want ErrBadRoot", err)
	}
}

func mustPinned(t *testing.T, s blocks.PinStore, root cid.Cid) []cid.Cid {
	t.Helper()
	var out []cid.Cid
	for c, err := range s.Pinned(context.Background(), FilePinPrefix+root.String()) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	// The manifest first, then the chunks, whatever order the store keeps.
	slices.SortFunc(out, func(a, b cid.Cid) int {
		switch {
		case a == root:
			return -1
		case b == root:
			return 1
		}
		return bytes.Compare(a.Bytes(), b.Bytes())
	})
	return out
}

func TestReplicateReplacesFailedCandidates(t *testing.T) {
	net := newFakeNet()
	var members []Member
	for _, name := range []string{"b", "c", "d", "e"} {
		net.node(t, name, nil, Policy{})
		members = append(members, Member{ID: peer.ID(name), Path: paths.MustParse("/12D3KooWLTgYd1kyoJmRkYEvtPGDjzGgbWzp1yYMYK6cRCWpQrxg/" + name)})
	}
	a := net.node(t, "a", func() []Member { return members }, Policy{})
	data := randomBytes(2, 100<<10)
	// Fail the first choice for this file.
	probe, err := a.svc.Put(context.Background(), bytes.NewReader(data), PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_ = probe
	order := Placement(probe.Root, members)
	net.failing[order[0].ID] = true
	res, err := a.svc.Put(context.Background(), bytes.NewReader(data), PutOptions{Replicas: 3})
	if err != nil {
		t.Fatalf("Put at factor 3 with one of four members failing: %v", err)
	}
	if len(res.Replicas) != 2 || slices.Contains(res.Replicas, order[0].Path) {
		t.Fatalf("replicas %v; the failing %s must have been replaced", res.Replicas, order[0].Path)
	}
	for _, p := range res.Replicas {
		st := net.stores[peer.ID(p.Base())]
		if ok, _ := st.IsPinned(context.Background(), res.Root); !ok {
			t.Errorf("%s does not pin the root", p)
		}
	}
	// Not enough members: ErrReplication, and the file is still here.
	res, err = a.svc.Put(context.Background(), bytes.NewReader(data), PutOptions{Replicas: 5})
	if !errors.Is(err, ErrReplication) || !res.Root.Defined() || len(res.Replicas) != 3 {
		t.Fatalf("Put at factor 5 with 3 working members: %+v, %v", res, err)
	}
	if got := readBack(t, a, res); !bytes.Equal(got, data) {
		t.Fatal("a file whose replication failed does not read back locally")
	}
}

func TestPlacementIsStable(t *testing.T) {
	root := blocks.Sum([]byte("root"))
	var ms []Member
	for i := range 8 {
		ms = append(ms, Member{ID: peer.ID(fmt.Sprintf("peer-%d", i))})
	}
	a := Placement(root, ms)
	rev := slices.Clone(ms)
	slices.Reverse(rev)
	b := Placement(root, append(rev, ms[0])) // order and duplicates do not matter
	if !slices.Equal(a, b) {
		t.Fatalf("placement depends on input order: %v vs %v", a, b)
	}
	// Removing a member keeps the others' relative order.
	c := Placement(root, slices.DeleteFunc(slices.Clone(ms), func(m Member) bool { return m.ID == a[0].ID }))
	if !slices.Equal(c, a[1:]) {
		t.Fatalf("removing the first choice reordered the rest: %v vs %v", c, a[1:])
	}
}

func TestPolicy(t *testing.T) {
	root := "/12D3KooWLTgYd1kyoJmRkYEvtPGDjzGgbWzp1yYMYK6cRCWpQrxg"
	pol := Policy{Default: 2, ByPath: map[paths.Path]int{
		paths.MustParse(root + "/photos"):     3,
		paths.MustParse(root + "/photos/raw"): 1,
	}}
	for _, tc := range []struct {
		path string
		want int
	}{
		{"", 2}, {root + "/docs", 2}, {root + "/photos", 3}, {root + "/photos/2026/a.jpg", 3},
		{root + "/photos/raw/x", 1}, {root + "/photosx", 2},
	} {
		var p paths.Path
		if tc.path != "" {
			p = paths.MustParse(tc.path)
		}
		if got := pol.Factor(p); got != tc.want {
			t.Errorf("Factor(%q) = %d, want %d", tc.path, got, tc.want)
		}
	}
	if (Policy{}).Factor(paths.Path{}) != 1 {
		t.Error("the zero policy's factor is not 1")
	}
	if err := (Policy{ByPath: map[paths.Path]int{paths.MustParse(root): 17}}).Validate(); err == nil {
		t.Error("factor 17 accepted")
	}
}

// corruptStore reports chosen blocks as corrupt, as a damaged disk would.
type corruptStore struct {
	*memstore.Store
	mu      sync.Mutex
	corrupt map[cid.Cid]bool
}

func (s *corruptStore) Get(ctx context.Context, c cid.Cid) ([]byte, error) {
	s.mu.Lock()
	bad := s.corrupt[c]
	s.mu.Unlock()
	if bad {
		return nil, fmt.Errorf("corrupt %s: %w", c, blocks.ErrIntegrity)
	}
	return s.Store.Get(ctx, c)
}

func (s *corruptStore) Delete(ctx context.Context, c cid.Cid) error {
	s.mu.Lock()
	delete(s.corrupt, c)
	s.mu.Unlock()
	return s.Store.Delete(ctx, c)
}

func TestScrubRepairsFromReplicas(t *testing.T) {
	net := newFakeNet()
	net.node(t, "b", nil, Policy{})
	members := []Member{{ID: "b", Path: paths.MustParse("/12D3KooWLTgYd1kyoJmRkYEvtPGDjzGgbWzp1yYMYK6cRCWpQrxg/b")}}
	a := net.node(t, "a", func() []Member { return members }, Policy{Default: 2})
	cs := &corruptStore{Store: a.store, corrupt: map[cid.Cid]bool{}}
	a.svc = New(cs, &fakeExchange{net: net, self: a.id, local: cs}, func() []Member { return members }, Config{Policy: Policy{Default: 2}, ScrubInterval: -1})
	data := randomBytes(3, 700<<10)
	res, err := a.svc.Put(context.Background(), bytes.NewReader(data), PutOptions{})
	if err != nil || len(res.Replicas) != 1 {
		t.Fatalf("Put: %+v, %v", res, err)
	}
	pinned := mustPinned(t, cs, res.Root)
	cs.corrupt[pinned[1]] = true
	if err := cs.Store.Delete(context.Background(), pinned[2]); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var last VerifyProgress
	v, err := a.svc.Verify(ctx, func(p VerifyProgress) { last = p })
	if err != nil {
		t.Fatal(err)
	}
	if v.Checked != 3 || len(v.Corrupt) != 1 || len(v.Missing) != 1 || v.Corrupt[0] != pinned[1].String() || v.Missing[0] != pinned[2].String() {
		t.Fatalf("Verify = %+v", v)
	}
	if last.Checked != 3 || last.Total != 3 || last.Corrupt != 1 {
		t.Fatalf("last progress %+v", last)
	}
	s, err := a.svc.Scrub(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Repaired) != 2 || len(s.Missing) != 0 {
		t.Fatalf("Scrub = %+v, want both blocks repaired", s)
	}
	if v, err := a.svc.Verify(ctx, nil); err != nil || len(v.Corrupt)+len(v.Missing) != 0 || v.Checked != 4 {
		t.Fatalf("Verify after scrub = %+v, %v", v, err)
	}
	// With the replica gone too, scrub reports what it could not repair.
	cs.corrupt[pinned[3]] = true
	net.failing["b"] = true
	s, err = a.svc.Scrub(ctx, nil)
	if err != nil || len(s.Missing) != 1 || s.Missing[0] != pinned[3].String() {
		t.Fatalf("Scrub without replicas = %+v, %v", s, err)
	}
}
