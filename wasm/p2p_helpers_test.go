package wasm

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/actors"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
)

// p2pNode is a real libp2p node on 127.0.0.1 with a msg router and an
// actors runtime (as in actors' own tests).
type p2pNode struct {
	node *p2p.Node
	acts *actors.Runtime
}

func startP2PNode(t testing.TB, d *nettest.Domain, name string, bs []peer.AddrInfo) *p2pNode {
	t.Helper()
	nk, p, w := d.Member(t, name)
	id, err := p2p.NewIdentity(context.Background(), nk, w, p, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n, err := p2p.New(context.Background(), id, p2p.Config{
		Listen:         []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Bootstrap:      bs,
		Loopback:       true,
		RecordTTL:      time.Minute,
		ResolveRefresh: time.Minute,
		ResolveTimeout: 5 * time.Second,
		Log:            nettest.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(context.Background()) }()
	router, err := msg.New(n, msg.Config{Log: nettest.Logger()})
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	acts, err := actors.New(n.Path(), router, actors.WithP2P(n))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		acts.Close()
		router.Close()
		n.Close()
		select {
		case <-served:
		case <-time.After(10 * time.Second):
			t.Errorf("serve %s did not return after Close", p)
		}
	})
	return &p2pNode{node: n, acts: acts}
}

// p2pPair starts nodes a and b of d, b bootstrapped to a, and waits until
// both have published their records.
func p2pPair(t testing.TB, d *nettest.Domain) (a, b *p2pNode) {
	t.Helper()
	a = startP2PNode(t, d, "a", nil)
	b = startP2PNode(t, d, "b", []peer.AddrInfo{a.node.AddrInfo()})
	for _, n := range []*p2pNode{a, b} {
		nettest.WaitFor(t, 20*time.Second, "record published", func() bool {
			pub := n.node.Published()
			return pub.Seq != 0 && pub.Err == nil
		})
	}
	return a, b
}
