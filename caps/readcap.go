package caps

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"filippo.io/edwards25519"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/paths"
	"blocktree.dev/bt/tpm"
)

// Errors of readcaps, besides ErrMalformed and ErrUnknownVersion from
// DecodeReadcap.
var (
	// ErrNotReader: the key offered to open a readcap is not the key it was
	// wrapped to (or is on another curve).
	ErrNotReader = errors.New("not the reader of this readcap")
	// ErrTampered: the wrapped key does not authenticate: the readcap was
	// altered, opened for another purpose, or (when the opener's public
	// key is unknown) wrapped to another key.
	ErrTampered = errors.New("readcap does not authenticate (altered, other purpose, or another reader's)")
	// ErrKeyType: a public key that cannot do key agreement (not Ed25519
	// or ECDSA P-256).
	ErrKeyType = errors.New("key type cannot receive readcaps (want Ed25519 or ECDSA P-256)")
)

// Readcap limits.
const (
	// MinWrappedKey and MaxWrappedKey bound the length of the key a readcap
	// carries.
	MinWrappedKey = 16
	MaxWrappedKey = 64
	// MaxReadcapSize bounds an encoded readcap.
	MaxReadcapSize = 512
)

// Curve names as they appear in a readcap's "curve" field.
const (
	CurveX25519 = "x25519"
	CurveP256   = "p256"
)

const (
	ctxReadcap  = "blocktree readcap v1" // associated-data context of the wrapped key
	nonceSize   = 12
	gcmTagSize  = 16
	kekSize     = 32 // AES-256
	x25519Size  = 32
	p256PubSize = 65 // uncompressed point
)

// ECDHPublicKey derives a principal's key-agreement public key from its
// libp2p public key: an Ed25519 key becomes the X25519 key of the same
// secret (the birational map from edwards25519 to Curve25519, the public
// half of what tpm/softkey derives from the seed), an ECDSA P-256 key the
// same point on ecdh.P256 (what a TPM key's ECDH uses). Other key types
// fail with ErrKeyType, a key that is not a valid point with ErrMalformed.
func ECDHPublicKey(pk crypto.PubKey) (*ecdh.PublicKey, error) {
	if pk == nil {
		return nil, fmt.Errorf("caps: key agreement key: no key: %w", ErrKeyType)
	}
	switch pk.Type() {
	case crypto.Ed25519:
		raw, err := pk.Raw()
		if err != nil {
			return nil, fmt.Errorf("caps: key agreement key: %w: %v", ErrMalformed, err)
		}
		p, err := new(edwards25519.Point).SetBytes(raw)
		if err != nil {
			return nil, fmt.Errorf("caps: key agreement key: Ed25519 key is not a curve point: %w", ErrMalformed)
		}
		x, err := ecdh.X25519().NewPublicKey(p.BytesMontgomery())
		if err != nil {
			return nil, fmt.Errorf("caps: key agreement key: %w: %v", ErrMalformed, err)
		}
		return x, nil
	case crypto.ECDSA:
		std, err := crypto.PubKeyToStdKey(pk)
		if err != nil {
			return nil, fmt.Errorf("caps: key agreement key: %w: %v", ErrMalformed, err)
		}
		ek, ok := std.(*ecdsa.PublicKey)
		if !ok || ek.Curve != elliptic.P256() {
			return nil, fmt.Errorf("caps: key agreement key: ECDSA key is not on P-256: %w", ErrKeyType)
		}
		x, err := ek.ECDH()
		if err != nil {
			return nil, fmt.Errorf("caps: key agreement key: %w: %v", ErrMalformed, err)
		}
		return x, nil
	}
	return nil, fmt.Errorf("caps: key agreement key: %v: %w", pk.Type(), ErrKeyType)
}

// Readcap is a symmetric key wrapped (encapsulated) to one reader's public
// key: whoever holds the reader's private key, and only they, can unwrap
// it. The sender makes an ephemeral key pair on the reader's key-agreement
// curve, derives a key-encryption key from the shared secret with
// HKDF-SHA256, and seals the key with AES-256-GCM. The format is in
// docs/readcap.md.
//
// A Readcap is immutable once made or decoded; share it freely.
type Readcap struct {
	Reader paths.ID // principal ID of the reader's (libp2p) public key
	Curve  string   // CurveX25519 or CurveP256

	eph     *ecdh.PublicKey // the sender's ephemeral key
	rpk     *ecdh.PublicKey // the reader's key-agreement key
	nonce   []byte
	wrapped []byte // AES-256-GCM ciphertext and tag of the key
	raw     []byte
}

// wireReadcap is the encoding, version 1 (docs/readcap.md).
type wireReadcap struct {
	V       uint   `cbor:"v"`
	Reader  string `cbor:"reader"`
	Curve   string `cbor:"curve"`
	Eph     []byte `cbor:"eph"`
	RPK     []byte `cbor:"rpk"`
	Nonce   []byte `cbor:"nonce"`
	Wrapped []byte `cbor:"key,omitempty"` // omitted only in the associated data
}

// WrapKey wraps key (16 to 64 bytes) to reader. purpose, the HKDF info
// string, names what the key is for, such as "blocktree pubsub topic key
// v1 /<root>/a"; Unwrap must be given the same purpose, so a readcap made
// for one use cannot be passed off as another. Errors wrap ErrKeyType or ErrMalformed for an
// unusable reader key.
func WrapKey(reader crypto.PubKey, key []byte, purpose string) (*Readcap, error) {
	if n := len(key); n < MinWrappedKey || n > MaxWrappedKey {
		return nil, fmt.Errorf("caps: wrap key: key of %d bytes, want %d to %d", n, MinWrappedKey, MaxWrappedKey)
	}
	rpk, err := ECDHPublicKey(reader)
	if err != nil {
		return nil, err
	}
	rid, err := PrincipalID(reader)
	if err != nil {
		return nil, err
	}
	eph, err := rpk.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("caps: wrap key: %w", err)
	}
	shared, err := eph.ECDH(rpk)
	if err != nil {
		// Only a low-order X25519 key gives an all-zero secret.
		return nil, fmt.Errorf("caps: wrap key: reader key is unusable: %w: %v", ErrMalformed, err)
	}
	w := wireReadcap{V: Version, Reader: string(rid), Curve: curveName(rpk.Curve()),
		Eph: eph.PublicKey().Bytes(), RPK: rpk.Bytes(), Nonce: make([]byte, nonceSize)}
	if _, err := rand.Read(w.Nonce); err != nil {
		return nil, fmt.Errorf("caps: wrap key: %w", err)
	}
	aead, ad, err := w.aead(shared, purpose)
	if err != nil {
		return nil, fmt.Errorf("caps: wrap key: %w", err)
	}
	w.Wrapped = aead.Seal(nil, w.Nonce, key, ad)
	raw, err := canon.Marshal(&w)
	if err != nil {
		return nil, fmt.Errorf("caps: wrap key: %w", err)
	}
	return &Readcap{Reader: rid, Curve: w.Curve, eph: eph.PublicKey(), rpk: rpk, nonce: w.Nonce, wrapped: w.Wrapped, raw: raw}, nil
}

func curveName(c ecdh.Curve) string {
	if c == ecdh.X25519() {
		return CurveX25519
	}
	return CurveP256
}

// aead derives the key-encryption key from the shared secret and returns
// the AEAD and the associated data: the readcap's encoding without "key".
// The HKDF salt is eph || rpk, binding both public keys.
func (w *wireReadcap) aead(shared []byte, purpose string) (cipher.AEAD, []byte, error) {
	salt := make([]byte, 0, len(w.Eph)+len(w.RPK))
	salt = append(append(salt, w.Eph...), w.RPK...)
	kek, err := hkdf.Key(sha256.New, shared, salt, purpose, kekSize)
	if err != nil {
		return nil, nil, err
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, nil, err
	}
	hdr := *w
	hdr.Wrapped = nil
	body, err := canon.Marshal(&hdr)
	if err != nil {
		return nil, nil, err
	}
	return aead, signedMessage(ctxReadcap, body), nil
}

// Unwrap opens the readcap with the reader's key agreement: ecdh is the
// reader's tpm.Key.ECDH (a TPM key runs it inside the TPM). purpose must
// be the one WrapKey was given. A key on another curve gives ErrNotReader; a
// readcap that does not authenticate (altered, another purpose, or the key
// is not the reader's) gives ErrTampered. Errors of ecdh itself (TPM
// unavailable, ctx ended) are returned wrapped. Safe for concurrent use.
func (r *Readcap) Unwrap(ctx context.Context, ecdhFn func(context.Context, *ecdh.PublicKey) ([]byte, error), purpose string) ([]byte, error) {
	shared, err := ecdhFn(ctx, r.eph)
	if err != nil {
		if errors.Is(err, tpm.ErrCurveMismatch) {
			return nil, fmt.Errorf("caps: unwrap readcap for %s (%s): %w", r.Reader, r.Curve, ErrNotReader)
		}
		return nil, fmt.Errorf("caps: unwrap readcap for %s: %w", r.Reader, err)
	}
	w := r.wire()
	aead, ad, err := w.aead(shared, purpose)
	if err != nil {
		return nil, fmt.Errorf("caps: unwrap readcap: %w", err)
	}
	key, err := aead.Open(nil, r.nonce, r.wrapped, ad)
	if err != nil {
		return nil, fmt.Errorf("caps: unwrap readcap for %s: %w", r.Reader, ErrTampered)
	}
	return key, nil
}

// Decapsulator is what unwrapping needs of a reader's key; every tpm.Key
// is one.
type Decapsulator interface {
	ECDHPublicKey() *ecdh.PublicKey
	ECDH(ctx context.Context, remote *ecdh.PublicKey) ([]byte, error)
}

var _ Decapsulator = tpm.Key(nil)

// UnwrapWith is Unwrap with the reader's key itself: it first checks that
// k is the key the readcap was wrapped to (ErrNotReader otherwise, without
// running ECDH), so ErrTampered then means the readcap was altered or the
// purpose is wrong.
func (r *Readcap) UnwrapWith(ctx context.Context, k Decapsulator, purpose string) ([]byte, error) {
	if pub := k.ECDHPublicKey(); pub == nil || !pub.Equal(r.rpk) {
		return nil, fmt.Errorf("caps: unwrap readcap for %s: %w", r.Reader, ErrNotReader)
	}
	return r.Unwrap(ctx, k.ECDH, purpose)
}

func (r *Readcap) wire() wireReadcap {
	return wireReadcap{V: Version, Reader: string(r.Reader), Curve: r.Curve, Eph: r.eph.Bytes(), RPK: r.rpk.Bytes(),
		Nonce: r.nonce, Wrapped: r.wrapped}
}

// ReaderKey returns the reader's key-agreement public key.
func (r *Readcap) ReaderKey() *ecdh.PublicKey { return r.rpk }

// Marshal returns the readcap's canonical encoding (docs/readcap.md).
func (r *Readcap) Marshal() []byte { return r.raw }

// DecodeReadcap parses an encoded readcap. It checks the encoding
// (canonical, version 1), that both public keys are valid points of the
// named curve, and that the reader's key-agreement key is the one its
// principal ID names; it cannot check the wrapped key, which only the
// reader can open. Errors wrap ErrMalformed or ErrUnknownVersion.
func DecodeReadcap(data []byte) (*Readcap, error) {
	if len(data) > MaxReadcapSize {
		return nil, fmt.Errorf("caps: readcap of %d bytes exceeds %d: %w", len(data), MaxReadcapSize, ErrMalformed)
	}
	var w wireReadcap
	if err := canon.Unmarshal(data, &w); err != nil {
		if v, verr := canon.Version(data); verr == nil && v != Version {
			return nil, fmt.Errorf("caps: readcap version %d: %w", v, ErrUnknownVersion)
		}
		return nil, fmt.Errorf("caps: readcap: %w: %v", ErrMalformed, err)
	}
	if w.V != Version {
		return nil, fmt.Errorf("caps: readcap version %d: %w", w.V, ErrUnknownVersion)
	}
	rid, err := paths.ParseID(w.Reader)
	if err != nil {
		return nil, fmt.Errorf("caps: readcap reader: %w: %v", ErrMalformed, err)
	}
	var curve ecdh.Curve
	switch w.Curve {
	case CurveX25519:
		curve = ecdh.X25519()
	case CurveP256:
		curve = ecdh.P256()
	default:
		return nil, fmt.Errorf("caps: readcap curve %q: %w", w.Curve, ErrMalformed)
	}
	eph, err := curve.NewPublicKey(w.Eph)
	if err != nil {
		return nil, fmt.Errorf("caps: readcap ephemeral key: %w: %v", ErrMalformed, err)
	}
	rpk, err := curve.NewPublicKey(w.RPK)
	if err != nil {
		return nil, fmt.Errorf("caps: readcap reader key: %w: %v", ErrMalformed, err)
	}
	if len(w.Nonce) != nonceSize {
		return nil, fmt.Errorf("caps: readcap nonce of %d bytes: %w", len(w.Nonce), ErrMalformed)
	}
	if n := len(w.Wrapped) - gcmTagSize; n < MinWrappedKey || n > MaxWrappedKey {
		return nil, fmt.Errorf("caps: readcap wrapped key of %d bytes: %w", len(w.Wrapped), ErrMalformed)
	}
	if err := checkReaderKey(rid, curve, rpk); err != nil {
		return nil, err
	}
	return &Readcap{Reader: rid, Curve: w.Curve, eph: eph, rpk: rpk, nonce: w.Nonce, wrapped: w.Wrapped, raw: bytes.Clone(data)}, nil
}

// checkReaderKey checks that rpk is the key-agreement key of principal id:
// for an Ed25519 ID (which holds the key) the X25519 image of its key, for
// an ECDSA ID (a hash of the key) the ID of the P-256 point.
func checkReaderKey(id paths.ID, curve ecdh.Curve, rpk *ecdh.PublicKey) error {
	switch curve {
	case ecdh.X25519():
		pid, err := peer.Decode(string(id))
		if err != nil {
			return fmt.Errorf("caps: readcap reader: %w: %v", ErrMalformed, err)
		}
		pk, err := pid.ExtractPublicKey()
		if err != nil || pk.Type() != crypto.Ed25519 {
			return fmt.Errorf("caps: readcap reader %s is not an Ed25519 principal: %w", id, ErrMalformed)
		}
		x, err := ECDHPublicKey(pk)
		if err != nil {
			return err
		}
		if !x.Equal(rpk) {
			return fmt.Errorf("caps: readcap reader key is not %s's: %w", id, ErrMalformed)
		}
	default:
		ek, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), rpk.Bytes())
		if err != nil {
			return fmt.Errorf("caps: readcap reader key: %w: %v", ErrMalformed, err)
		}
		pk, err := crypto.ECDSAPublicKeyFromPubKey(*ek)
		if err != nil {
			return fmt.Errorf("caps: readcap reader key: %w: %v", ErrMalformed, err)
		}
		got, err := PrincipalID(pk)
		if err != nil || got != id {
			return fmt.Errorf("caps: readcap reader key is not %s's: %w", id, ErrMalformed)
		}
	}
	return nil
}
