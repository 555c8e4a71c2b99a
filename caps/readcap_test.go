package caps

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/softkey"
	"blocktree.dev/bt/tpm/swtpmtest"
	"blocktree.dev/bt/tpm/tpm2key"
)

const testPurpose = "blocktree readcap test v1"

// reader is a principal that can open readcaps: its libp2p public key and
// its key agreement.
type reader interface {
	PublicKey() crypto.PubKey
	Decapsulator
}

// p256Reader is a Go ECDSA P-256 key standing in for a TPM key: the same
// key signs (ECDSA) and agrees (ECDH), as a tpm2key key does.
type p256Reader struct {
	pub crypto.PubKey
	x   *ecdh.PrivateKey
}

func newP256Reader(t testing.TB) *p256Reader {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.ECDSAPublicKeyFromPubKey(k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	x, err := k.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return &p256Reader{pub: pub, x: x}
}

func (r *p256Reader) PublicKey() crypto.PubKey       { return r.pub }
func (r *p256Reader) ECDHPublicKey() *ecdh.PublicKey { return r.x.PublicKey() }
func (r *p256Reader) ECDH(_ context.Context, remote *ecdh.PublicKey) ([]byte, error) {
	if remote == nil || remote.Curve() != ecdh.P256() {
		return nil, fmt.Errorf("p256 reader: %w", tpm.ErrCurveMismatch)
	}
	return r.x.ECDH(remote)
}

func readerID(t testing.TB, r interface{ PublicKey() crypto.PubKey }) paths.ID {
	t.Helper()
	id, err := PrincipalID(r.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newSoftReader(t testing.TB) *softkey.Key {
	t.Helper()
	k, err := softkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// readerKinds are the custodies a reader's key may have.
var readerKinds = []struct {
	name  string
	curve string
	make  func(t testing.TB) reader
}{
	{"softkey-x25519", CurveX25519, func(t testing.TB) reader { return newSoftReader(t) }},
	{"ecdsa-p256", CurveP256, func(t testing.TB) reader { return newP256Reader(t) }},
}

func randomKey(t testing.TB, n int) []byte {
	t.Helper()
	k := make([]byte, n)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestECDHPublicKeyAgreesWithCustody: the key-agreement key derived from a
// principal's public key is the one its custodian agrees with.
func TestECDHPublicKeyAgreesWithCustody(t *testing.T) {
	for i := range 20 {
		k := newSoftReader(t)
		x, err := ECDHPublicKey(k.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		if !x.Equal(k.ECDHPublicKey()) {
			t.Fatalf("key %d: X25519 from the Ed25519 public key %x, softkey derives %x", i, x.Bytes(), k.ECDHPublicKey().Bytes())
		}
	}
	p := newP256Reader(t)
	x, err := ECDHPublicKey(p.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !x.Equal(p.ECDHPublicKey()) {
		t.Fatal("P-256 key agreement key differs from the ECDSA key's point")
	}
}

func TestECDHPublicKeyRefusesOtherTypes(t *testing.T) {
	_, secp, err := crypto.GenerateSecp256k1Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, p384, err := crypto.GenerateECDSAKeyPairWithCurve(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, pk := range map[string]crypto.PubKey{"secp256k1": secp, "ecdsa-p384": p384, "nil": nil} {
		if _, err := ECDHPublicKey(pk); !errors.Is(err, ErrKeyType) {
			t.Errorf("%s: got %v, want ErrKeyType", name, err)
		}
		if _, err := WrapKey(pk, randomKey(t, 32), testPurpose); err == nil {
			t.Errorf("%s: WrapKey accepted it", name)
		}
	}
}

func TestReadcapRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, kind := range readerKinds {
		for _, n := range []int{MinWrappedKey, 32, MaxWrappedKey} {
			t.Run(fmt.Sprintf("%s/%d", kind.name, n), func(t *testing.T) {
				r := kind.make(t)
				key := randomKey(t, n)
				rc, err := WrapKey(r.PublicKey(), key, testPurpose)
				if err != nil {
					t.Fatal(err)
				}
				if want := readerID(t, r); rc.Reader != want || rc.Curve != kind.curve {
					t.Fatalf("readcap for %s on %s, want %s on %s", rc.Reader, rc.Curve, want, kind.curve)
				}
				dec, err := DecodeReadcap(rc.Marshal())
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(dec.Marshal(), rc.Marshal()) || dec.Reader != rc.Reader || !dec.ReaderKey().Equal(r.ECDHPublicKey()) {
					t.Fatal("decoded readcap differs")
				}
				got, err := dec.Unwrap(ctx, r.ECDH, testPurpose)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, key) {
					t.Fatal("unwrapped another key")
				}
				got, err = dec.UnwrapWith(ctx, r, testPurpose)
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("UnwrapWith: %v", err)
				}
			})
		}
	}
}

func TestReadcapFreshPerWrap(t *testing.T) {
	r := newSoftReader(t)
	key := randomKey(t, 32)
	a, _ := WrapKey(r.PublicKey(), key, testPurpose)
	b, _ := WrapKey(r.PublicKey(), key, testPurpose)
	if bytes.Equal(a.Marshal(), b.Marshal()) {
		t.Fatal("two wraps of one key are identical: the ephemeral key or nonce is not fresh")
	}
}

func TestReadcapWrongKeySize(t *testing.T) {
	r := newSoftReader(t)
	for _, n := range []int{0, MinWrappedKey - 1, MaxWrappedKey + 1} {
		if _, err := WrapKey(r.PublicKey(), make([]byte, n), testPurpose); err == nil {
			t.Errorf("wrapped a %d-byte key", n)
		}
	}
}

func TestReadcapWrongReader(t *testing.T) {
	ctx := context.Background()
	for _, kind := range readerKinds {
		for _, other := range readerKinds {
			t.Run(kind.name+"/opened-by-"+other.name, func(t *testing.T) {
				rc, err := WrapKey(kind.make(t).PublicKey(), randomKey(t, 32), testPurpose)
				if err != nil {
					t.Fatal(err)
				}
				mallory := other.make(t)
				if _, err := rc.UnwrapWith(ctx, mallory, testPurpose); !errors.Is(err, ErrNotReader) {
					t.Errorf("UnwrapWith: got %v, want ErrNotReader", err)
				}
				_, err = rc.Unwrap(ctx, mallory.ECDH, testPurpose)
				want := ErrTampered // same curve: only the tag tells
				if kind.curve != other.curve {
					want = ErrNotReader
				}
				if !errors.Is(err, want) {
					t.Errorf("Unwrap: got %v, want %v", err, want)
				}
			})
		}
	}
}

func TestReadcapWrongPurpose(t *testing.T) {
	r := newSoftReader(t)
	rc, _ := WrapKey(r.PublicKey(), randomKey(t, 32), testPurpose)
	if _, err := rc.UnwrapWith(context.Background(), r, testPurpose+" other"); !errors.Is(err, ErrTampered) {
		t.Fatalf("got %v, want ErrTampered", err)
	}
}

func TestReadcapECDHFailure(t *testing.T) {
	r := newSoftReader(t)
	rc, _ := WrapKey(r.PublicKey(), randomKey(t, 32), testPurpose)
	r.Close()
	if _, err := rc.UnwrapWith(context.Background(), r, testPurpose); !errors.Is(err, tpm.ErrClosed) {
		t.Fatalf("got %v, want the key's own error", err)
	}
}

// TestReadcapTampered flips every bit of an encoding: each result either
// fails to decode or fails to open, never yields a key.
func TestReadcapTampered(t *testing.T) {
	ctx := context.Background()
	for _, kind := range readerKinds {
		t.Run(kind.name, func(t *testing.T) {
			r := kind.make(t)
			rc, err := WrapKey(r.PublicKey(), randomKey(t, 32), testPurpose)
			if err != nil {
				t.Fatal(err)
			}
			raw := rc.Marshal()
			decoded := 0
			for i := range raw {
				for bit := range 8 {
					b := bytes.Clone(raw)
					b[i] ^= 1 << bit
					dec, err := DecodeReadcap(b)
					if err != nil {
						if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
							t.Fatalf("byte %d bit %d: decode error %v wraps no sentinel", i, bit, err)
						}
						continue
					}
					decoded++
					if _, err := dec.Unwrap(ctx, r.ECDH, testPurpose); err == nil {
						t.Fatalf("byte %d bit %d: altered readcap opened", i, bit)
					}
				}
			}
			if decoded == 0 {
				t.Fatal("no flip decoded: the authentication tag went untested")
			}
		})
	}
}

// TestReadcapReaderSwapped: naming another reader in a readcap is caught
// by the decoder (the reader's key is not the ID's), and wrapping the
// same ciphertext in a consistent header fails authentication.
func TestReadcapReaderSwapped(t *testing.T) {
	alice, bob := newSoftReader(t), newSoftReader(t)
	rc, _ := WrapKey(alice.PublicKey(), randomKey(t, 32), testPurpose)
	w := rc.wire()
	w.Reader = string(readerID(t, bob))
	b, err := canon.Marshal(&w)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeReadcap(b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("reader swapped: got %v, want ErrMalformed", err)
	}
	w.RPK = bob.ECDHPublicKey().Bytes()
	b, _ = canon.Marshal(&w)
	dec, err := DecodeReadcap(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dec.UnwrapWith(context.Background(), bob, testPurpose); !errors.Is(err, ErrTampered) {
		t.Fatalf("bob opened alice's readcap: %v", err)
	}
}

func TestDecodeReadcapErrors(t *testing.T) {
	r := newSoftReader(t)
	rc, _ := WrapKey(r.PublicKey(), randomKey(t, 32), testPurpose)
	good := rc.wire()
	p := newP256Reader(t)
	enc := func(f func(w *wireReadcap)) []byte {
		w := good
		f(&w)
		b, err := canon.Marshal(&w)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"garbage", []byte("not cbor"), ErrMalformed},
		{"oversized", make([]byte, MaxReadcapSize+1), ErrMalformed},
		{"version-2", enc(func(w *wireReadcap) { w.V = 2 }), ErrUnknownVersion},
		{"bad-reader-id", enc(func(w *wireReadcap) { w.Reader = "nobody" }), ErrMalformed},
		{"unknown-curve", enc(func(w *wireReadcap) { w.Curve = "p384" }), ErrMalformed},
		{"eph-not-a-key", enc(func(w *wireReadcap) { w.Eph = w.Eph[:31] }), ErrMalformed},
		{"eph-on-other-curve", enc(func(w *wireReadcap) { w.Eph = p.ECDHPublicKey().Bytes() }), ErrMalformed},
		{"rpk-not-a-key", enc(func(w *wireReadcap) { w.RPK = nil }), ErrMalformed},
		{"short-nonce", enc(func(w *wireReadcap) { w.Nonce = w.Nonce[:8] }), ErrMalformed},
		{"no-key", enc(func(w *wireReadcap) { w.Wrapped = nil }), ErrMalformed},
		{"short-key", enc(func(w *wireReadcap) { w.Wrapped = w.Wrapped[:MinWrappedKey+gcmTagSize-1] }), ErrMalformed},
		{"long-key", enc(func(w *wireReadcap) { w.Wrapped = make([]byte, MaxWrappedKey+gcmTagSize+1) }), ErrMalformed},
		{"p256-rpk-of-another", enc(func(w *wireReadcap) {
			w.Curve, w.Eph, w.RPK = CurveP256, p.ECDHPublicKey().Bytes(), newP256Reader(t).ECDHPublicKey().Bytes()
			w.Reader = string(readerID(t, p))
		}), ErrMalformed},
		{"x25519-for-ecdsa-reader", enc(func(w *wireReadcap) { w.Reader = string(readerID(t, p)) }), ErrMalformed},
		{"trailing-bytes", append(bytes.Clone(rc.Marshal()), 0), ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := DecodeReadcap(c.data); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// frozenReadcap is a version-1 readcap made once (X25519), wrapping the
// key 00 01 … 1f for the softkey of seed 40 41 … 5f, purpose
// "blocktree frozen readcap example". Every build must still open it.
const frozenReadcap = "a7617601636570685820ace686c7f3da1b59ad8a799c0c56e1b1d6a237575f1643eb2aa9058391cbc068636b65795830e4b8049af627aca27c60f2c14350d54876014ab2e8e97fc0fed2519b311a7b783a691c59ad4dda10c2e903e931803c996372706b5820f14b5173130a1b80687f273d49e8f4740a793a949b83b105837f2a61e8fee14f65637572766566783235353139656e6f6e63654c4c18fa609c3af4a48403dcb4667265616465727834313244334b6f6f57434b71395a7663636a6d43716842625073726770414b42485751706742363172754d31394379417648314370"

// frozenSeedAndKey returns the frozen readcap's reader seed and key.
func frozenSeedAndKey() (seed, key []byte) {
	seed, key = make([]byte, 32), make([]byte, 32)
	for i := range seed {
		seed[i], key[i] = byte(0x40+i), byte(i)
	}
	return seed, key
}

func TestFrozenReadcap(t *testing.T) {
	raw, err := hex.DecodeString(frozenReadcap)
	if err != nil {
		t.Fatal(err)
	}
	seed, key := frozenSeedAndKey()
	k, err := softkey.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := DecodeReadcap(raw)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Reader != readerID(t, k) || rc.Curve != CurveX25519 {
		t.Fatalf("frozen readcap for %s on %s", rc.Reader, rc.Curve)
	}
	got, err := rc.UnwrapWith(context.Background(), k, "blocktree frozen readcap example")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, key) {
		t.Fatalf("frozen readcap opened to %x", got)
	}
}

// TestReadcapSwtpm wraps to a key inside a real (software) TPM and opens
// the readcap with TPM2_ECDH_ZGen.
func TestReadcapSwtpm(t *testing.T) {
	sim := swtpmtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, err := tpm2key.Open(ctx, sim.Device())
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	k, _, err := tp.Create(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	x, err := ECDHPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !x.Equal(k.ECDHPublicKey()) {
		t.Fatal("the TPM key's ECDH point differs from its ECDSA public key")
	}
	key := randomKey(t, 32)
	rc, err := WrapKey(k.PublicKey(), key, testPurpose)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Curve != CurveP256 || rc.Reader != readerID(t, k) {
		t.Fatalf("readcap on %s for %s", rc.Curve, rc.Reader)
	}
	dec, err := DecodeReadcap(rc.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	got, err := dec.Unwrap(ctx, k.ECDH, testPurpose)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, key) {
		t.Fatal("TPM unwrapped another key")
	}
	// A softkey's readcap is on X25519, which the TPM key cannot take.
	soft, _ := WrapKey(newSoftReader(t).PublicKey(), key, testPurpose)
	if _, err := soft.Unwrap(ctx, k.ECDH, testPurpose); !errors.Is(err, ErrNotReader) {
		t.Fatalf("TPM opening an X25519 readcap: got %v, want ErrNotReader", err)
	}
	other, _ := WrapKey(newP256Reader(t).PublicKey(), key, testPurpose)
	if _, err := other.UnwrapWith(ctx, k, testPurpose); !errors.Is(err, ErrNotReader) {
		t.Fatalf("TPM opening another P-256 reader's readcap: got %v, want ErrNotReader", err)
	}
}

func FuzzDecodeReadcap(f *testing.F) {
	if raw, err := hex.DecodeString(frozenReadcap); err == nil {
		f.Add(raw)
	}
	seed, key := frozenSeedAndKey()
	k, err := softkey.FromSeed(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rc, err := DecodeReadcap(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("error %v wraps no sentinel", err)
			}
			return
		}
		if !bytes.Equal(rc.Marshal(), data) {
			t.Fatal("decoded readcap re-encodes differently")
		}
		if again := rc.wire(); !bytes.Equal(mustCanon(t, &again), data) {
			t.Fatal("readcap fields re-encode differently")
		}
		// Opening anything decodable must not panic; only the frozen
		// readcap opens, and only to its key.
		got, err := rc.UnwrapWith(context.Background(), k, "blocktree frozen readcap example")
		if err == nil && !bytes.Equal(got, key) {
			t.Fatal("a fuzzed readcap opened to another key")
		}
	})
}

func mustCanon(t *testing.T, v any) []byte {
	t.Helper()
	b, err := canon.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
