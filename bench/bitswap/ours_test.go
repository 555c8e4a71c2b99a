package bitswapbench

import (
	"context"
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/blocks/memstore"
	"blocktree.dev/bt/p2p"
)

// oursPair mounts blocktree.dev/bt/blocks/exchange (default Config) on both
// nodes: A serves from an in-memory store holding bs, B fetches from A
// (Where.Peers) into its own in-memory store. It returns our operation.
func oursPair(b *testing.B, a, z *p2p.Node, bs []blocks.Block) fetcher {
	b.Helper()
	ctx := context.Background()
	storeA, storeB := memstore.New(), memstore.New()
	cids := make([]cid.Cid, len(bs))
	for i, blk := range bs {
		if err := storeA.Put(ctx, blk); err != nil {
			b.Fatal(err)
		}
		cids[i] = blk.CID
	}
	xa, err := exchange.New(a, storeA, exchange.Config{})
	if err != nil {
		b.Fatal(err)
	}
	xb, err := exchange.New(z, storeB, exchange.Config{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		xb.Close()
		xa.Close()
		storeB.Close()
		storeA.Close()
	})
	where := exchange.Where{Peers: []peer.ID{a.ID()}}
	want := int64(len(bs)) * blockSize
	return func(ctx context.Context) error {
		var got int64
		var n int
		if err := xb.Fetch(ctx, cids, where, func(blk blocks.Block) error {
			got += int64(len(blk.Data))
			n++
			return nil
		}); err != nil {
			return err
		}
		if n != len(cids) || got != want {
			return fmt.Errorf("ours: fetched %d blocks, %d bytes; want %d, %d", n, got, len(cids), want)
		}
		for _, c := range cids {
			if err := storeB.Delete(ctx, c); err != nil {
				return err
			}
		}
		return nil
	}
}
