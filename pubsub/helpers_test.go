package pubsub

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/p2p/p2ptest"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Tests run in-process libp2p hosts listening on 127.0.0.1 only, with NAT
// traversal and mDNS off. Set BT_TEST_LOG=1 to see debug logs.

// member makes a node of d named name: its identity and node key.
func member(t testing.TB, d *nettest.Domain, name string) (*p2p.Identity, *softkey.Key) {
	t.Helper()
	return p2ptest.Identity(t, d, name)
}

// testNode is one node of a test network: its p2p node, node key and
// PubSub.
type testNode struct {
	name  string
	node  *p2p.Node
	id    *p2p.Identity
	key   *softkey.Key
	ps    *PubSub
	decap atomic.Int64 // Decapsulate calls
}

func (n *testNode) path() paths.Path { return n.id.Path }

// newTestNet starts one node per name in d, each with a PubSub (cfg,
// completed with the node's key agreement), connects every pair directly
// and waits until every node has verified every other's path. Everything
// is closed at cleanup, PubSub before node.
func newTestNet(t testing.TB, d *nettest.Domain, cfg Config, names ...string) []*testNode {
	t.Helper()
	var nodes []*testNode
	for _, name := range names {
		id, key := member(t, d, name)
		nodes = append(nodes, startTestNode(t, name, id, key, cfg))
	}
	connectAll(t, nodes)
	return nodes
}

func startTestNode(t testing.TB, name string, id *p2p.Identity, key *softkey.Key, cfg Config) *testNode {
	t.Helper()
	n := &testNode{name: name, id: id, key: key}
	// p2p's default resolve refresh and timeout, as these tests have always had.
	pn := p2ptest.StartWith(t, id, key, p2ptest.WithConfig(func(c *p2p.Config) { c.ResolveRefresh, c.ResolveTimeout = 0, 0 }))
	node := pn.Node
	n.node = node
	if cfg.Log == nil {
		cfg.Log = nettest.Logger()
	}
	cfg.Decapsulate = func(ctx context.Context, eph *ecdh.PublicKey) ([]byte, error) {
		n.decap.Add(1)
		return key.ECDH(ctx, eph)
	}
	ps, err := New(context.Background(), node, id, cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.ps = ps
	t.Cleanup(func() {
		if err := ps.Close(); err != nil {
			t.Errorf("close pubsub %s: %v", name, err)
		}
	})
	return n
}

// connectAll connects every pair of nodes and waits until each has
// verified the other's path.
func connectAll(t testing.TB, nodes []*testNode) {
	t.Helper()
	var ns []*p2p.Node
	for _, n := range nodes {
		ns = append(ns, n.node)
	}
	p2ptest.Connect(t, ns...)
}

func subscribe(t testing.TB, n *testNode, pt paths.Pattern) *Subscription {
	t.Helper()
	s, err := n.ps.Subscribe(context.Background(), pt)
	if err != nil {
		t.Fatalf("%s subscribe %s: %v", n.name, pt, err)
	}
	t.Cleanup(s.Cancel)
	return s
}

// probePrefix starts the payload of readiness probes, which recv skips.
var probePrefix = []byte("\x00probe")

// ready publishes probes from pub to topic (every 100ms, plain) until each
// of subs has received one: then gossipsub's meshes for the topics
// involved have formed. Probes still in flight are skipped by recv.
func ready(t testing.TB, pub *testNode, topic paths.Path, subs ...*Subscription) {
	t.Helper()
	ctx := nettest.Context(t, 30*time.Second)
	got := make([]bool, len(subs))
	for {
		if err := pub.ps.Publish(ctx, topic, probePrefix); err != nil {
			t.Fatalf("probe %s: %v", topic, err)
		}
		wait, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		for i, s := range subs {
			for !got[i] {
				m, err := s.Next(wait)
				if err != nil {
					break
				}
				got[i] = bytes.HasPrefix(m.Payload, probePrefix)
			}
		}
		cancel()
		all := true
		for _, g := range got {
			all = all && g
		}
		if all {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("probes to %s did not reach every subscriber: %v", topic, got)
		}
	}
}

// recv returns the next message that is not a probe, or fails the test
// after d.
func recv(t testing.TB, s *Subscription, d time.Duration) *Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		m, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("subscription %s: %v", s.Pattern(), err)
		}
		if !bytes.HasPrefix(m.Payload, probePrefix) {
			return m
		}
	}
}

// quiet returns the non-probe messages that arrive within d: none, when
// nothing more is expected.
func quiet(s *Subscription, d time.Duration) []*Message {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []*Message
	for {
		m, err := s.Next(ctx)
		if err != nil {
			return out
		}
		if !bytes.HasPrefix(m.Payload, probePrefix) {
			out = append(out, m)
		}
	}
}

// collect returns the non-probe messages that arrive within d, stopping
// early once it has n of them.
func collect(s *Subscription, d time.Duration, n int) []*Message {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var out []*Message
	for len(out) < n {
		m, err := s.Next(ctx)
		if err != nil {
			break
		}
		if !bytes.HasPrefix(m.Payload, probePrefix) {
			out = append(out, m)
		}
	}
	return out
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("n%02d", i)
	}
	return out
}

// forgetPeerChecks makes the next Publish ask gossipsub afresh which
// subtree topics have subscribers.
func (ps *PubSub) forgetPeerChecks() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	clear(ps.peerChecks)
}
