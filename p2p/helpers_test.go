package p2p

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/nettest"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

// Tests run in-process libp2p hosts listening on 127.0.0.1 only, with NAT
// traversal and mDNS off and Config.Loopback on. Set BT_TEST_LOG=1 to see
// the nodes' debug logs.

// member makes a node of d named name: its identity and node key.
func member(t testing.TB, d *nettest.Domain, name string) (*Identity, *softkey.Key) {
	t.Helper()
	nk, p, w := d.Member(t, name)
	id, err := NewIdentity(context.Background(), nk, w, p, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return id, nk
}

func newHostKey(t testing.TB) crypto.PrivKey {
	t.Helper()
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// hostCert has node certify host for the next day.
func hostCert(t testing.TB, node caps.Signer, host crypto.PubKey) *caps.HostCert {
	t.Helper()
	now := time.Now()
	c, err := caps.IssueHostCert(context.Background(), node, host, now.Add(-time.Minute), now.Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// testConfig is a loopback node's config, bootstrapped to bs.
func testConfig(bs ...peer.AddrInfo) Config {
	return Config{
		Listen:         []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")},
		Bootstrap:      bs,
		Loopback:       true,
		RecordTTL:      time.Minute,
		ResolveRefresh: time.Minute,
		ResolveTimeout: 10 * time.Second,
		Log:            nettest.Logger(),
	}
}

// startNode builds a node, runs Serve and closes it at cleanup.
func startNode(t testing.TB, id *Identity, cfg Config) *Node {
	t.Helper()
	n, err := New(context.Background(), id, cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveNode(t, n)
	return n
}

// serveNode runs n.Serve until cleanup, then closes n and checks that
// Serve returned cleanly.
func serveNode(t testing.TB, n *Node) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- n.Serve(context.Background()) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if err := n.Close(); err != nil {
				t.Errorf("close %s: %v", n.Path(), err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve %s: %v", n.Path(), err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("serve %s did not return after Close", n.Path())
			}
		})
	}
	t.Cleanup(stop)
}

// waitPublished waits until n's record has reached the DHT.
func waitPublished(t testing.TB, n *Node) {
	t.Helper()
	nettest.WaitFor(t, 20*time.Second, "publication of "+n.Path().String(), func() bool {
		p := n.Published()
		return p.Seq != 0 && p.Err == nil
	})
}

// newCluster starts one node per name in d, each bootstrapped to the first
// (or to bs when given), and waits until every record is published (a lone
// node has no one to publish to).
func newCluster(t testing.TB, d *nettest.Domain, bs []peer.AddrInfo, names ...string) []*Node {
	t.Helper()
	var nodes []*Node
	for _, name := range names {
		id, _ := member(t, d, name)
		b := bs
		if b == nil && len(nodes) > 0 {
			b = []peer.AddrInfo{nodes[0].AddrInfo()}
		}
		nodes = append(nodes, startNode(t, id, testConfig(b...)))
	}
	if len(nodes) > 1 || bs != nil {
		for _, n := range nodes {
			waitPublished(t, n)
		}
	}
	return nodes
}

// forgeWritecap builds, by hand in the documented wire format
// (docs/writecap.md), a one-link writecap signed by issuer that grants
// holder the prefix, whatever root the prefix names: what caps.Issue
// refuses to make.
func forgeWritecap(t testing.TB, issuer caps.Signer, holder paths.ID, prefix paths.Path) *caps.Writecap {
	t.Helper()
	type linkBody struct {
		V         uint   `cbor:"v"`
		Issuer    []byte `cbor:"iss"`
		Subject   string `cbor:"sub"`
		Prefix    string `cbor:"pfx"`
		NotBefore int64  `cbor:"nbf"`
		Expiry    int64  `cbor:"exp"`
	}
	type link struct {
		Body []byte `cbor:"body"`
		Sig  []byte `cbor:"sig"`
	}
	type writecap struct {
		V     uint   `cbor:"v"`
		Links []link `cbor:"links"`
	}
	pkb, err := crypto.MarshalPublicKey(issuer.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	body, err := canon.Marshal(&linkBody{V: 1, Issuer: pkb, Subject: string(holder), Prefix: prefix.String(),
		NotBefore: now.Add(-time.Hour).Unix(), Expiry: now.Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := issuer.Sign(context.Background(), append([]byte("blocktree writecap v1\x00"), body...))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := canon.Marshal(&writecap{V: 1, Links: []link{{Body: body, Sig: sig}}})
	if err != nil {
		t.Fatal(err)
	}
	w, err := caps.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// badIdentity is one way of claiming a path one may not host.
type badIdentity struct {
	name string
	// make returns the identity; honest is a node of d whose credentials
	// a replay may steal.
	make func(t testing.TB, d, evil *nettest.Domain, honest *Identity) *Identity
	// want is the caps error that refuses it.
	want error
	// nodeOnly marks cases that only the auth protocol refuses (a record
	// may be for any path its writecap covers).
	nodeOnly bool
}

var badIdentities = []badIdentity{
	{name: "writecap-from-another-root", want: caps.ErrRootMismatch, make: func(t testing.TB, d, evil *nettest.Domain, _ *Identity) *Identity {
		nk, hk := nettest.NewKey(t), newHostKey(t)
		now := time.Now()
		w := evil.Grant(t, nettest.PrincipalID(t, nk.PublicKey()), evil.Path(t, "mallory"), now.Add(-time.Hour), now.Add(time.Hour))
		return &Identity{HostKey: hk, Cert: hostCert(t, nk, hk.GetPublic()), Writecap: w, Path: d.Path(t, "mallory")}
	}},
	{name: "forged-link-signed-by-another-root", want: caps.ErrRootMismatch, make: func(t testing.TB, d, evil *nettest.Domain, _ *Identity) *Identity {
		nk, hk := nettest.NewKey(t), newHostKey(t)
		w := forgeWritecap(t, evil.Root, nettest.PrincipalID(t, nk.PublicKey()), d.Path(t, "mallory"))
		return &Identity{HostKey: hk, Cert: hostCert(t, nk, hk.GetPublic()), Writecap: w, Path: d.Path(t, "mallory")}
	}},
	{name: "expired-writecap", want: caps.ErrExpired, make: func(t testing.TB, d, _ *nettest.Domain, _ *Identity) *Identity {
		nk, hk := nettest.NewKey(t), newHostKey(t)
		now := time.Now()
		w := d.Grant(t, nettest.PrincipalID(t, nk.PublicKey()), d.Path(t, "old"), now.Add(-2*time.Hour), now.Add(-time.Hour))
		return &Identity{HostKey: hk, Cert: hostCert(t, nk, hk.GetPublic()), Writecap: w, Path: d.Path(t, "old")}
	}},
	{name: "writecap-for-another-path", want: caps.ErrPathNotCovered, make: func(t testing.TB, d, _ *nettest.Domain, _ *Identity) *Identity {
		nk, hk := nettest.NewKey(t), newHostKey(t)
		now := time.Now()
		w := d.Grant(t, nettest.PrincipalID(t, nk.PublicKey()), d.Path(t, "alice"), now.Add(-time.Hour), now.Add(time.Hour))
		return &Identity{HostKey: hk, Cert: hostCert(t, nk, hk.GetPublic()), Writecap: w, Path: d.Path(t, "bob")}
	}},
	{name: "host-cert-for-another-host-key", want: caps.ErrWrongHolder, make: func(t testing.TB, d, _ *nettest.Domain, _ *Identity) *Identity {
		nk, hk, other := nettest.NewKey(t), newHostKey(t), newHostKey(t)
		now := time.Now()
		w := d.Grant(t, nettest.PrincipalID(t, nk.PublicKey()), d.Path(t, "carol"), now.Add(-time.Hour), now.Add(time.Hour))
		return &Identity{HostKey: hk, Cert: hostCert(t, nk, other.GetPublic()), Writecap: w, Path: d.Path(t, "carol")}
	}},
	{name: "replayed-credentials", want: caps.ErrWrongHolder, make: func(t testing.TB, _, _ *nettest.Domain, honest *Identity) *Identity {
		return &Identity{HostKey: newHostKey(t), Cert: honest.Cert, Writecap: honest.Writecap, Path: honest.Path}
	}},
	{name: "not-a-node-path", want: caps.ErrPathNotCovered, nodeOnly: true, make: func(t testing.TB, d, _ *nettest.Domain, _ *Identity) *Identity {
		nk, hk := nettest.NewKey(t), newHostKey(t)
		now := time.Now()
		p := d.Path(t, "dave", "deeper")
		w := d.Grant(t, nettest.PrincipalID(t, nk.PublicKey()), p, now.Add(-time.Hour), now.Add(time.Hour))
		return &Identity{HostKey: hk, Cert: hostCert(t, nk, hk.GetPublic()), Writecap: w, Path: p}
	}},
}

// startMalicious starts a node with an invalid identity whose own DHT
// accepts any record, so that what it publishes reaches honest servers.
func startMalicious(t testing.TB, id *Identity, bs ...peer.AddrInfo) *Node {
	t.Helper()
	cfg := testConfig(bs...)
	cfg.allowInvalidIdentity = true
	cfg.acceptAllRecords = true
	return startNode(t, id, cfg)
}

func isAll(err error, targets ...error) bool {
	for _, t := range targets {
		if !errors.Is(err, t) {
			return false
		}
	}
	return true
}

func mustParse(t testing.TB, s string) paths.Path {
	t.Helper()
	p, err := paths.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
