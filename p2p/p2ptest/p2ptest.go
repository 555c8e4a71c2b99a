package p2ptest

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Node is a started test node.
type Node struct {
	*p2p.Node
	Identity *p2p.Identity
	Key      *softkey.Key // the node key
	NodeID   paths.ID     // the node key's principal ID

	t         testing.TB
	served    chan error
	closeOnce sync.Once
}

// Option adjusts the node Start makes.
type Option func(*p2p.Config)

// WithBootstrap bootstraps the node to bs.
func WithBootstrap(bs ...peer.AddrInfo) Option {
	return func(c *p2p.Config) { c.Bootstrap = append(c.Bootstrap, bs...) }
}

// WithConfig lets f change the node's configuration.
func WithConfig(f func(*p2p.Config)) Option { return Option(f) }

// Config is a test node's configuration: it listens on ListenAddr, on
// loopback, with records of a minute, a resolve refresh of a minute, a
// resolve timeout of ten seconds, and nettest's logger.
func Config() p2p.Config {
	return p2p.Config{
		Listen:         []ma.Multiaddr{ma.StringCast(ListenAddr())},
		Loopback:       true,
		RecordTTL:      time.Minute,
		ResolveRefresh: time.Minute,
		ResolveTimeout: 10 * time.Second,
		Log:            nettest.Logger(),
	}
}

// ListenAddr is where test nodes listen: TCP on 127.0.0.1, or QUIC with
// BT_TEST_TRANSPORT=quic.
func ListenAddr() string {
	if os.Getenv("BT_TEST_TRANSPORT") == "quic" {
		return "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	return "/ip4/127.0.0.1/tcp/0"
}

// Identity makes the identity of d's member name: a fresh node key, the
// path d.Path(name) and a day's writecap for it.
func Identity(t testing.TB, d *nettest.Domain, name string) (*p2p.Identity, *softkey.Key) {
	t.Helper()
	nk, p, w := d.Member(t, name)
	id, err := p2p.NewIdentity(context.Background(), nk, w, p, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id, nk
}

// Start starts and serves the node of d's member name, configured by
// Config and opts.
func Start(t testing.TB, d *nettest.Domain, name string, opts ...Option) *Node {
	t.Helper()
	id, nk := Identity(t, d, name)
	return StartWith(t, id, nk, opts...)
}

// StartWith starts and serves a node of an identity made by Identity.
func StartWith(t testing.TB, id *p2p.Identity, nk *softkey.Key, opts ...Option) *Node {
	t.Helper()
	cfg := Config()
	for _, o := range opts {
		o(&cfg)
	}
	n, err := p2p.New(context.Background(), id, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tn := &Node{Node: n, Identity: id, Key: nk, NodeID: nettest.PrincipalID(t, nk.PublicKey()), t: t, served: make(chan error, 1)}
	go func() { tn.served <- n.Serve(context.Background()) }()
	t.Cleanup(tn.Close)
	return tn
}

// Close closes the node and waits for Serve to return, failing the test
// if Close or Serve fails or Serve takes over ten seconds. Serve's
// ErrClosed (closed before Serve began, in a short test) is no failure.
// Idempotent.
func (n *Node) Close() {
	n.closeOnce.Do(func() {
		if err := n.Node.Close(); err != nil {
			n.t.Errorf("close node %s: %v", n.Path(), err)
		}
		select {
		case err := <-n.served:
			if err != nil && !errors.Is(err, p2p.ErrClosed) {
				n.t.Errorf("serve %s: %v", n.Path(), err)
			}
		case <-time.After(10 * time.Second):
			n.t.Errorf("serve %s did not return after Close", n.Path())
		}
	})
}

// WaitPublished waits up to 20 seconds until each node's record has
// reached the DHT.
func WaitPublished(t testing.TB, nodes ...*p2p.Node) {
	t.Helper()
	for _, n := range nodes {
		nettest.WaitFor(t, 20*time.Second, "record of "+n.Path().String(), func() bool {
			p := n.Published()
			return p.Seq != 0 && p.Err == nil
		})
	}
}

// Connect connects every pair of nodes directly and waits up to 20
// seconds until each has verified the other's path.
func Connect(t testing.TB, nodes ...*p2p.Node) {
	t.Helper()
	ctx := nettest.Context(t, 30*time.Second)
	for i, a := range nodes {
		for _, b := range nodes[i+1:] {
			if err := a.Host().Connect(ctx, b.AddrInfo()); err != nil {
				t.Fatalf("connect %s to %s: %v", a.Path(), b.Path(), err)
			}
		}
	}
	nettest.WaitFor(t, 20*time.Second, "paths verified", func() bool {
		for _, a := range nodes {
			for _, b := range nodes {
				if a == b {
					continue
				}
				if p, ok := a.VerifiedPath(b.ID()); !ok || p != b.Path() {
					return false
				}
			}
		}
		return true
	})
}
