package exchange

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/p2p/p2ptest"
)

// Tests run in-process libp2p nodes on 127.0.0.1 (TCP), NAT traversal and
// mDNS off, p2p.Config.Loopback on, each with an Exchange over an
// in-memory store. Set BT_TEST_LOG=1 to see their debug logs.

// testNode is a running p2p node with an Exchange on it.
type testNode struct {
	*Exchange
	node  *p2p.Node
	store blocks.PinStore
	stop  func() // closes the exchange and the node, once
}

// newStore returns an empty in-memory PinStore: memstore once it
// implements blocks.PinStore, and until then memstore with the pins kept
// beside it (pinStore).
func newStore() blocks.PinStore {
	if ps, ok := any(memstore.New()).(blocks.PinStore); ok {
		return ps
	}
	return &pinStore{Store: memstore.New(), pins: make(map[string][]cid.Cid)}
}

// start runs a node named name in d, bootstrapped to bs, with an Exchange
// configured by cfg; both close at cleanup (or by stop).
func start(t testing.TB, d *nettest.Domain, name string, cfg Config, bs ...peer.AddrInfo) *testNode {
	t.Helper()
	pn := p2ptest.Start(t, d, name, p2ptest.WithBootstrap(bs...))
	if cfg.Log == nil {
		cfg.Log = nettest.Logger()
	}
	st := newStore()
	x, err := New(pn.Node, st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Exchange: x, node: pn.Node, store: st}
	var once sync.Once
	tn.stop = func() {
		once.Do(func() {
			if err := x.Close(); err != nil {
				t.Errorf("close exchange %s: %v", pn.Path(), err)
			}
			pn.Close()
			_ = st.Close()
		})
	}
	t.Cleanup(tn.stop)
	return tn
}

// cluster starts n nodes of d named n0, n1, …, each bootstrapped to the
// first, and waits until all have published their records.
func cluster(t testing.TB, d *nettest.Domain, n int, cfg Config) []*testNode {
	t.Helper()
	nodes := []*testNode{start(t, d, "n0", cfg)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, start(t, d, fmt.Sprintf("n%d", i), cfg, nodes[0].node.AddrInfo()))
	}
	waitPublished(t, nodes...)
	return nodes
}

// waitPublished waits until every node's record has reached the DHT.
func waitPublished(t testing.TB, nodes ...*testNode) {
	t.Helper()
	for _, n := range nodes {
		p2ptest.WaitPublished(t, n.node)
	}
}

// makeBlocks returns n random blocks of size bytes each.
func makeBlocks(t testing.TB, n, size int) []blocks.Block {
	t.Helper()
	out := make([]blocks.Block, n)
	for i := range out {
		data := make([]byte, size)
		_, _ = rand.Read(data)
		b, err := blocks.NewBlock(data)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

func cidsOf(bs []blocks.Block) []cid.Cid {
	out := make([]cid.Cid, len(bs))
	for i, b := range bs {
		out[i] = b.CID
	}
	return out
}

// put stores bs in st.
func put(t testing.TB, st blocks.Store, bs []blocks.Block) {
	t.Helper()
	for _, b := range bs {
		if err := st.Put(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
}

// collect fetches cids and returns the blocks fn saw, checking each once.
func collect(t testing.TB, ctx context.Context, x *Exchange, cids []cid.Cid, where Where) (map[cid.Cid][]byte, error) {
	t.Helper()
	got := make(map[cid.Cid][]byte)
	err := x.Fetch(ctx, cids, where, func(b blocks.Block) error {
		if _, dup := got[b.CID]; dup {
			return fmt.Errorf("block %s passed twice", b.CID)
		}
		if err := blocks.Verify(b.CID, b.Data); err != nil {
			return err
		}
		got[b.CID] = b.Data
		return nil
	})
	return got, err
}

// statOf returns x's stat of p (zero if none).
func statOf(x *Exchange, p peer.ID) PeerStat {
	for _, s := range x.PeerStats() {
		if s.Peer == p {
			return s
		}
	}
	return PeerStat{Peer: p}
}

// testLiars are the lying servers of lie.go, for in-process tests in the
// default build (lie.go is compiled only with the bt_liar tag).
var testLiars = map[string]liar{
	"wrong": func(_ context.Context, l lie) error {
		return writeBlock(l.W, new([]byte), l.C, randomBytes(max(len(l.Data), 1024)))
	},
	"other": func(_ context.Context, l lie) error {
		return writeBlock(l.W, new([]byte), l.C, l.Other())
	},
	"oversize": func(_ context.Context, l lie) error {
		cb := l.C.Bytes()
		n, _ := maxBody(ftBlock)
		n++ // one byte over the protocol's bound
		h := append(appendHeader(nil, ftBlock, n), byte(len(cb)))
		if _, err := l.W.Write(append(h, cb...)); err != nil {
			return err
		}
		if _, err := l.W.Write(make([]byte, n-1-len(cb))); err != nil {
			return err
		}
		return nil // the client resets the stream
	},
	"silent": func(_ context.Context, l lie) error {
		_, _ = io.Copy(io.Discard, l.R)
		return errors.New("lied: silent")
	},
}

// pinStore adds pins to a memstore until memstore implements
// blocks.PinStore itself (newStore then stops using it). Its GC deletes
// nothing.
type pinStore struct {
	*memstore.Store
	// mu guards pins.
	mu   sync.Mutex
	pins map[string][]cid.Cid
}

func (s *pinStore) Pin(_ context.Context, name string, cids []cid.Cid) error {
	if name == "" || len(name) > 255 {
		return blocks.ErrBadPin
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pins[name] = slices.Clone(cids)
	return nil
}

func (s *pinStore) Unpin(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pins, name)
	return nil
}

func (s *pinStore) Pins(context.Context) iter.Seq2[blocks.PinInfo, error] {
	s.mu.Lock()
	var out []blocks.PinInfo
	for n, cs := range s.pins {
		out = append(out, blocks.PinInfo{Name: n, Blocks: int64(len(cs))})
	}
	s.mu.Unlock()
	return func(yield func(blocks.PinInfo, error) bool) {
		for _, p := range out {
			if !yield(p, nil) {
				return
			}
		}
	}
}

func (s *pinStore) Pinned(_ context.Context, name string) iter.Seq2[cid.Cid, error] {
	s.mu.Lock()
	cs, ok := s.pins[name]
	cs = slices.Clone(cs)
	s.mu.Unlock()
	return func(yield func(cid.Cid, error) bool) {
		if !ok {
			yield(cid.Undef, fmt.Errorf("pin %q: %w", name, blocks.ErrNotFound))
			return
		}
		for _, c := range cs {
			if !yield(c, nil) {
				return
			}
		}
	}
}

func (s *pinStore) IsPinned(_ context.Context, c cid.Cid) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cs := range s.pins {
		if slices.Contains(cs, c) {
			return true, nil
		}
	}
	return false, nil
}

func (s *pinStore) GC(context.Context, time.Duration, func(blocks.GCProgress)) (blocks.GCResult, error) {
	return blocks.GCResult{}, nil
}

func (s *pinStore) Stat(ctx context.Context) (blocks.Stat, error) {
	n, b, err := s.Size(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	return blocks.Stat{Blocks: n, Bytes: b, Pins: int64(len(s.pins))}, err
}
