package tpm2key_test

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/keytest"
	"blocktree.dev/bt/tpm/swtpmtest"
	"blocktree.dev/bt/tpm/tpm2key"
)

// testCtx bounds one test's TPM calls.
func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openTPM opens sim's TPM and closes it when the test ends.
func openTPM(t testing.TB, sim *swtpmtest.Sim) *tpm2key.TPM {
	t.Helper()
	tp, err := tpm2key.Open(testCtx(t), sim.Device())
	if err != nil {
		t.Fatalf("Open(%s): %v", sim.Flag(), err)
	}
	t.Cleanup(func() { tp.Close() })
	return tp
}

// newTestKey starts a swtpm and creates a key in it. It returns the key
// (closed when the test ends), its blob and the simulator.
func newTestKey(t testing.TB) (tpm.Key, []byte, *swtpmtest.Sim, *tpm2key.TPM) {
	t.Helper()
	sim := swtpmtest.Start(t)
	tp := openTPM(t, sim)
	k, blob, err := tp.Create(testCtx(t))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return k, blob, sim, tp
}

func mustSign(t testing.TB, k tpm.Key, msg []byte) []byte {
	t.Helper()
	sig, err := k.Sign(testCtx(t), msg)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return sig
}

func mustVerify(t testing.TB, pub crypto.PubKey, msg, sig []byte) {
	t.Helper()
	ok, err := pub.Verify(msg, sig)
	if err != nil || !ok {
		t.Fatalf("Verify = %v, %v; want true", ok, err)
	}
}

func TestConformance(t *testing.T) {
	sim := swtpmtest.Start(t)
	tp := openTPM(t, sim)
	keytest.Run(t, func(t *testing.T) tpm.Key {
		k, _, err := tp.Create(testCtx(t))
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		return k
	})
}

func TestSignVerify(t *testing.T) {
	k, _, sim, _ := newTestKey(t)
	if got, want := k.Info(), (tpm.Info{Kind: tpm.KindTPM, Device: sim.Flag(), Algorithm: "ecdsa-p256"}); got != want {
		t.Errorf("Info() = %+v, want %+v", got, want)
	}
	if _, ok := k.PublicKey().(*crypto.ECDSAPublicKey); !ok {
		t.Fatalf("PublicKey() is %T, want *crypto.ECDSAPublicKey", k.PublicKey())
	}
	for _, n := range []int{0, 1, 64, 4096} {
		t.Run(fmt.Sprintf("len=%d", n), func(t *testing.T) {
			msg := make([]byte, n)
			rand.Read(msg)
			sig := mustSign(t, k, msg)
			mustVerify(t, k.PublicKey(), msg, sig)

			other := append(bytes.Clone(msg), 'x')
			if ok, _ := k.PublicKey().Verify(other, sig); ok {
				t.Error("signature verified for a tampered message")
			}
			for _, i := range []int{0, 4, len(sig) / 2, len(sig) - 1} {
				bad := bytes.Clone(sig)
				bad[i] ^= 0x01
				if ok, _ := k.PublicKey().Verify(msg, bad); ok {
					t.Errorf("signature with byte %d flipped verified", i)
				}
			}
		})
	}
	// ECDSA is randomised: two signatures of one message differ, both verify.
	a, b := mustSign(t, k, []byte("m")), mustSign(t, k, []byte("m"))
	if bytes.Equal(a, b) {
		t.Error("two signatures are identical")
	}
	mustVerify(t, k.PublicKey(), []byte("m"), b)
}

func TestECDH(t *testing.T) {
	k, _, _, _ := newTestKey(t)
	ctx := testCtx(t)
	if k.ECDHPublicKey().Curve() != ecdh.P256() {
		t.Fatalf("ECDHPublicKey is on %v, want P-256", k.ECDHPublicKey().Curve())
	}
	// The agreement key is the signing key: same point.
	raw, _ := k.PublicKey().Raw()
	pk, err := crypto.UnmarshalECDSAPublicKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !pk.Equals(k.PublicKey()) {
		t.Fatal("public key does not survive Raw/Unmarshal")
	}

	t.Run("RoundTrip", func(t *testing.T) {
		for i := range 8 {
			peer, err := ecdh.P256().GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := k.ECDH(ctx, peer.PublicKey())
			if err != nil {
				t.Fatalf("ECDH: %v", err)
			}
			theirs, err := peer.ECDH(k.ECDHPublicKey())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ours, theirs) || len(ours) != 32 {
				t.Fatalf("round %d: secrets differ:\n tpm %x\n go  %x", i, ours, theirs)
			}
		}
	})
	t.Run("X25519", func(t *testing.T) {
		x, _ := ecdh.X25519().GenerateKey(rand.Reader)
		if _, err := k.ECDH(ctx, x.PublicKey()); !errors.Is(err, tpm.ErrCurveMismatch) {
			t.Fatalf("ECDH(X25519 key) = %v, want ErrCurveMismatch", err)
		}
	})
	t.Run("P384", func(t *testing.T) {
		x, _ := ecdh.P384().GenerateKey(rand.Reader)
		if _, err := k.ECDH(ctx, x.PublicKey()); !errors.Is(err, tpm.ErrCurveMismatch) {
			t.Fatalf("ECDH(P-384 key) = %v, want ErrCurveMismatch", err)
		}
	})
	t.Run("NilAndZero", func(t *testing.T) {
		if _, err := k.ECDH(ctx, nil); !errors.Is(err, tpm.ErrCurveMismatch) {
			t.Fatalf("ECDH(nil) = %v, want ErrCurveMismatch", err)
		}
		if _, err := k.ECDH(ctx, &ecdh.PublicKey{}); !errors.Is(err, tpm.ErrCurveMismatch) {
			t.Fatalf("ECDH(zero key) = %v, want ErrCurveMismatch", err)
		}
	})
	t.Run("NotOnCurve", func(t *testing.T) {
		// crypto/ecdh cannot represent such a point; send it to the TPM
		// directly: it must refuse cleanly, and the key keeps working.
		peer, _ := ecdh.P256().GenerateKey(rand.Reader)
		b := peer.PublicKey().Bytes()
		x, y := bytes.Clone(b[1:33]), bytes.Clone(b[33:])
		y[31] ^= 1
		for _, tc := range []struct {
			name string
			x, y []byte
		}{
			{"flipped-y", x, y},
			{"zero", make([]byte, 32), make([]byte, 32)},
			{"empty", nil, nil},
			{"too-long", make([]byte, 33), make([]byte, 33)},
		} {
			t.Run(tc.name, func(t *testing.T) {
				z, err := tpm2key.ZGenUnchecked(ctx, k, tc.x, tc.y)
				if err == nil {
					t.Fatalf("ZGen accepted a point off the curve: %x", z)
				}
				if errors.Is(err, tpm.ErrUnavailable) {
					t.Fatalf("ZGen(off-curve) = %v; want a refusal, not unavailability", err)
				}
			})
		}
		if _, err := k.ECDH(ctx, peer.PublicKey()); err != nil {
			t.Fatalf("ECDH after refused points: %v", err)
		}
	})
}

func TestLoadAfterRestart(t *testing.T) {
	sim := swtpmtest.Start(t)
	tp := openTPM(t, sim)
	ctx := testCtx(t)
	k, blob, err := tp.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := k.PublicKey()
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Sign(ctx, []byte("x")); !errors.Is(err, tpm.ErrClosed) {
		t.Fatalf("Sign on a closed TPM = %v, want ErrClosed", err)
	}

	sim.Restart(t)
	tp2 := openTPM(t, sim)
	k2, err := tp2.Load(ctx, blob)
	if err != nil {
		t.Fatalf("Load after restart: %v", err)
	}
	defer k2.Close()
	if !k2.PublicKey().Equals(pub) {
		t.Fatal("public key changed across restart")
	}
	msg := []byte("after restart")
	mustVerify(t, pub, msg, mustSign(t, k2, msg))
}

func TestKeyAcrossRestart(t *testing.T) {
	k, _, sim, _ := newTestKey(t)
	ctx := testCtx(t)
	before := sim.Flag()
	mustVerify(t, k.PublicKey(), []byte("before"), mustSign(t, k, []byte("before")))
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	want, _ := peer.ECDH(k.ECDHPublicKey())

	for round := range 3 {
		sim.Restart(t)
		if sim.Flag() != before {
			t.Fatalf("swtpm came back on %s, not %s: the open key cannot follow", sim.Flag(), before)
		}
		msg := fmt.Appendf(nil, "after restart %d", round)
		mustVerify(t, k.PublicKey(), msg, mustSign(t, k, msg))
		sim.Restart(t)
		got, err := k.ECDH(ctx, peer.PublicKey())
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("ECDH after restart: %x, %v; want %x", got, err, want)
		}
	}
}

func TestWipedTPM(t *testing.T) {
	k, blob, sim, tp1 := newTestKey(t)
	ctx := testCtx(t)
	sim.Wipe(t)
	// The open key reconnects, finds another storage root key and gives up.
	if _, err := k.Sign(ctx, []byte("x")); !errors.Is(err, tpm.ErrKeyLost) {
		t.Fatalf("Sign on a wiped TPM = %v, want ErrKeyLost", err)
	}
	tp1.Close() // swtpm serves one connection at a time
	tp := openTPM(t, sim)
	_, err := tp.Load(ctx, blob)
	if !errors.Is(err, tpm.ErrKeyLost) {
		t.Fatalf("Load on a wiped TPM = %v, want ErrKeyLost", err)
	}
	t.Logf("Load on a wiped TPM: %v", err)
}

// TestLoadOnAnotherTPM makes a blob that passes the storage root key check
// on another TPM, so the TPM itself must refuse the private area (it does,
// with TPM_RC_INTEGRITY), and that too is ErrKeyLost.
func TestLoadOnAnotherTPM(t *testing.T) {
	ctx := testCtx(t)
	_, blobA, simA, tpA := newTestKey(t)
	tpA.Close()
	simA.Stop()

	_, blobB, _, tpB := newTestKey(t)
	a, err := tpm2key.DecodeBlob(blobA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tpm2key.DecodeBlob(blobB)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.ParentName, b.ParentName) {
		t.Fatal("two fresh TPMs have the same storage root key")
	}
	a.ParentName = b.ParentName
	_, err = tpB.Load(ctx, encode(t, a))
	if !errors.Is(err, tpm.ErrKeyLost) {
		t.Fatalf("Load of another TPM's key = %v, want ErrKeyLost", err)
	}
	t.Logf("Load of another TPM's key: %v", err)

	// The same for a private area altered in the repository.
	b.Private[len(b.Private)-1] ^= 1
	if _, err := tpB.Load(ctx, encode(t, b)); !errors.Is(err, tpm.ErrKeyLost) {
		t.Fatalf("Load of an altered private area = %v, want ErrKeyLost", err)
	}
}

func TestConcurrent(t *testing.T) {
	k, _, _, _ := newTestKey(t)
	ctx := testCtx(t)
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	want, _ := peer.ECDH(k.ECDHPublicKey())
	const workers, each = 32, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers*each*2)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				msg := fmt.Appendf(nil, "worker %d op %d", w, i)
				sig, err := k.Sign(ctx, msg)
				if err != nil {
					errs <- err
					return
				}
				if ok, err := k.PublicKey().Verify(msg, sig); !ok || err != nil {
					errs <- fmt.Errorf("worker %d op %d: signature does not verify (%v)", w, i, err)
				}
				z, err := k.ECDH(ctx, peer.PublicKey())
				if err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(z, want) {
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
}

func TestUnavailable(t *testing.T) {
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := l.Addr().String()
	l.Close()

	// A listener that accepts and never answers: a hung TPM.
	hung, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hung.Close() })
	go func() {
		for {
			c, err := hung.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()

	for _, tc := range []struct {
		name string
		dev  tpm.Device
	}{
		{"closed-port", tpm.Device{Addr: closedAddr}},
		{"hung-peer", tpm.Device{Addr: hung.Addr().String()}},
		{"no-such-device", tpm.Device{Path: "/dev/tpmrm-does-not-exist"}},
		{"not-a-device", tpm.Device{Path: t.TempDir()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			start := time.Now()
			tp, err := tpm2key.Open(ctx, tc.dev)
			if err == nil {
				tp.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, tpm.ErrUnavailable) {
				t.Fatalf("Open = %v, want ErrUnavailable", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("Open took %v with a 500ms context", d)
			}
			t.Logf("%v", err)
		})
	}

	t.Run("stopped-sim", func(t *testing.T) {
		k, _, sim, _ := newTestKey(t)
		sim.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := k.Sign(ctx, []byte("x")); !errors.Is(err, tpm.ErrUnavailable) {
			t.Fatalf("Sign with swtpm stopped = %v, want ErrUnavailable", err)
		}
	})
}

func TestOpenNone(t *testing.T) {
	if _, err := tpm2key.Open(context.Background(), tpm.Device{None: true}); err == nil {
		t.Fatal("Open(none) succeeded")
	}
}

func TestClose(t *testing.T) {
	k, blob, _, tp := newTestKey(t)
	ctx := testCtx(t)
	k2, err := tp.Load(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	if !k2.PublicKey().Equals(k.PublicKey()) {
		t.Fatal("a second load of the blob has another public key")
	}
	if err := k2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := k2.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	mustSign(t, k, []byte("other key still open")) // closing k2 left k alone
	if err := tp.Close(); err != nil {
		t.Fatalf("TPM Close: %v", err)
	}
	if err := tp.Close(); err != nil {
		t.Fatalf("second TPM Close: %v", err)
	}
	if _, err := k.Sign(ctx, []byte("x")); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("Sign after TPM Close = %v, want ErrClosed", err)
	}
	peer, _ := ecdh.P256().GenerateKey(rand.Reader)
	if _, err := k.ECDH(ctx, peer.PublicKey()); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("ECDH after TPM Close = %v, want ErrClosed", err)
	}
	if _, _, err := tp.Create(ctx); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("Create after Close = %v, want ErrClosed", err)
	}
	if _, err := tp.Load(ctx, blob); !errors.Is(err, tpm.ErrClosed) {
		t.Errorf("Load after Close = %v, want ErrClosed", err)
	}
	if err := k.Close(); err != nil {
		t.Errorf("key Close after TPM Close: %v", err)
	}
}

func TestContextEnds(t *testing.T) {
	k, _, _, _ := newTestKey(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := k.Sign(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Sign with a canceled context = %v, want context.Canceled", err)
	}
	// The key still works with a live context.
	mustVerify(t, k.PublicKey(), []byte("y"), mustSign(t, k, []byte("y")))
}

// TestReconnectKeepsHandles drops the connection behind the TPM's back, as a
// timeout mid-command does. swtpm keeps transient objects across
// connections, so the next call must find its key (and parent) still
// loaded under the same handle, checked by Name, rather than load copies
// until the TPM's few object slots run out.
func TestReconnectKeepsHandles(t *testing.T) {
	k, _, _, tp := newTestKey(t)
	h := tpm2key.Handle(k)
	for i := range 8 {
		tpm2key.DropLink(tp)
		msg := fmt.Appendf(nil, "reconnect %d", i)
		mustVerify(t, k.PublicKey(), msg, mustSign(t, k, msg))
		if got := tpm2key.Handle(k); got != h {
			t.Fatalf("round %d: key moved from handle %#x to %#x", i, h, got)
		}
	}
	// New keys still fit: nothing leaked.
	for range 4 {
		k2, _, err := tp.Create(testCtx(t))
		if err != nil {
			t.Fatalf("Create after reconnects: %v", err)
		}
		k2.Close()
	}
}

// TestHandleFlushedBehindBack: another TPM user flushes our key; the next
// call reloads it from the blob and succeeds.
func TestHandleFlushedBehindBack(t *testing.T) {
	k, _, _, _ := newTestKey(t)
	for i := range 3 {
		if err := tpm2key.FlushBehindBack(k); err != nil {
			t.Fatal(err)
		}
		msg := fmt.Appendf(nil, "flushed %d", i)
		mustVerify(t, k.PublicKey(), msg, mustSign(t, k, msg))
	}
}

// TestObjectSlotsExhausted fills the TPM's transient object slots (swtpm
// has three: the parent and two keys): the next Create fails with a clear
// refusal, the open keys keep working, and closing one frees its slot.
func TestObjectSlotsExhausted(t *testing.T) {
	k, _, _, tp := newTestKey(t)
	ctx := testCtx(t)
	var open []tpm.Key
	var err error
	for range 10 {
		var k2 tpm.Key
		if k2, _, err = tp.Create(ctx); err != nil {
			break
		}
		open = append(open, k2)
	}
	if err == nil {
		t.Skip("this TPM holds more than 10 objects")
	}
	if errors.Is(err, tpm.ErrUnavailable) || !strings.Contains(err.Error(), "object slot") {
		t.Fatalf("Create on a full TPM = %v; want a refusal that says the TPM is full", err)
	}
	t.Logf("with %d keys open: %v", len(open)+1, err)
	mustVerify(t, k.PublicKey(), []byte("still works"), mustSign(t, k, []byte("still works")))
	for _, o := range open {
		if err := o.Close(); err != nil {
			t.Fatal(err)
		}
	}
	k3, _, err := tp.Create(ctx)
	if err != nil {
		t.Fatalf("Create after closing keys: %v", err)
	}
	k3.Close()
}

// TestOwnerPassword: a TPM whose owner hierarchy has a password cannot
// create the parent; Open says so and does not call it unavailable.
func TestOwnerPassword(t *testing.T) {
	sim := swtpmtest.Start(t)
	tp := openTPM(t, sim)
	_, err := tpm2.HierarchyChangeAuth{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		NewAuth:    tpm2.TPM2BAuth{Buffer: []byte("owner secret")},
	}.Execute(tpm2key.RawTransport(tp))
	if err != nil {
		t.Fatal(err)
	}
	tp.Close()
	_, err = tpm2key.Open(testCtx(t), sim.Device())
	if err == nil || errors.Is(err, tpm.ErrUnavailable) || !strings.Contains(err.Error(), "password") {
		t.Fatalf("Open with an owner password = %v; want a refusal that names the password", err)
	}
	t.Log(err)
}

// TestCloseAfterDrop: a key closed while its connection is down is still
// flushed (swtpm would otherwise keep it in one of its three slots).
func TestCloseAfterDrop(t *testing.T) {
	_, _, _, tp := newTestKey(t)
	ctx := testCtx(t)
	for range 4 {
		k, _, err := tp.Create(ctx)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		tpm2key.DropLink(tp)
		if err := k.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	}
}
