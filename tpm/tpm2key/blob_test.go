package tpm2key_test

import (
	"bytes"
	"encoding/asn1"
	"encoding/binary"
	"errors"
	"math/big"
	"reflect"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/google/go-tpm/tpm2"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/tpm2key"
)

// frozen returns the decoded frozen blob; the blob tests build their cases
// from it, so they need no TPM.
func frozen(t testing.TB) (*tpm2key.Blob, []byte) {
	t.Helper()
	data := readFile(t, frozenBlob)
	b, err := tpm2key.DecodeBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	return b, data
}

func TestBlobRoundTrip(t *testing.T) {
	b, data := frozen(t)
	if b.V != tpm2key.BlobVersion {
		t.Fatalf("V = %d", b.V)
	}
	again, err := tpm2key.DecodeBlob(encode(t, b))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(again, b) || !bytes.Equal(encode(t, again), data) {
		t.Fatal("blob changed across Encode/DecodeBlob")
	}
}

// tpm2b marshals a TPMT_PUBLIC as a TPM2B_PUBLIC.
func tpm2b(p *tpm2.TPMTPublic) []byte { return tpm2.Marshal(tpm2.New2B(*p)) }

// editPublic returns b's public area parsed, for a case to change.
func parsePub(t testing.TB, b []byte) *tpm2.TPMTPublic {
	t.Helper()
	p, err := tpm2.Unmarshal[tpm2.TPMTPublic](b[2:])
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecodeBlobErrors(t *testing.T) {
	good, data := frozen(t)
	with := func(edit func(b *tpm2key.Blob)) []byte {
		b := *good
		b.Parent, b.ParentName = bytes.Clone(good.Parent), bytes.Clone(good.ParentName)
		b.Public, b.Private = bytes.Clone(good.Public), bytes.Clone(good.Private)
		edit(&b)
		return encode(t, &b)
	}
	withPub := func(edit func(p *tpm2.TPMTPublic)) []byte {
		return with(func(b *tpm2key.Blob) {
			p := parsePub(t, b.Public)
			edit(p)
			b.Public = tpm2b(p)
		})
	}
	v2, _ := canon.Marshal(map[string]any{"v": 2, "pub": good.Public, "priv": good.Private, "pname": good.ParentName, "parent": good.Parent, "new": 1})
	v2only, _ := canon.Marshal(map[string]any{"v": 2})
	unknownField, _ := canon.Marshal(map[string]any{"v": 1, "pub": good.Public, "priv": good.Private, "pname": good.ParentName, "parent": good.Parent, "x": 1})
	noVersion, _ := canon.Marshal(map[string]any{"pub": good.Public, "priv": good.Private, "pname": good.ParentName, "parent": good.Parent})
	missing, _ := canon.Marshal(map[string]any{"v": 1, "pub": good.Public, "priv": good.Private, "parent": good.Parent})
	// Declaration order instead of canonical order.
	unsorted, err := cbor.Marshal(good)
	if err != nil || bytes.Equal(unsorted, data) {
		t.Fatalf("unsorted encoding: %v", err)
	}
	// v as a two-byte integer: well-formed CBOR, not the shortest form.
	long := append([]byte{data[0], data[1], data[2], 0x18, 0x01}, data[4:]...)
	if data[3] != 0x01 {
		t.Fatalf("frozen blob starts % x", data[:4])
	}
	// The "v" entry twice (map header says one more pair).
	dup := append([]byte{data[0] + 1}, data[1:]...)
	dup = append(dup, 0x61, 'v', 0x01)
	// An indefinite-length map.
	indef := append([]byte{0xbf}, data[1:]...)
	indef = append(indef, 0xff)

	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"empty", nil, tpm.ErrMalformed},
		{"garbage", []byte("garbage"), tpm.ErrMalformed},
		{"not-a-map", []byte{0x01}, tpm.ErrMalformed},
		{"v2", v2, tpm.ErrUnknownVersion},
		{"v2-only", v2only, tpm.ErrUnknownVersion},
		{"no-version", noVersion, tpm.ErrMalformed},
		{"unknown-field", unknownField, tpm.ErrMalformed},
		{"missing-field", missing, tpm.ErrMalformed},
		{"trailing-byte", append(bytes.Clone(data), 0), tpm.ErrMalformed},
		{"truncated", data[:len(data)-1], tpm.ErrMalformed},
		{"unsorted-keys", unsorted, tpm.ErrMalformed},
		{"long-integer", long, tpm.ErrMalformed},
		{"duplicate-key", dup, tpm.ErrMalformed},
		{"indefinite-map", indef, tpm.ErrMalformed},
		{"empty-private", with(func(b *tpm2key.Blob) { b.Private = []byte{0, 0} }), tpm.ErrMalformed},
		{"private-size-lies", with(func(b *tpm2key.Blob) { b.Private[1]++ }), tpm.ErrMalformed},
		{"public-size-lies", with(func(b *tpm2key.Blob) { b.Public[1]-- }), tpm.ErrMalformed},
		{"public-trailing", with(func(b *tpm2key.Blob) {
			b.Public = append(b.Public, 0)
			binary.BigEndian.PutUint16(b.Public, uint16(len(b.Public)-2))
		}), tpm.ErrMalformed},
		{"public-truncated", with(func(b *tpm2key.Blob) {
			b.Public = b.Public[:20]
			binary.BigEndian.PutUint16(b.Public, 18)
		}), tpm.ErrMalformed},
		{"parent-name-short", with(func(b *tpm2key.Blob) { b.ParentName = b.ParentName[:10] }), tpm.ErrMalformed},
		{"parent-name-alg", with(func(b *tpm2key.Blob) { b.ParentName[1] = 0x0c }), tpm.ErrMalformed},
		{"parent-not-storage", with(func(b *tpm2key.Blob) {
			p := parsePub(t, b.Parent)
			p.ObjectAttributes.Restricted = false
			b.Parent = tpm2b(p)
		}), tpm.ErrMalformed},
		{"parent-garbage", with(func(b *tpm2key.Blob) { b.Parent = []byte{0, 3, 1, 2, 3} }), tpm.ErrMalformed},
		{"key-restricted", withPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = true }), tpm.ErrMalformed},
		{"key-not-sign", withPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.SignEncrypt = false }), tpm.ErrMalformed},
		{"key-not-fixed", withPub(func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false }), tpm.ErrMalformed},
		{"key-p384", withPub(func(p *tpm2.TPMTPublic) {
			e, _ := p.Parameters.ECCDetail()
			e.CurveID = tpm2.TPMECCNistP384
		}), tpm.ErrMalformed},
		{"key-off-curve", withPub(func(p *tpm2.TPMTPublic) {
			pt, _ := p.Unique.ECC()
			pt.Y.Buffer[31] ^= 1
		}), tpm.ErrMalformed},
		{"key-rsa", withPub(func(p *tpm2.TPMTPublic) {
			*p = tpm2.RSASRKTemplate
			p.ObjectAttributes.Restricted = false
			p.ObjectAttributes.SignEncrypt = true
		}), tpm.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tpm2key.DecodeBlob(tc.data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("DecodeBlob = %+v, %v; want %v", b, err, tc.want)
			}
			if b != nil {
				t.Fatal("DecodeBlob returned a blob with its error")
			}
			t.Log(err)
			if tc.want == tpm.ErrMalformed && errors.Is(err, tpm.ErrUnknownVersion) {
				t.Fatalf("DecodeBlob = %v: a version 1 blob is not of an unknown version", err)
			}
		})
	}
}

func TestBlobPublicKey(t *testing.T) {
	good, _ := frozen(t)
	if _, err := good.PublicKey(); err != nil {
		t.Fatal(err)
	}
	bad := *good
	bad.V = 7
	if _, err := bad.PublicKey(); !errors.Is(err, tpm.ErrUnknownVersion) {
		t.Fatalf("PublicKey of a v7 blob: %v", err)
	}
	bad = *good
	bad.Public = nil
	if _, err := bad.PublicKey(); !errors.Is(err, tpm.ErrMalformed) {
		t.Fatalf("PublicKey without a public area: %v", err)
	}
}

// TestDERSignature checks the hand-written DER encoder against
// encoding/asn1 on the awkward cases: high bits, leading zeros, short
// values.
func TestDERSignature(t *testing.T) {
	type sig struct{ R, S *big.Int }
	pad := func(b ...byte) []byte { return append(make([]byte, 32-len(b)), b...) }
	full := func(first byte) []byte { b := bytes.Repeat([]byte{0x5a}, 32); b[0] = first; return b }
	for _, tc := range []struct {
		name string
		r, s []byte
	}{
		{"high-bits", full(0xff), full(0x80)},
		{"low-bits", full(0x7f), full(0x01)},
		{"leading-zeros", pad(0x12, 0x34), pad(0x80, 0x01)},
		{"short", []byte{0x01}, []byte{0x80}},
		{"one", pad(1), pad(1)},
		{"zero-bytes-unpadded", []byte{0, 0, 0x7f}, []byte{0, 0xff}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want, err := asn1.Marshal(sig{new(big.Int).SetBytes(tc.r), new(big.Int).SetBytes(tc.s)})
			if err != nil {
				t.Fatal(err)
			}
			if got := tpm2key.DERSignature(tc.r, tc.s); !bytes.Equal(got, want) {
				t.Fatalf("derSignature = % x\nwant            % x", got, want)
			}
		})
	}
}

// FuzzDecodeBlob: no input panics; whatever decodes re-encodes to the very
// same bytes; every refusal is ErrMalformed or ErrUnknownVersion.
func FuzzDecodeBlob(f *testing.F) {
	if data, err := readFileErr(frozenBlob); err == nil {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := tpm2key.DecodeBlob(data)
		if err != nil {
			if !errors.Is(err, tpm.ErrMalformed) && !errors.Is(err, tpm.ErrUnknownVersion) {
				t.Fatalf("DecodeBlob: %v: neither ErrMalformed nor ErrUnknownVersion", err)
			}
			return
		}
		if again := encode(t, b); !bytes.Equal(again, data) {
			t.Fatalf("decoded blob re-encodes differently:\n in  %x\n out %x", data, again)
		}
		if _, err := b.PublicKey(); err != nil {
			t.Fatalf("decoded blob has no public key: %v", err)
		}
	})
}

// encode is Blob.Encode for tests.
func encode(t testing.TB, b *tpm2key.Blob) []byte {
	t.Helper()
	data, err := b.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}
