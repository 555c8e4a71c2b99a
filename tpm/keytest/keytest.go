// Package keytest is the conformance suite for tpm.Key: every key custody
// implementation runs it from its own tests.
//
//	func TestConformance(t *testing.T) {
//		keytest.Run(t, func(t *testing.T) tpm.Key { return newTestKey(t) })
//	}
package keytest

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/tpm"
)

// Run runs the suite. newKey returns a fresh key for each subtest; the
// suite closes it.
func Run(t *testing.T, newKey func(t *testing.T) tpm.Key) {
	ctx := func(t *testing.T) context.Context {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return c
	}
	t.Run("SignVerify", func(t *testing.T) {
		k := newKey(t)
		defer k.Close()
		msg := []byte("blocktree conformance")
		sig, err := k.Sign(ctx(t), msg)
		if err != nil {
			t.Fatalf("Sign: %v", err)
		}
		ok, err := k.PublicKey().Verify(msg, sig)
		if err != nil || !ok {
			t.Fatalf("Verify(own signature) = %v, %v; want true", ok, err)
		}
		ok, _ = k.PublicKey().Verify([]byte("another message"), sig)
		if ok {
			t.Fatal("signature verified for another message")
		}
		bad := append([]byte(nil), sig...)
		bad[len(bad)/2] ^= 1
		if ok, _ := k.PublicKey().Verify(msg, bad); ok {
			t.Fatal("tampered signature verified")
		}
	})
	t.Run("PeerIDStable", func(t *testing.T) {
		k := newKey(t)
		defer k.Close()
		a, err := peer.IDFromPublicKey(k.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		b, _ := peer.IDFromPublicKey(k.PublicKey())
		if a != b || a == "" {
			t.Fatalf("peer IDs %q, %q", a, b)
		}
	})
	t.Run("ECDH", func(t *testing.T) {
		k := newKey(t)
		defer k.Close()
		curve := k.ECDHPublicKey().Curve()
		other, err := curve.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		got, err := k.ECDH(ctx(t), other.PublicKey())
		if err != nil {
			t.Fatalf("ECDH: %v", err)
		}
		want, err := other.ECDH(k.ECDHPublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Fatalf("shared secrets differ:\n key   %x\n other %x", got, want)
		}
	})
	t.Run("ECDHCurveMismatch", func(t *testing.T) {
		k := newKey(t)
		defer k.Close()
		other := ecdh.X25519()
		if k.ECDHPublicKey().Curve() == ecdh.X25519() {
			other = ecdh.P256()
		}
		o, _ := other.GenerateKey(rand.Reader)
		if _, err := k.ECDH(ctx(t), o.PublicKey()); !errors.Is(err, tpm.ErrCurveMismatch) {
			t.Fatalf("ECDH with a key on another curve: %v, want ErrCurveMismatch", err)
		}
		if _, err := k.ECDH(ctx(t), nil); !errors.Is(err, tpm.ErrCurveMismatch) {
			t.Fatalf("ECDH(nil): %v, want ErrCurveMismatch", err)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		k := newKey(t)
		defer k.Close()
		c := ctx(t)
		peerKey, _ := k.ECDHPublicKey().Curve().GenerateKey(rand.Reader)
		want, _ := peerKey.ECDH(k.ECDHPublicKey())
		const workers, each = 16, 4
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					msg := fmt.Appendf(nil, "worker %d op %d", w, i)
					sig, err := k.Sign(c, msg)
					if err != nil {
						errs <- err
						return
					}
					if ok, err := k.PublicKey().Verify(msg, sig); !ok || err != nil {
						errs <- fmt.Errorf("worker %d op %d: signature does not verify (%v)", w, i, err)
					}
					s, err := k.ECDH(c, peerKey.PublicKey())
					if err != nil {
						errs <- err
						return
					}
					if string(s) != string(want) {
						errs <- fmt.Errorf("worker %d op %d: wrong shared secret", w, i)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
	t.Run("Closed", func(t *testing.T) {
		k := newKey(t)
		if err := k.Close(); err != nil {
			t.Fatal(err)
		}
		if err := k.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if _, err := k.Sign(ctx(t), []byte("x")); !errors.Is(err, tpm.ErrClosed) {
			t.Fatalf("Sign after Close: %v, want ErrClosed", err)
		}
		o, _ := k.ECDHPublicKey().Curve().GenerateKey(rand.Reader)
		if _, err := k.ECDH(ctx(t), o.PublicKey()); !errors.Is(err, tpm.ErrClosed) {
			t.Fatalf("ECDH after Close: %v, want ErrClosed", err)
		}
	})
	t.Run("Info", func(t *testing.T) {
		k := newKey(t)
		defer k.Close()
		i := k.Info()
		if i.Kind != tpm.KindSoftware && i.Kind != tpm.KindTPM {
			t.Fatalf("Info().Kind = %q", i.Kind)
		}
		if (i.Kind == tpm.KindTPM) != (i.Device != "") {
			t.Fatalf("Info() = %+v: a TPM key names its device, a software key none", i)
		}
		if i.Algorithm == "" {
			t.Fatal("Info().Algorithm is empty")
		}
	})
}
