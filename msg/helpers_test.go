package msg

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/p2p/p2ptest"
	"blocktree.dev/bt/paths"
)

// Tests run in-process libp2p nodes listening on 127.0.0.1 only, with NAT
// traversal and mDNS off and p2p.Config.Loopback on. Set BT_TEST_LOG=1 to
// see the nodes' and routers' debug logs.

// testNode is a running p2p node of a domain with a Router on it.
type testNode struct {
	*Router
	node   *p2p.Node
	nodeID paths.ID // the node key's principal ID
	stop   func()   // closes router and node, once
}

// start runs a node named name in d, bootstrapped to bs, with a Router
// configured by cfg; both are closed at cleanup (or by stop).
func start(t testing.TB, d *nettest.Domain, name string, cfg Config, bs ...peer.AddrInfo) *testNode {
	t.Helper()
	pn := p2ptest.Start(t, d, name, p2ptest.WithBootstrap(bs...))
	if cfg.Log == nil {
		cfg.Log = nettest.Logger()
	}
	r, err := New(pn.Node, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Router: r, node: pn.Node, nodeID: pn.NodeID}
	var once sync.Once
	tn.stop = func() {
		once.Do(func() {
			if err := r.Close(); err != nil {
				t.Errorf("close router %s: %v", pn.Path(), err)
			}
			pn.Close()
		})
	}
	t.Cleanup(tn.stop)
	return tn
}

// pair starts two nodes of d, b bootstrapped to a, and waits until both
// have published their records.
func pair(t testing.TB, d *nettest.Domain, acfg, bcfg Config) (a, b *testNode) {
	t.Helper()
	a = start(t, d, "a", acfg)
	b = start(t, d, "b", bcfg, a.node.AddrInfo())
	waitPublished(t, a, b)
	return a, b
}

// waitPublished waits until every node's record has reached the DHT.
func waitPublished(t testing.TB, nodes ...*testNode) {
	t.Helper()
	for _, n := range nodes {
		p2ptest.WaitPublished(t, n.node)
	}
}

func mustJoin(t testing.TB, p paths.Path, comps ...string) paths.Path {
	t.Helper()
	q, err := p.Join(comps...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// echo replies with the payload it read.
func echo(_ context.Context, m *Message) ([]byte, error) {
	return io.ReadAll(m.Body)
}

// patternReader yields n bytes of a fixed pattern without holding them:
// byte i is byte(i*7+i>>16).
type patternReader struct{ off, n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		o := p.off + int64(i)
		b[i] = byte(o*7 + o>>16)
	}
	p.off += int64(len(b))
	return len(b), nil
}
