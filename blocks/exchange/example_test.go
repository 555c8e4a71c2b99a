package exchange_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/blocks/exchange"
	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Two nodes of one domain: b fetches a block that a holds, then asks a to
// keep a replica of it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	root, err := softkey.Generate()
	check(err)
	a, ax := exampleNode(ctx, root, "a", nil)
	defer a.Close()
	defer ax.Close()
	b, bx := exampleNode(ctx, root, "b", []peer.AddrInfo{a.AddrInfo()})
	defer b.Close()
	defer bx.Close()
	check(b.Host().Connect(ctx, a.AddrInfo()))

	blk, err := blocks.NewBlock([]byte("ciphertext, in real life"))
	check(err)
	check(ax.Store().Put(ctx, blk)) // a holds the block

	data, err := bx.Get(ctx, blk.CID, exchange.Where{Peers: []peer.ID{a.ID()}})
	check(err)
	fmt.Printf("b fetched %d bytes, verified against its CID (%d bytes)\n", len(data), blk.CID.ByteLen())

	check(bx.Replicate(ctx, a.ID(), "example", blk.CID, []cid.Cid{blk.CID}))
	fmt.Println("a acknowledged the replica")
	// Output:
	// b fetched 24 bytes, verified against its CID (36 bytes)
	// a acknowledged the replica
}

// exampleNode starts a node /<root>/<name> with an Exchange over an
// in-memory store.
func exampleNode(ctx context.Context, root *softkey.Key, name string, bs []peer.AddrInfo) (*p2p.Node, *storeExchange) {
	rootID, err := caps.PrincipalID(root.PublicKey())
	check(err)
	nk, err := softkey.Generate()
	check(err)
	nodeID, err := caps.PrincipalID(nk.PublicKey())
	check(err)
	path, err := paths.New(rootID, name)
	check(err)
	now := time.Now()
	w, err := caps.Issue(ctx, root, nil, nodeID, path, now.Add(-time.Hour), now.Add(24*time.Hour))
	check(err)
	id, err := p2p.NewIdentity(ctx, nk, w, path, 24*time.Hour)
	check(err)
	n, err := p2p.New(ctx, id, p2p.Config{
		Listen:    []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Bootstrap: bs,
		Loopback:  true,
	})
	check(err)
	st := newExampleStore()
	x, err := exchange.New(n, st, exchange.Config{})
	check(err)
	return n, &storeExchange{Exchange: x, st: st}
}

type storeExchange struct {
	*exchange.Exchange
	st blocks.PinStore
}

func (s *storeExchange) Store() blocks.PinStore { return s.st }

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// newExampleStore returns an in-memory PinStore (memstore).
func newExampleStore() blocks.PinStore { return exchange.NewTestStore() }
