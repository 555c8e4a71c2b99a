package invite

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm/softkey"
)

type testDomain struct {
	root *softkey.Key
	id   paths.ID
}

func newTestDomain(t *testing.T) *testDomain {
	t.Helper()
	k, err := softkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := caps.PrincipalID(k.PublicKey())
	return &testDomain{root: k, id: id}
}

// invite makes an Invite for name as `bt invite` does.
func (d *testDomain) invite(t *testing.T, name string, expiry time.Time) Invite {
	t.Helper()
	del, _ := softkey.Generate()
	did, _ := caps.PrincipalID(del.PublicKey())
	p, err := paths.New(d.id, name)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	g, err := caps.Issue(context.Background(), d.root, nil, did, p, now.Add(-time.Minute), now.Add(365*24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return Invite{Name: name, Delegate: del, Grant: g, Expiry: expiry}
}

func TestRegistry(t *testing.T) {
	d := newTestDomain(t)
	now := time.Now()
	clock := now
	reg := NewRegistry(d.id, func() time.Time { return clock })
	ctx := context.Background()
	node, _ := softkey.Generate()
	nid, _ := caps.PrincipalID(node.PublicKey())

	secret, err := reg.Add(d.invite(t, "desk", now.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Add(d.invite(t, "desk", now.Add(time.Hour))); !errors.Is(err, ErrNameInUse) {
		t.Fatalf("second invite for the same name: %v", err)
	}
	if _, _, err := reg.Redeem(ctx, bytes.Repeat([]byte{1}, SecretSize), node.PublicKey()); !errors.Is(err, ErrUnknown) {
		t.Fatalf("wrong secret: %v", err)
	}
	w, p, err := reg.Redeem(ctx, secret, node.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if err := caps.NewVerifier().VerifyHolder(w, nid, p); err != nil || p.Base() != "desk" {
		t.Fatalf("redeemed writecap for %s: %v", p, err)
	}
	if len(w.Links()) != 2 {
		t.Fatalf("chain of %d links, want node ← delegate ← root", len(w.Links()))
	}
	if _, _, err := reg.Redeem(ctx, secret, node.PublicKey()); !errors.Is(err, ErrUsed) {
		t.Fatalf("reused token: %v", err)
	}

	secret2, err := reg.Add(d.invite(t, "nas", now.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	clock = now.Add(2 * time.Hour)
	if _, _, err := reg.Redeem(ctx, secret2, node.PublicKey()); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token: %v", err)
	}
	if len(reg.Pending()) != 0 {
		t.Fatalf("pending: %v", reg.Pending())
	}
}

func TestRegistryRefusesForeignGrant(t *testing.T) {
	d, other := newTestDomain(t), newTestDomain(t)
	reg := NewRegistry(d.id, nil)
	inv := other.invite(t, "desk", time.Now().Add(time.Hour))
	if _, err := reg.Add(inv); !errors.Is(err, caps.ErrRootMismatch) {
		t.Fatalf("grant from another root: %v", err)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	d := newTestDomain(t)
	a, _ := ma.NewMultiaddr("/ip4/127.0.0.1/tcp/4737/p2p/12D3KooWGSLD9v4SFTpirvXd6vXqoMpfXh2bR7UEpY8qZcfCp61S")
	tok := Token{Root: d.id, Name: "desk", Addrs: []ma.Multiaddr{a}, Secret: bytes.Repeat([]byte{7}, SecretSize)}
	got, err := ParseToken(tok.String() + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if got.Root != tok.Root || got.Name != tok.Name || !got.Addrs[0].Equal(a) || !bytes.Equal(got.Secret, tok.Secret) {
		t.Fatalf("round trip: %+v", got)
	}
	for _, bad := range []string{"", "hello", "btinvite1-", "btinvite1-!!!", tok.String()[:40]} {
		if _, err := ParseToken(bad); !errors.Is(err, ErrBadToken) {
			t.Errorf("ParseToken(%q): %v", bad, err)
		}
	}
}

// TestJoinOverLibp2p runs the join protocol between two real libp2p hosts
// on loopback.
func TestJoinOverLibp2p(t *testing.T) {
	d := newTestDomain(t)
	reg := NewRegistry(d.id, nil)
	inviter, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer inviter.Close()
	boot := inviter.Addrs()
	srv := NewServer(inviter, reg, func() []ma.Multiaddr { return boot }, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	defer func() {
		srv.Close()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	joiner, err := libp2p.New(libp2p.NoListenAddrs)
	if err != nil {
		t.Fatal(err)
	}
	defer joiner.Close()

	p2pAddrs, _ := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: inviter.ID(), Addrs: inviter.Addrs()})
	secret, err := reg.Add(d.invite(t, "desk", time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	tok := Token{Root: d.id, Name: "desk", Addrs: p2pAddrs, Secret: secret}
	node, _ := softkey.Generate()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := Join(ctx, joiner, tok, node.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if res.Path.Base() != "desk" || len(res.Bootstrap) == 0 {
		t.Fatalf("result %+v", res)
	}
	if _, err := Join(ctx, joiner, tok, node.PublicKey()); !errors.Is(err, ErrUsed) {
		t.Fatalf("second join with the same token: %v", err)
	}
	tok.Secret = bytes.Repeat([]byte{9}, SecretSize)
	if _, err := Join(ctx, joiner, tok, node.PublicKey()); !errors.Is(err, ErrUnknown) {
		t.Fatalf("join with a wrong secret: %v", err)
	}
	inviter.Close()
	if _, err := Join(ctx, joiner, tok, node.PublicKey()); !errors.Is(err, ErrNoInviter) {
		t.Fatalf("join with the inviter gone: %v", err)
	}
}

func FuzzParseToken(f *testing.F) {
	f.Add("btinvite1-")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			return
		}
		again, err := ParseToken(tok.String())
		if err != nil || again.String() != tok.String() {
			t.Fatalf("re-encoded token does not parse back: %v", err)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	node, _ := softkey.Generate()
	nb, _ := crypto.MarshalPublicKey(node.PublicKey())
	good, _ := canon.Marshal(&request{V: 1, Secret: bytes.Repeat([]byte{1}, SecretSize), Node: nb})
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		secret, key, err := decodeRequest(data)
		if err == nil && (len(secret) != SecretSize || key == nil) {
			t.Fatal("accepted a request without a secret or key")
		}
	})
}

func FuzzDecodeResponse(f *testing.F) {
	good, _ := canon.Marshal(&response{V: 1, Error: kindUsed, Message: "used"})
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		if r, err := decodeResponse(data); err == nil && r.V != 1 {
			t.Fatal("accepted another version")
		}
	})
}

// TestServerStops: Close ends Serve and unregisters the protocol, a
// second Close is a no-op, and a server closed before it serves does
// not serve.
func TestServerStops(t *testing.T) {
	d := newTestDomain(t)
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	srv := NewServer(h, NewRegistry(d.id, nil), func() []ma.Multiaddr { return nil }, nil)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(h.Mux().Protocols(), ProtocolID) {
		if time.Now().After(deadline) {
			t.Fatal("the join protocol is not registered")
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv.Close()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	srv.Close()
	if slices.Contains(h.Mux().Protocols(), ProtocolID) {
		t.Fatal("the join protocol is still registered after Close")
	}

	early := NewServer(h, NewRegistry(d.id, nil), nil, nil)
	early.Close()
	if err := early.Serve(context.Background()); err != nil {
		t.Fatalf("Serve after Close: %v", err)
	}
	if slices.Contains(h.Mux().Protocols(), ProtocolID) {
		t.Fatal("a closed server registered the join protocol")
	}

	ctx, cancel := context.WithCancel(context.Background())
	byCtx := NewServer(h, NewRegistry(d.id, nil), nil, nil)
	go func() { served <- byCtx.Serve(ctx) }()
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	byCtx.Close()
}
