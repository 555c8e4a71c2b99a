package bitswapbench

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/ipfs/boxo/bitswap"
	bsnet "github.com/ipfs/boxo/bitswap/network/bsnet"
	"github.com/ipfs/boxo/blockservice"
	"github.com/ipfs/boxo/blockstore"
	blockformat "github.com/ipfs/go-block-format"
	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// The benchmark runs two p2p.Nodes of one test domain on 127.0.0.1 (TCP,
// Noise, yamux: as package p2p configures a node without NAT traversal),
// A holding the blocks and B fetching them, with both exchanges mounted on
// the same two hosts and the same connection. Each operation fetches every
// block into B's store and then deletes them there again, so the next
// operation starts from an empty store. Run with -benchtime=1x:
//
//	cd bench/bitswap && go test -run '^$' -bench . -benchtime=1x
//
// BT_BENCH_BYTES sets the bytes fetched per operation (default 1 GiB;
// rounded down to whole 256 KiB blocks).

const blockSize = 256 << 10

func benchBytes(b *testing.B) int {
	b.Helper()
	n := 1 << 30
	if s := os.Getenv("BT_BENCH_BYTES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < blockSize {
			b.Fatalf("BT_BENCH_BYTES=%q: want at least %d", s, blockSize)
		}
		n = v
	}
	return n / blockSize * blockSize
}

// randomBlocks makes n random blocks of blockSize bytes, named by their
// CIDv1 raw sha2-256 CIDs (the same CIDs in both worlds).
func randomBlocks(b *testing.B, n int) []blocks.Block {
	b.Helper()
	out := make([]blocks.Block, n)
	for i := range out {
		data := make([]byte, blockSize)
		if _, err := rand.Read(data); err != nil {
			b.Fatal(err)
		}
		blk, err := blocks.NewBlock(data)
		if err != nil {
			b.Fatal(err)
		}
		out[i] = blk
	}
	return out
}

// domain is a root key and the writecaps it issues: what
// blocktree.dev/bt/internal/nettest does for the main module's tests, which
// this module cannot import.
type domain struct {
	root *softkey.Key
	id   paths.ID
}

func newDomain(b *testing.B) *domain {
	b.Helper()
	k, err := softkey.Generate()
	if err != nil {
		b.Fatal(err)
	}
	id, err := caps.PrincipalID(k.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	return &domain{root: k, id: id}
}

// identity makes a node key granted /<root>/<name> for a day and the node's
// p2p identity.
func (d *domain) identity(b *testing.B, name string) *p2p.Identity {
	b.Helper()
	ctx := context.Background()
	nk, err := softkey.Generate()
	if err != nil {
		b.Fatal(err)
	}
	nid, err := caps.PrincipalID(nk.PublicKey())
	if err != nil {
		b.Fatal(err)
	}
	p, err := paths.New(d.id, name)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	w, err := caps.Issue(ctx, d.root, nil, nid, p, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	id, err := p2p.NewIdentity(ctx, nk, w, p, 24*time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	return id
}

// startNode runs a node of d named name on 127.0.0.1, bootstrapped to bs,
// serving until cleanup.
func (d *domain) startNode(b *testing.B, name string, bs ...peer.AddrInfo) *p2p.Node {
	b.Helper()
	n, err := p2p.New(context.Background(), d.identity(b, name), p2p.Config{
		Listen:         []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Bootstrap:      bs,
		Loopback:       true,
		RecordTTL:      time.Minute,
		ResolveRefresh: time.Minute,
		ResolveTimeout: 10 * time.Second,
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- n.Serve(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := n.Close(); err != nil {
			b.Errorf("close %s: %v", name, err)
		}
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			b.Errorf("serve %s did not return after Close", name)
		}
	})
	return n
}

// waitPublished waits until every node's record has reached the DHT, so
// that a path resolves.
func waitPublished(b *testing.B, nodes ...*p2p.Node) {
	b.Helper()
	for _, n := range nodes {
		deadline := time.Now().Add(20 * time.Second)
		for {
			p := n.Published()
			if p.Seq != 0 && p.Err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: record not published in 20s: %v", n.Path(), p.Err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// fetcher is one side of the comparison: it fetches all blocks from A into
// B's store, checks what arrived, and empties B's store again.
type fetcher func(ctx context.Context) error

// boxoPair mounts boxo bitswap on both hosts: A serves from a blockstore
// holding bs, B fetches through a blockservice into its own blockstore.
// It returns the anchor operation.
func boxoPair(b *testing.B, a, z *p2p.Node, bs []blocks.Block) fetcher {
	b.Helper()
	ctx := context.Background()
	newStore := func() blockstore.Blockstore {
		return blockstore.NewBlockstore(dssync.MutexWrap(ds.NewMapDatastore()))
	}
	storeA, storeB := newStore(), newStore()
	bbs := make([]blockformat.Block, len(bs))
	cids := make([]cid.Cid, len(bs))
	for i, blk := range bs {
		bb, err := blockformat.NewBlockWithCid(blk.Data, blk.CID)
		if err != nil {
			b.Fatal(err)
		}
		bbs[i], cids[i] = bb, blk.CID
	}
	if err := storeA.PutMany(ctx, bbs); err != nil {
		b.Fatal(err)
	}
	// No content routing: B asks the peers it is connected to, which is A.
	swapA := bitswap.New(ctx, bsnet.NewFromIpfsHost(a.Host()), nil, storeA)
	swapB := bitswap.New(ctx, bsnet.NewFromIpfsHost(z.Host()), nil, storeB)
	svcB := blockservice.New(storeB, swapB)
	b.Cleanup(func() {
		svcB.Close()
		swapA.Close()
	})
	want := int64(len(bs)) * blockSize
	return func(ctx context.Context) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var got int64
		var n int
		for blk := range svcB.GetBlocks(ctx, cids) {
			got += int64(len(blk.RawData()))
			n++
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if n != len(cids) || got != want {
			return fmt.Errorf("boxo: fetched %d blocks, %d bytes; want %d, %d", n, got, len(cids), want)
		}
		for _, c := range cids {
			if err := storeB.DeleteBlock(ctx, c); err != nil {
				return err
			}
		}
		return nil
	}
}

// reconnect closes B's connections to A, dials A again and waits until
// both hosts see the connection.
func reconnect(b *testing.B, a, z *p2p.Node) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := z.Host().Network().ClosePeer(a.ID()); err != nil {
		b.Fatal(err)
	}
	if err := z.Host().Connect(ctx, a.AddrInfo()); err != nil {
		b.Fatal(err)
	}
	for a.Host().Network().Connectedness(z.ID()) != network.Connected {
		if ctx.Err() != nil {
			b.Fatal("A does not see B's connection")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkFetch1GiB: B fetches 1 GiB of 256 KiB random blocks held by A,
// with our exchange against boxo bitswap (interleaved, medians of 5
// rounds). Target: ratio (anchor time / ours, that is our throughput over
// bitswap's) ≥ 1.0.
func BenchmarkFetch1GiB(b *testing.B) {
	size := benchBytes(b)
	bs := randomBlocks(b, size/blockSize)
	d := newDomain(b)
	a := d.startNode(b, "a")
	z := d.startNode(b, "b", a.AddrInfo())
	waitPublished(b, a, z)

	anchor := boxoPair(b, a, z, bs)
	ours := oursPair(b, a, z, bs)
	// Bitswap learns of peers from new connections only: reconnect now
	// that both exchanges are mounted.
	reconnect(b, a, z)
	timeout := time.Minute + time.Duration(size/10e6)*time.Second // fails below 10 MB/s
	op := func(side string, f fetcher) func() error {
		return func() error {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			if err := f(ctx); err != nil {
				return fmt.Errorf("%s, after %v: %w", side, time.Since(start).Round(time.Millisecond), err)
			}
			return nil
		}
	}
	mib := size >> 20
	r := benchcmp.Compare(b, fmt.Sprintf("exchange fetch %d MiB of 256 KiB blocks vs boxo bitswap (target ≥ 1.0)", mib),
		benchcmp.Options{Rounds: 5, Ops: 1}, op("ours", ours), op("boxo", anchor))
	fmt.Printf("bench exchange fetch %d MiB: ours %.0f MB/s anchor %.0f MB/s\n", mib,
		float64(size)/1e6/r.Ours.Seconds(), float64(size)/1e6/r.Anchor.Seconds())
}
