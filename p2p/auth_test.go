package p2p

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/internal/nettest"
)

func TestAuthMutual(t *testing.T) {
	d := nettest.NewDomain(t)
	nodes := newCluster(t, d, nil, "laptop", "desktop")
	a, b := nodes[0], nodes[1]
	ctx := nettest.Context(t, 10*time.Second)
	pid, err := b.Connect(ctx, a.Path())
	if err != nil {
		t.Fatal(err)
	}
	if pid != a.ID() {
		t.Fatalf("Connect(%s) = %s, want %s", a.Path(), pid, a.ID())
	}
	if p, ok := b.VerifiedPath(a.ID()); !ok || p != a.Path() {
		t.Errorf("b.VerifiedPath(a) = %q, %v; want %s", p, ok, a.Path())
	}
	// a verifies b on the same connection, independently.
	if p, err := a.waitVerified(ctx, b.ID()); err != nil || p != b.Path() {
		t.Errorf("a.waitVerified(b) = %q, %v; want %s", p, err, b.Path())
	}
	found := false
	for _, pi := range a.Peers() {
		if pi.ID == b.ID() {
			found = true
			if pi.Path != b.Path() || pi.Unverified != "" || len(pi.Addrs) == 0 {
				t.Errorf("a.Peers() entry for b = %+v", pi)
			}
		}
	}
	if !found {
		t.Errorf("a.Peers() lacks b")
	}
	rtt, err := b.Ping(ctx, a.Path())
	if err != nil || rtt <= 0 {
		t.Errorf("Ping = %v, %v", rtt, err)
	}
}

// TestAuthRefused: a peer presenting credentials that do not prove its path
// stays unverified, with the caps error that refused it, and cannot be
// connected to by that path.
func TestAuthRefused(t *testing.T) {
	d, evil := nettest.NewDomain(t), nettest.NewDomain(t)
	honest := newCluster(t, d, nil, "honest")[0]
	for _, bad := range badIdentities {
		t.Run(bad.name, func(t *testing.T) {
			id := bad.make(t, d, evil, honest.id)
			m := startMalicious(t, id)
			ctx := nettest.Context(t, 10*time.Second)
			if err := m.Host().Connect(ctx, honest.AddrInfo()); err != nil {
				t.Fatal(err)
			}
			_, err := honest.waitVerified(ctx, m.ID())
			if !isAll(err, ErrNotAuthenticated, bad.want) {
				t.Fatalf("waitVerified = %v; want %v and %v", err, ErrNotAuthenticated, bad.want)
			}
			if ctx.Err() != nil {
				t.Fatalf("refusal took until the deadline")
			}
			if p, ok := honest.VerifiedPath(m.ID()); ok {
				t.Errorf("VerifiedPath = %s, true", p)
			}
			for _, pi := range honest.Peers() {
				if pi.ID == m.ID() && (!pi.Path.IsZero() || pi.Unverified == "") {
					t.Errorf("Peers() entry = %+v, want unverified with a reason", pi)
				}
			}
			// The honest node does not answer its pings.
			if err := m.ping(ctx, honest.ID(), []byte{1}); !errors.Is(err, ErrUnreachable) {
				t.Errorf("ping from unverified peer: %v, want refusal", err)
			}
			// The honest side proved itself to the malicious one, though.
			if p, err := m.waitVerified(ctx, honest.ID()); err != nil || p != honest.Path() {
				t.Errorf("m.waitVerified(honest) = %s, %v", p, err)
			}
		})
	}
}

// TestVerifyProofTable checks verifyProof directly, including proofs that
// the wire refuses before verification.
func TestVerifyProofTable(t *testing.T) {
	d, evil := nettest.NewDomain(t), nettest.NewDomain(t)
	good, _ := member(t, d, "laptop")
	v := caps.NewVerifier()
	certs := newCertCache()
	now := time.Now()
	enc := func(id *Identity) []byte {
		b, err := encodeProof(id)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p, exp, err := verifyProof(certs, v, good.HostKey.GetPublic(), enc(good), now)
	if err != nil || p != good.Path || !exp.Equal(good.Expiry()) {
		t.Fatalf("good proof: %s %v %v", p, exp, err)
	}
	for _, bad := range badIdentities {
		t.Run(bad.name, func(t *testing.T) {
			id := bad.make(t, d, evil, good)
			_, _, err := verifyProof(certs, v, id.HostKey.GetPublic(), enc(id), now)
			if !errors.Is(err, bad.want) {
				t.Fatalf("verifyProof = %v, want %v", err, bad.want)
			}
		})
	}
	t.Run("expired-host-cert", func(t *testing.T) {
		_, _, err := verifyProof(certs, v, good.HostKey.GetPublic(), enc(good), good.Cert.Expiry.Add(time.Second))
		if !errors.Is(err, caps.ErrExpired) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no-remote-key", func(t *testing.T) {
		_, _, err := verifyProof(certs, v, nil, enc(good), now)
		if !errors.Is(err, caps.ErrWrongHolder) {
			t.Fatalf("got %v", err)
		}
	})
	for name, data := range map[string][]byte{
		"empty":         nil,
		"garbage":       []byte("not cbor"),
		"trailing-byte": append(enc(good), 0),
		"too-big":       make([]byte, MaxProofSize+1),
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := verifyProof(certs, v, good.HostKey.GetPublic(), data, now)
			if !errors.Is(err, caps.ErrMalformed) {
				t.Fatalf("got %v, want %v", err, caps.ErrMalformed)
			}
		})
	}
	t.Run("unknown-version", func(t *testing.T) {
		b, err := canon.Marshal(&wireProof{V: 2, Path: good.Path.String(), HostCert: good.Cert.Marshal(), Writecap: good.Writecap.Marshal()})
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := verifyProof(certs, v, good.HostKey.GetPublic(), b, now); !errors.Is(err, caps.ErrUnknownVersion) {
			t.Fatalf("got %v", err)
		}
	})
}

// TestPingRefusesUnauthenticatedHost: a plain libp2p host that never sends
// a proof gets no echo, and a node waiting for its proof gives up at the
// deadline with ErrNotAuthenticated.
func TestPingRefusesUnauthenticatedHost(t *testing.T) {
	d := nettest.NewDomain(t)
	n := newCluster(t, d, nil, "laptop")[0]
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx := nettest.Context(t, 10*time.Second)
	if err := h.Connect(ctx, n.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, n.ID(), PingProtocol)
	if err != nil {
		t.Fatal(err)
	}
	// The handler waits up to authTimeout for a proof that never comes;
	// nothing may arrive meanwhile.
	_ = s.SetDeadline(time.Now().Add(time.Second))
	if _, err := s.Write([]byte{1, 42}); err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(s); len(b) > 0 {
		t.Fatalf("unauthenticated ping answered: %x (%v)", b, err)
	}
	s.Reset()
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := n.waitVerified(short, h.ID()); !isAll(err, ErrNotAuthenticated, context.DeadlineExceeded) {
		t.Fatalf("waitVerified = %v", err)
	}
}

// TestAuthOversizedProof: a frame larger than MaxProofSize is refused
// without being read.
func TestAuthOversizedProof(t *testing.T) {
	d := nettest.NewDomain(t)
	n := newCluster(t, d, nil, "laptop")[0]
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	ctx := nettest.Context(t, 10*time.Second)
	if err := h.Connect(ctx, n.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	s, err := h.NewStream(ctx, n.ID(), AuthProtocol)
	if err != nil {
		t.Fatal(err)
	}
	frame := binary.AppendUvarint(nil, MaxProofSize+1)
	frame = append(frame, bytes.Repeat([]byte{0}, 64)...)
	_, _ = s.Write(frame)
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(s); err == nil && len(b) > 0 {
		t.Fatalf("oversized proof answered %x", b)
	}
	_, err = n.waitVerified(ctx, h.ID())
	if !isAll(err, ErrNotAuthenticated, caps.ErrMalformed) {
		t.Fatalf("waitVerified = %v", err)
	}
}
