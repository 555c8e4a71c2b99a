package msg

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/p2p"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Tests run in-process libp2p nodes listening on 127.0.0.1 only, with NAT
// traversal and mDNS off and p2p.Config.Loopback on. Set BT_TEST_LOG=1 to
// see the nodes' and routers' debug logs.

// testDomain is a root key and the writecaps it issues.
type testDomain struct {
	root   *softkey.Key
	rootID paths.ID
}

func newTestDomain(t testing.TB) *testDomain {
	t.Helper()
	k := newKey(t)
	return &testDomain{root: k, rootID: principalID(t, k.PublicKey())}
}

func newKey(t testing.TB) *softkey.Key {
	t.Helper()
	k, err := softkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func principalID(t testing.TB, pk crypto.PubKey) paths.ID {
	t.Helper()
	id, err := caps.PrincipalID(pk)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (d *testDomain) path(t testing.TB, comps ...string) paths.Path {
	t.Helper()
	p, err := paths.New(d.rootID, comps...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// grant has the root let holder write under prefix for the next day.
func (d *testDomain) grant(t testing.TB, holder paths.ID, prefix paths.Path) *caps.Writecap {
	t.Helper()
	now := time.Now()
	w, err := caps.Issue(context.Background(), d.root, nil, holder, prefix, now.Add(-time.Hour), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// testNode is a running p2p node of a domain with a Router on it.
type testNode struct {
	*Router
	node   *p2p.Node
	nodeID paths.ID // the node key's principal ID
	stop   func()   // closes router and node, once
}

func testLogger() *slog.Logger {
	if os.Getenv("BT_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// start runs a node named name in d, bootstrapped to bs, with a Router
// configured by cfg; both are closed at cleanup (or by stop).
func (d *testDomain) start(t testing.TB, name string, cfg Config, bs ...peer.AddrInfo) *testNode {
	t.Helper()
	nk := newKey(t)
	nodeID := principalID(t, nk.PublicKey())
	p := d.path(t, name)
	id, err := p2p.NewIdentity(context.Background(), nk, d.grant(t, nodeID, p), p, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n, err := p2p.New(context.Background(), id, p2p.Config{
		Listen:         []ma.Multiaddr{ma.StringCast(listenAddr())},
		Bootstrap:      bs,
		Loopback:       true,
		RecordTTL:      time.Minute,
		ResolveRefresh: time.Minute,
		ResolveTimeout: 10 * time.Second,
		Log:            testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- n.Serve(context.Background()) }()
	if cfg.Log == nil {
		cfg.Log = testLogger()
	}
	r, err := New(n, cfg)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	tn := &testNode{Router: r, node: n, nodeID: nodeID}
	var once sync.Once
	tn.stop = func() {
		once.Do(func() {
			if err := r.Close(); err != nil {
				t.Errorf("close router %s: %v", p, err)
			}
			if err := n.Close(); err != nil {
				t.Errorf("close node %s: %v", p, err)
			}
			select {
			case err := <-served:
				// ErrClosed: closed before Serve began, in a short test.
				if err != nil && !errors.Is(err, p2p.ErrClosed) {
					t.Errorf("serve %s: %v", p, err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("serve %s did not return after Close", p)
			}
		})
	}
	t.Cleanup(tn.stop)
	return tn
}

// listenAddr is where test nodes listen: TCP, or QUIC with
// BT_TEST_TRANSPORT=quic.
func listenAddr() string {
	if os.Getenv("BT_TEST_TRANSPORT") == "quic" {
		return "/ip4/127.0.0.1/udp/0/quic-v1"
	}
	return "/ip4/127.0.0.1/tcp/0"
}

// pair starts two nodes of d, b bootstrapped to a, and waits until both
// have published their records.
func pair(t testing.TB, d *testDomain, acfg, bcfg Config) (a, b *testNode) {
	t.Helper()
	a = d.start(t, "a", acfg)
	b = d.start(t, "b", bcfg, a.node.AddrInfo())
	waitPublished(t, a, b)
	return a, b
}

// waitPublished waits until every node's record has reached the DHT.
func waitPublished(t testing.TB, nodes ...*testNode) {
	t.Helper()
	for _, n := range nodes {
		deadline := time.Now().Add(20 * time.Second)
		for {
			p := n.node.Published()
			if p.Seq != 0 && p.Err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: record not published in 20s: %v", n.node.Path(), p.Err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
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
