package tpm2key

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/tpm"
)

// BlobVersion is the blob format this build writes, and the only one it
// reads.
const BlobVersion = 1

// Blob is what a node stores for a TPM key: enough for the TPM that created
// the key to load it again, and nothing any other TPM can use. It holds no
// secret in the clear: the private area is encrypted and integrity
// protected under the parent key, which only that TPM can re-derive.
//
// The encoding is deterministic CBOR (RFC 8949 §4.2.1) of a map with
// text keys; docs/tpm.md gives the exact layout. DecodeBlob accepts only
// the canonical encoding of a well-formed version 1 blob, so every blob has
// exactly one encoding.
type Blob struct {
	// V is the format version, BlobVersion.
	V uint `cbor:"v"`
	// Parent is the template the parent storage key is created from, a
	// marshalled TPM2B_PUBLIC (size-prefixed TPMT_PUBLIC). The parent is
	// always a primary key of the owner (storage) hierarchy, re-created with
	// TPM2_CreatePrimary, so it is a pure function of this template and the
	// TPM's owner seed.
	Parent []byte `cbor:"parent"`
	// ParentName is the parent's TPM Name (nameAlg ‖ H(public area)) when
	// the key was created. A TPM whose owner seed changed derives another
	// parent with another Name; Load reports that as tpm.ErrKeyLost without
	// asking the TPM to open the private area.
	ParentName []byte `cbor:"pname"`
	// Public is the key's public area, a marshalled TPM2B_PUBLIC as
	// TPM2_Create returned it.
	Public []byte `cbor:"pub"`
	// Private is the key's wrapped private area, a marshalled TPM2B_PRIVATE
	// as TPM2_Create returned it.
	Private []byte `cbor:"priv"`
}

// Limits on the TPM structures in a blob, well above what a TPM produces.
const (
	maxPublicSize  = 1024
	maxPrivateSize = 1024
)

// Encode returns the blob's canonical encoding. It does not validate: a
// blob built by hand may encode to something DecodeBlob refuses.
func (b *Blob) Encode() ([]byte, error) {
	data, err := canon.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("tpm2key: encoding a blob: %w", err)
	}
	return data, nil
}

// DecodeBlob decodes and checks a stored blob. It fails with an error
// wrapping tpm.ErrUnknownVersion for a version other than BlobVersion, and
// tpm.ErrMalformed for anything else it cannot accept: input that is not
// canonical CBOR of the blob map (unknown or missing fields, duplicate
// keys, trailing bytes, non-minimal encodings), TPM structures that do not
// parse exactly, or a key that is not an ECC P-256 sign-and-decrypt key
// under a storage parent. Safe for concurrent use.
func DecodeBlob(data []byte) (*Blob, error) {
	b, _, err := decodeBlob(data)
	return b, err
}

// PublicKey returns the key's public half as a libp2p key, read from the
// blob alone, without a TPM: the principal ID of a stored key can be shown
// even where its TPM is absent. It fails as DecodeBlob does for a blob
// DecodeBlob would refuse.
func (b *Blob) PublicKey() (crypto.PubKey, error) {
	if b.V != BlobVersion {
		return nil, fmt.Errorf("tpm2key: blob version %d: %w", b.V, tpm.ErrUnknownVersion)
	}
	l, err := b.check()
	if err != nil {
		return nil, fmt.Errorf("tpm2key: blob: %w: %v", tpm.ErrMalformed, err)
	}
	return l.pub, nil
}

// loadable is a checked blob with its TPM structures parsed, ready to load.
type loadable struct {
	parent     []byte // the parent template, a TPM2B_PUBLIC for CreatePrimary
	parentName []byte
	public     tpm2.TPM2BPublic
	private    tpm2.TPM2BPrivate
	name       tpm2.TPM2BName // the key's Name, computed from public
	pub        crypto.PubKey
	ecdhPub    *ecdh.PublicKey
}

func decodeBlob(data []byte) (*Blob, *loadable, error) {
	var b Blob
	if err := canon.Unmarshal(data, &b); err != nil {
		// Read the version alone, so a newer blob gets the right error.
		if v, verr := canon.Version(data); verr == nil && v != BlobVersion {
			if v == 0 {
				return nil, nil, fmt.Errorf("tpm2key: blob has no version: %w", tpm.ErrMalformed)
			}
			return nil, nil, fmt.Errorf("tpm2key: blob version %d: %w", v, tpm.ErrUnknownVersion)
		}
		return nil, nil, fmt.Errorf("tpm2key: blob: %w: %v", tpm.ErrMalformed, err)
	}
	if b.V != BlobVersion {
		if b.V == 0 {
			return nil, nil, fmt.Errorf("tpm2key: blob has no version: %w", tpm.ErrMalformed)
		}
		return nil, nil, fmt.Errorf("tpm2key: blob version %d: %w", b.V, tpm.ErrUnknownVersion)
	}
	l, err := b.check()
	if err != nil {
		return nil, nil, fmt.Errorf("tpm2key: blob: %w: %v", tpm.ErrMalformed, err)
	}
	return &b, l, nil
}

// check parses the TPM structures of a version 1 blob and checks that they
// describe what this package creates.
func (b *Blob) check() (*loadable, error) {
	l := &loadable{parentName: b.ParentName}

	parent, err := parsePublic(b.Parent)
	if err != nil {
		return nil, fmt.Errorf("parent template: %v", err)
	}
	pa := parent.ObjectAttributes
	if !pa.Restricted || !pa.Decrypt || pa.SignEncrypt || !pa.FixedTPM || !pa.FixedParent {
		return nil, fmt.Errorf("parent template is not a storage key (restricted, decrypt, fixedTPM, fixedParent)")
	}
	if parent.Type != tpm2.TPMAlgECC && parent.Type != tpm2.TPMAlgRSA {
		return nil, fmt.Errorf("parent template of type %#04x", uint16(parent.Type))
	}
	l.parent = b.Parent

	h, err := parent.NameAlg.Hash()
	if err != nil {
		return nil, fmt.Errorf("parent template name algorithm: %v", err)
	}
	if len(b.ParentName) != 2+h.Size() || binary.BigEndian.Uint16(b.ParentName) != uint16(parent.NameAlg) {
		return nil, fmt.Errorf("parent name of %d bytes is not a Name of the template's name algorithm %#04x", len(b.ParentName), uint16(parent.NameAlg))
	}

	pub, err := parsePublic(b.Public)
	if err != nil {
		return nil, fmt.Errorf("public area: %v", err)
	}
	a := pub.ObjectAttributes
	if pub.Type != tpm2.TPMAlgECC || pub.NameAlg != tpm2.TPMAlgSHA256 {
		return nil, fmt.Errorf("key of type %#04x, name algorithm %#04x; want ECC, SHA-256", uint16(pub.Type), uint16(pub.NameAlg))
	}
	if !a.SignEncrypt || !a.Decrypt || a.Restricted || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		return nil, fmt.Errorf("key attributes are not fixedTPM, fixedParent, sensitiveDataOrigin, sign, decrypt, unrestricted")
	}
	parms, err := pub.Parameters.ECCDetail()
	if err != nil {
		return nil, fmt.Errorf("ECC parameters: %v", err)
	}
	if parms.CurveID != tpm2.TPMECCNistP256 {
		return nil, fmt.Errorf("curve %#04x, want NIST P-256", uint16(parms.CurveID))
	}
	point, err := pub.Unique.ECC()
	if err != nil {
		return nil, fmt.Errorf("ECC point: %v", err)
	}
	ecdhPub, err := p256Point(point.X.Buffer, point.Y.Buffer)
	if err != nil {
		return nil, err
	}
	l.ecdhPub = ecdhPub
	ecdsaPub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), ecdhPub.Bytes())
	if err != nil {
		return nil, fmt.Errorf("public key: %v", err)
	}
	l.pub, err = crypto.ECDSAPublicKeyFromPubKey(*ecdsaPub)
	if err != nil {
		return nil, fmt.Errorf("public key: %v", err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		return nil, fmt.Errorf("key name: %v", err)
	}
	l.name = *name
	l.public = tpm2.BytesAs2B[tpm2.TPMTPublic](b.Public[2:])

	priv, err := sized(b.Private, maxPrivateSize)
	if err != nil {
		return nil, fmt.Errorf("private area: %v", err)
	}
	if len(priv) == 0 {
		return nil, fmt.Errorf("private area is empty")
	}
	l.private = tpm2.TPM2BPrivate{Buffer: priv}
	return l, nil
}

// sized checks a TPM2B: a big-endian uint16 size and exactly that many
// bytes. It returns the contents.
func sized(b []byte, max int) ([]byte, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%d bytes, too short for a TPM2B", len(b))
	}
	n := int(binary.BigEndian.Uint16(b))
	if n != len(b)-2 {
		return nil, fmt.Errorf("TPM2B says %d bytes, holds %d", n, len(b)-2)
	}
	if n > max {
		return nil, fmt.Errorf("%d bytes, more than %d", n, max)
	}
	return b[2:], nil
}

// parsePublic parses a marshalled TPM2B_PUBLIC and insists that it
// re-marshals to the same bytes, so nothing in it goes unread.
func parsePublic(b []byte) (_ *tpm2.TPMTPublic, err error) {
	contents, err := sized(b, maxPublicSize)
	if err != nil {
		return nil, err
	}
	// go-tpm's reflective decoder is not documented to be safe on hostile
	// input; a panic in it is a malformed blob, not a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("TPMT_PUBLIC does not decode: %v", r)
		}
	}()
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](contents)
	if err != nil {
		return nil, fmt.Errorf("TPMT_PUBLIC does not decode: %v", err)
	}
	if !bytes.Equal(tpm2.Marshal(pub), contents) {
		return nil, fmt.Errorf("TPMT_PUBLIC does not re-marshal to the same bytes (truncated, trailing or non-canonical)")
	}
	return pub, nil
}

// p256Point returns the P-256 point (x, y), coordinates big-endian and at
// most 32 bytes each (a TPM may drop leading zeros). It fails for a point
// not on the curve.
func p256Point(x, y []byte) (*ecdh.PublicKey, error) {
	if len(x) > 32 || len(y) > 32 {
		return nil, fmt.Errorf("coordinates of %d and %d bytes for P-256", len(x), len(y))
	}
	var u [65]byte
	u[0] = 4
	copy(u[1+32-len(x):33], x)
	copy(u[33+32-len(y):], y)
	k, err := ecdh.P256().NewPublicKey(u[:])
	if err != nil {
		return nil, fmt.Errorf("public key is not a P-256 point: %v", err)
	}
	return k, nil
}
