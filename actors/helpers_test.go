package actors

import (
	"context"
	"crypto/ecdh"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/msg"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/p2p/p2ptest"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/pubsub"
	"blocktree.dev/bt/tpm/softkey"
)

// Tests of remote actors run real in-process libp2p nodes listening on
// 127.0.0.1 only; set BT_TEST_LOG=1 for their debug logs.

// testNode is a p2p node with a Router and a Runtime on it.
type testNode struct {
	*Runtime
	node   *p2p.Node
	nodeID paths.ID // the node key's principal
	router *msg.Router
	ps     *pubsub.PubSub
	stop   func() // closes runtime, pubsub, router and node, once
}

type nodeOpts struct {
	pubsub bool
	bs     []peer.AddrInfo
	opts   []Option
}

// startNode runs a node named name in d with a runtime configured by o.
func startNode(t testing.TB, d *nettest.Domain, name string, o nodeOpts) *testNode {
	t.Helper()
	id, nk := p2ptest.Identity(t, d, name)
	return startNodeWith(t, id, nk, o)
}

// startNodeWith runs a node of an identity made by p2ptest.Identity (the
// same one again: the node restarted).
func startNodeWith(t testing.TB, id *p2p.Identity, nk *softkey.Key, o nodeOpts) *testNode {
	t.Helper()
	pn := p2ptest.StartWith(t, id, nk, p2ptest.WithBootstrap(o.bs...),
		p2ptest.WithConfig(func(c *p2p.Config) { c.ResolveTimeout = 5 * time.Second }))
	n := pn.Node
	router, err := msg.New(n, msg.Config{Log: nettest.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{node: n, router: router, nodeID: pn.NodeID}
	opts := append([]Option{WithTypes(testTypes...)}, o.opts...)
	if o.pubsub {
		ps, err := pubsub.New(context.Background(), n, id, pubsub.Config{
			Log:         nettest.Logger(),
			Decapsulate: func(ctx context.Context, eph *ecdh.PublicKey) ([]byte, error) { return nk.ECDH(ctx, eph) },
		})
		if err != nil {
			t.Fatal(err)
		}
		tn.ps = ps
		opts = append(opts, WithPubSub(ps))
	}
	if l := nettest.Logger(); l != nil {
		opts = append(opts, WithLogger(l))
	}
	rt, err := New(n.Path(), router, opts...)
	if err != nil {
		t.Fatal(err)
	}
	tn.Runtime = rt
	var once sync.Once
	tn.stop = func() {
		once.Do(func() {
			rt.Close()
			if tn.ps != nil {
				tn.ps.Close()
			}
			router.Close()
			pn.Close()
		})
	}
	t.Cleanup(tn.stop)
	return tn
}

// pair starts two nodes of d, b bootstrapped to a, and waits until both
// have published their records.
func pair(t testing.TB, d *nettest.Domain, opts ...Option) (a, b *testNode) {
	t.Helper()
	a = startNode(t, d, "a", nodeOpts{opts: opts})
	b = startNode(t, d, "b", nodeOpts{opts: opts, bs: []peer.AddrInfo{a.node.AddrInfo()}})
	p2ptest.WaitPublished(t, a.node, b.node)
	return a, b
}

// newLocal makes a local-only runtime, closed at cleanup.
func newLocal(t testing.TB, opts ...Option) *Runtime {
	t.Helper()
	d := nettest.NewDomain(t)
	r, err := New(d.Path(t, "n"), nil, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Test message types.
type (
	Ping    struct{ N int }
	Pong    struct{ N int }
	Crash   struct{ Msg string }
	Panic   struct{}
	Quit    struct{}
	Block   struct{}
	Open    struct{}
	Close   struct{}
	Lock    struct{}
	Unlock  struct{}
	Ack     struct{}
	Peek    struct{}
	Status  struct{ State string }
	Unknown struct{}
)

var testTypes = []TypeSpec{
	TypeOf[Ping]("test/ping"), TypeOf[Pong]("test/pong"), TypeOf[Crash]("test/crash"),
	TypeOf[Quit]("test/quit"), TypeOf[Open]("test/open"), TypeOf[Close]("test/close"),
	TypeOf[Ack]("test/ack"), TypeOf[Lock]("test/lock"),
}

// worker answers Ping with Pong, fails on Crash, panics on Panic, stops
// on Quit and blocks on Block until its context ends.
func worker() Actor {
	return Func(func(c *Context, m any) (any, error) {
		switch m := m.(type) {
		case Ping:
			return Pong{N: m.N + 1}, nil
		case Crash:
			return nil, errors.New(m.Msg)
		case Panic:
			panic("boom")
		case Quit:
			return nil, ErrStop
		case Block:
			<-c.Ctx().Done()
		}
		return nil, nil
	})
}

// collector is an actor that forwards every message it gets to ch.
func collector(ch chan<- any) Actor {
	return Func(func(c *Context, m any) (any, error) {
		ch <- m
		return nil, nil
	})
}

func recv[T any](t testing.TB, ch <-chan any, d time.Duration) T {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-ch:
			if v, ok := m.(T); ok {
				return v
			}
		case <-deadline:
			var z T
			t.Fatalf("no %T within %v", z, d)
			return z
		}
	}
}

func spawn(t testing.TB, r *Runtime, name string, a Actor, opts ...SpawnOption) paths.Path {
	t.Helper()
	p, err := r.Spawn(context.Background(), name, a, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func join(t testing.TB, p paths.Path, comps ...string) paths.Path {
	t.Helper()
	q, err := p.Join(comps...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func mustParse(s string) paths.Path { return paths.MustParse(s) }
