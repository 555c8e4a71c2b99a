package exchange

import (
	"bufio"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
)

func TestFetchManyFromOnePeer(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 2, Config{MaxWantBatch: 16, MaxInflightPerPeer: 8})
	a, b := ns[0], ns[1]
	bs := makeBlocks(t, 300, 8<<10)
	put(t, a.store, bs)
	ctx := nettest.Context(t, 30*time.Second)
	got, err := collect(t, ctx, b.Exchange, cidsOf(bs), Where{Hosts: []paths.Path{a.node.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bs) {
		t.Fatalf("got %d blocks, want %d", len(got), len(bs))
	}
	for _, blk := range bs {
		if ok, err := b.store.Has(ctx, blk.CID); err != nil || !ok {
			t.Fatalf("block %s not stored at b: %v %v", blk.CID, ok, err)
		}
		if ok, _ := b.store.IsPinned(ctx, blk.CID); ok {
			t.Fatalf("fetched block %s is pinned; fetches only cache", blk.CID)
		}
	}
	if st := statOf(b.Exchange, a.node.ID()); st.Blocks != int64(len(bs)) || st.Strikes != 0 || st.Path != a.node.Path() {
		t.Errorf("stat of a at b: %+v", st)
	}
	if st := statOf(a.Exchange, b.node.ID()); st.Served != int64(len(bs)) {
		t.Errorf("stat of b at a: served %d, want %d", st.Served, len(bs))
	}
	// A second fetch is served from the local store: fn sees every block,
	// and a has served nothing more.
	got, err = collect(t, ctx, b.Exchange, cidsOf(bs), Where{})
	if err != nil || len(got) != len(bs) {
		t.Fatalf("local refetch: %d blocks, %v", len(got), err)
	}
	data, err := b.Get(ctx, bs[7].CID, Where{})
	if err != nil || string(data) != string(bs[7].Data) {
		t.Fatalf("Get: %v", err)
	}
}

func TestFetchFromSeveralPeers(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 4, Config{MaxInflightPerPeer: 4})
	bs := makeBlocks(t, 120, 16<<10)
	holders := ns[:3]
	for i, blk := range bs { // each holder has a third
		put(t, holders[i%3].store, []blocks.Block{blk})
	}
	c := ns[3]
	ctx := nettest.Context(t, 30*time.Second)
	var where Where
	for _, h := range holders {
		where.Peers = append(where.Peers, h.node.ID())
	}
	_ = c.node.Host() // connections come from the cluster's bootstrap
	for _, h := range holders {
		if err := c.node.Host().Connect(ctx, h.node.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	got, err := collect(t, ctx, c.Exchange, cidsOf(bs), where)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bs) {
		t.Fatalf("got %d of %d blocks", len(got), len(bs))
	}
	var sum int64
	for _, h := range holders {
		st := statOf(c.Exchange, h.node.ID())
		if st.Blocks != int64(len(bs)/3) || st.Strikes != 0 {
			t.Errorf("holder %s: %+v, want %d blocks and no strikes", h.node.Path(), st, len(bs)/3)
		}
		sum += st.Blocks
	}
	if sum != int64(len(bs)) {
		t.Errorf("blocks from holders: %d, want %d", sum, len(bs))
	}
}

// TestLiars: four lying peers (wrong bytes, another block's bytes, an
// oversized frame, silence) are asked first, and one honest peer last:
// every block arrives, verified, from the honest one within 10 s, and
// each liar has a strike (the silent one at RequestTimeout, after the
// fetch: its wants were hedged).
func TestLiars(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 6, Config{RequestTimeout: 2 * time.Second, MaxInflightPerPeer: 8})
	modes := []string{"wrong", "other", "oversize", "silent"}
	liars, honest, client := ns[:4], ns[4], ns[5]
	bs := makeBlocks(t, 64, 32<<10)
	var where Where
	for i, l := range liars {
		l.liar = testLiars[modes[i]]
		put(t, l.store, bs)
		where.Peers = append(where.Peers, l.node.ID())
	}
	put(t, honest.store, bs)
	where.Peers = append(where.Peers, honest.node.ID())
	ctx := nettest.Context(t, 30*time.Second)
	for _, n := range ns[:5] {
		if err := client.node.Host().Connect(ctx, n.node.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	got, err := collect(t, ctx, client.Exchange, cidsOf(bs), where)
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bs) {
		t.Fatalf("got %d of %d blocks", len(got), len(bs))
	}
	if took > 10*time.Second {
		t.Errorf("took %v, want ≤ 10s", took)
	}
	t.Logf("all %d blocks in %v", len(bs), took)
	for i, l := range liars {
		if modes[i] == "silent" {
			// Its wants were hedged to the honest peer: the fetch did not
			// wait for it, but it is still struck at RequestTimeout.
			nettest.WaitFor(t, 5*time.Second, "the silent liar's strike", func() bool {
				return statOf(client.Exchange, l.node.ID()).TotalStrikes > 0
			})
		}
		st := statOf(client.Exchange, l.node.ID())
		if st.TotalStrikes < 1 || st.Blocks != 0 {
			t.Errorf("liar %q: %+v, want a strike and no blocks", modes[i], st)
		}
		t.Logf("liar %q: strikes %d: %s", modes[i], st.TotalStrikes, st.LastStrike)
	}
	if st := statOf(client.Exchange, honest.node.ID()); st.Blocks != int64(len(bs)) || st.TotalStrikes != 0 {
		t.Errorf("honest peer: %+v", st)
	}
	// Peers with strikes go last: a second fetch asks the honest peer first.
	more := makeBlocks(t, 8, 1024)
	put(t, honest.store, more)
	for _, l := range liars {
		put(t, l.store, more)
	}
	start = time.Now()
	if _, err := collect(t, ctx, client.Exchange, cidsOf(more), where); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("second fetch took %v: liars were not moved last", took)
	}
}

// TestLiarBackoff: a peer that reaches MaxStrikes is ignored for Backoff.
func TestLiarBackoff(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 2, Config{MaxStrikes: 2, Backoff: time.Hour})
	liar, client := ns[0], ns[1]
	liar.liar = testLiars["wrong"]
	bs := makeBlocks(t, 3, 1024)
	put(t, liar.store, bs)
	ctx := nettest.Context(t, 20*time.Second)
	where := Where{Peers: []peer.ID{liar.node.ID()}}
	for i, b := range bs[:2] {
		if _, err := client.Get(ctx, b.CID, where); !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("fetch %d from liar: %v, want ErrNotFound", i, err)
		}
	}
	st := statOf(client.Exchange, liar.node.ID())
	if st.TotalStrikes != 2 || !st.BackoffUntil.After(time.Now()) {
		t.Fatalf("after 2 strikes: %+v", st)
	}
	_, err := client.Get(ctx, bs[2].CID, where)
	if !errors.Is(err, blocks.ErrNotFound) || !strings.Contains(err.Error(), "no peers to ask") {
		t.Fatalf("fetch from a peer in back-off: %v, want no peers to ask", err)
	}
	if st := statOf(liar.Exchange, client.node.ID()); st.Served != 0 {
		t.Errorf("the liar was asked again during its back-off")
	}
}

func TestHaveNotIsQuick(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 2, Config{})
	a, b := ns[0], ns[1]
	blk := makeBlocks(t, 1, 100)[0]
	ctx := nettest.Context(t, 20*time.Second)
	if _, err := b.Get(ctx, blk.CID, Where{Hosts: []paths.Path{a.node.Path()}}); err != nil && !errors.Is(err, blocks.ErrNotFound) {
		t.Fatal(err) // connects
	}
	start := time.Now()
	_, err := b.Get(ctx, blk.CID, Where{Peers: []peer.ID{a.node.ID()}})
	took := time.Since(start)
	if !errors.Is(err, blocks.ErrNotFound) {
		t.Fatalf("Get of a block nobody has: %v, want ErrNotFound", err)
	}
	if !strings.Contains(err.Error(), "have-not") || !strings.Contains(err.Error(), blk.CID.String()) {
		t.Errorf("error does not say why or which: %v", err)
	}
	if took > time.Second {
		t.Errorf("have-not took %v", took)
	}
	if st := statOf(b.Exchange, a.node.ID()); st.HaveNots != 2 || st.TotalStrikes != 0 {
		t.Errorf("stat: %+v", st)
	}
}

func TestNoPeers(t *testing.T) {
	d := nettest.NewDomain(t)
	a := start(t, d, "a", Config{})
	blk := makeBlocks(t, 1, 100)[0]
	_, err := a.Get(nettest.Context(t, 10*time.Second), blk.CID, Where{})
	if !errors.Is(err, blocks.ErrNotFound) || !strings.Contains(err.Error(), "no peers") {
		t.Fatalf("got %v", err)
	}
	if _, err := a.Get(context.Background(), cid.NewCidV0(blk.CID.Hash()), Where{}); !errors.Is(err, blocks.ErrIntegrity) {
		t.Fatalf("CIDv0: %v, want ErrIntegrity", err)
	}
}

// TestProviderFallback: the host named has nothing; the block comes from
// a provider of the root found in the DHT.
func TestProviderFallback(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 3, Config{})
	holder, empty, client := ns[0], ns[1], ns[2]
	bs := makeBlocks(t, 10, 4096)
	put(t, holder.store, bs)
	root := bs[0].CID
	ctx := nettest.Context(t, 40*time.Second)
	if err := holder.Provide(ctx, root); err != nil {
		t.Fatalf("provide: %v", err)
	}
	got, err := collect(t, ctx, client.Exchange, cidsOf(bs), Where{Hosts: []paths.Path{empty.node.Path()}, Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bs) {
		t.Fatalf("got %d of %d", len(got), len(bs))
	}
	if st := statOf(client.Exchange, empty.node.ID()); st.HaveNots == 0 {
		t.Errorf("the host was not asked first: %+v", st)
	}
	if st := statOf(client.Exchange, holder.node.ID()); st.Blocks != int64(len(bs)) {
		t.Errorf("provider: %+v", st)
	}
}

// TestReplicate: the origin replicates to a peer, which then serves the
// blocks after the origin is gone.
func TestReplicate(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 3, Config{})
	origin, replica, client := ns[0], ns[1], ns[2]
	bs := makeBlocks(t, 40, 64<<10)
	put(t, origin.store, bs)
	put(t, replica.store, bs[:5]) // some already there
	root := bs[0].CID
	ctx := nettest.Context(t, 40*time.Second)
	if err := origin.node.Host().Connect(ctx, replica.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	if err := origin.Replicate(ctx, replica.node.ID(), "file1", root, cidsOf(bs)); err != nil {
		t.Fatal(err)
	}
	for _, b := range bs {
		ok, err := replica.store.Has(ctx, b.CID)
		pinned, perr := replica.store.IsPinned(ctx, b.CID)
		if err != nil || perr != nil || !ok || !pinned {
			t.Fatalf("replica: %s stored %v pinned %v (%v, %v)", b.CID, ok, pinned, err, perr)
		}
	}
	n := 0
	for _, err := range replica.store.Pinned(ctx, "replica:file1") {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != len(bs) {
		t.Fatalf("pin replica:file1 names %d CIDs, want %d", n, len(bs))
	}
	origin.stop()
	got, err := collect(t, ctx, client.Exchange, cidsOf(bs), Where{Hosts: []paths.Path{origin.node.Path(), replica.node.Path()}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(bs) {
		t.Fatalf("got %d of %d", len(got), len(bs))
	}
	if err := client.Unreplicate(ctx, replica.node.ID(), "file1"); err != nil {
		t.Fatal(err)
	}
	for _, err := range replica.store.Pinned(ctx, "replica:file1") {
		if !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("pin still there after Unreplicate: %v", err)
		}
	}
	if err := client.Replicate(ctx, replica.node.ID(), "", root, nil); !errors.Is(err, blocks.ErrBadPin) {
		t.Fatalf("empty pin name: %v", err)
	}
}

// TestReplicateMissing: a replication whose blocks nobody has fails, and
// leaves no pin behind.
func TestReplicateMissing(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 2, Config{})
	origin, replica := ns[0], ns[1]
	bs := makeBlocks(t, 3, 1024)
	put(t, origin.store, bs[:2])
	ctx := nettest.Context(t, 30*time.Second)
	if err := origin.node.Host().Connect(ctx, replica.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	err := origin.Replicate(ctx, replica.node.ID(), "x", cid.Undef, cidsOf(bs))
	if !errors.Is(err, ErrReplicate) || !strings.Contains(err.Error(), bs[2].CID.String()) {
		t.Fatalf("got %v, want ErrReplicate naming the missing block", err)
	}
	for _, err := range replica.store.Pinned(ctx, "replica:x") {
		if !errors.Is(err, blocks.ErrNotFound) {
			t.Fatalf("failed replication left its pin: %v", err)
		}
	}
}

// TestForeignDomainRefused: a verified node of another domain is refused.
func TestForeignDomainRefused(t *testing.T) {
	d1, d2 := nettest.NewDomain(t), nettest.NewDomain(t)
	a := start(t, d1, "a", Config{})
	f := start(t, d2, "f", Config{})
	bs := makeBlocks(t, 2, 1024)
	put(t, a.store, bs)
	ctx := nettest.Context(t, 20*time.Second)
	if err := f.node.Host().Connect(ctx, a.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	_, err := f.Get(ctx, bs[0].CID, Where{Peers: []peer.ID{a.node.ID()}})
	if !errors.Is(err, blocks.ErrNotFound) || !strings.Contains(err.Error(), "another domain") {
		t.Fatalf("foreign fetch: %v, want a refusal naming the other domain", err)
	}
	err = f.Replicate(ctx, a.node.ID(), "p", cid.Undef, cidsOf(bs))
	if !errors.Is(err, ErrDenied) {
		t.Fatalf("foreign replicate: %v, want ErrDenied", err)
	}
	if st := statOf(a.Exchange, f.node.ID()); st.Served != 0 {
		t.Errorf("served a foreign peer: %+v", st)
	}
}

// TestUnverifiedRefused: a bare libp2p host that proves no path gets an
// error frame saying so (after the server's wait for a proof, 10 s).
func TestUnverifiedRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 10 s for a proof")
	}
	d := nettest.NewDomain(t)
	a := start(t, d, "a", Config{})
	blk := makeBlocks(t, 1, 100)[0]
	put(t, a.store, []blocks.Block{blk})
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := nettest.Context(t, 30*time.Second)
	if err := h.Connect(ctx, a.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, a.node.ID(), Protocol)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Reset()
	if _, err := s.Write(appendFrame(nil, ftWant, appendWant(nil, []cid.Cid{blk.CID}))); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(20 * time.Second))
	ty, body, err := readFrame(bufio.NewReader(s), nil)
	if err != nil {
		t.Fatal(err)
	}
	code, text, err := decodeError(body)
	if ty != ftError || err != nil || code != codeDenied {
		t.Fatalf("got %s frame code %d %q (%v), want a denial", ty, code, text, err)
	}
	t.Logf("refusal: %s", text)
}

// TestDeadline: a peer that never answers cannot hold Fetch past its
// context, even with a long RequestTimeout; a closed peer fails at once.
func TestDeadline(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 3, Config{RequestTimeout: time.Minute})
	silent, client, gone := ns[0], ns[1], ns[2]
	silent.liar = testLiars["silent"]
	blk := makeBlocks(t, 1, 100)[0]
	ctx := nettest.Context(t, 30*time.Second)
	if err := client.node.Host().Connect(ctx, silent.node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := client.Get(short, blk.CID, Where{Peers: []peer.ID{silent.node.ID()}})
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Fetch returned %v after its deadline", took-700*time.Millisecond)
	}
	if !errors.Is(err, blocks.ErrNotFound) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want ErrNotFound and DeadlineExceeded", err)
	}

	goneID := gone.node.ID()
	gone.stop()
	start = time.Now()
	_, err = client.Get(ctx, blk.CID, Where{Peers: []peer.ID{goneID}})
	if !errors.Is(err, blocks.ErrNotFound) || time.Since(start) > 5*time.Second {
		t.Fatalf("closed peer: %v after %v", err, time.Since(start))
	}
}

// TestBusy: beyond ServeConcurrency, a stream is refused at once as busy.
func TestBusy(t *testing.T) {
	d := nettest.NewDomain(t)
	ns := cluster(t, d, 3, Config{ServeConcurrency: 1, RequestTimeout: 5 * time.Second})
	srv, c1, c2 := ns[0], ns[1], ns[2]
	srv.liar = testLiars["silent"] // holds its one turn
	blk := makeBlocks(t, 1, 100)[0]
	ctx := nettest.Context(t, 30*time.Second)
	for _, c := range []*testNode{c1, c2} {
		if err := c.node.Host().Connect(ctx, srv.node.AddrInfo()); err != nil {
			t.Fatal(err)
		}
	}
	where := Where{Peers: []peer.ID{srv.node.ID()}}
	hold, cancel := context.WithCancel(ctx)
	held := make(chan error, 1)
	go func() { _, err := c1.Get(hold, blk.CID, where); held <- err }()
	nettest.WaitFor(t, 5*time.Second, "the silent server to hold its turn", func() bool { return len(srv.serveSlots) == 1 })
	start := time.Now()
	_, err := c2.Get(ctx, blk.CID, where)
	if !errors.Is(err, blocks.ErrNotFound) || !strings.Contains(err.Error(), "busy") || time.Since(start) > 2*time.Second {
		t.Fatalf("second client: %v after %v, want a quick busy", err, time.Since(start))
	}
	cancel()
	<-held
}

// TestCloseIdempotent: Close twice; operations after it fail with
// ErrClosed.
func TestCloseIdempotent(t *testing.T) {
	d := nettest.NewDomain(t)
	a := start(t, d, "a", Config{})
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	blk := makeBlocks(t, 1, 10)[0]
	if _, err := a.Get(context.Background(), blk.CID, Where{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, c := range map[string]Config{
		"batch over wire limit": {MaxWantBatch: WireMaxWant + 1},
		"negative peers":        {MaxPeers: -1},
		"negative timeout":      {RequestTimeout: -time.Second},
	} {
		t.Run(name, func(t *testing.T) {
			if err := c.Validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	var c Config
	if err := c.Validate(); err != nil || c.MaxWantBatch != 64 || c.MaxPeers != 4 || c.RequestTimeout != 10*time.Second {
		t.Fatalf("defaults: %+v %v", c, err)
	}
}
