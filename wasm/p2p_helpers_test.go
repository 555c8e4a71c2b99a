package wasm

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/p2p/p2ptest"
)

// p2pNode is a real libp2p node on 127.0.0.1 with a msg router and an
// actors runtime (as in actors' own tests).
type p2pNode struct {
	node *p2p.Node
	acts *actors.Runtime
}

func startP2PNode(t testing.TB, d *nettest.Domain, name string, bs []peer.AddrInfo) *p2pNode {
	t.Helper()
	pn := p2ptest.Start(t, d, name, p2ptest.WithBootstrap(bs...),
		p2ptest.WithConfig(func(c *p2p.Config) { c.ResolveTimeout = 5 * time.Second }))
	router, err := msg.New(pn.Node, msg.Config{Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	acts, err := actors.New(pn.Path(), router)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		acts.Close()
		router.Close()
		pn.Close()
	})
	return &p2pNode{node: pn.Node, acts: acts}
}

// p2pPair starts nodes a and b of d, b bootstrapped to a, and waits until
// both have published their records.
func p2pPair(t testing.TB, d *nettest.Domain) (a, b *p2pNode) {
	t.Helper()
	a = startP2PNode(t, d, "a", nil)
	b = startP2PNode(t, d, "b", []peer.AddrInfo{a.node.AddrInfo()})
	p2ptest.WaitPublished(t, a.node, b.node)
	return a, b
}
