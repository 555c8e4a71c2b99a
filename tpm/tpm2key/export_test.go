package tpm2key

import (
	"context"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"blocktree.dev/bt/tpm"
)

// ZGenUnchecked runs TPM2_ECDH_ZGen on k with the point (x, y) as given, for
// tests of points crypto/ecdh refuses to represent.
func ZGenUnchecked(ctx context.Context, k tpm.Key, x, y []byte) ([]byte, error) {
	return k.(*key).zgen(ctx, x, y)
}

// RawSigner returns the go-tpm call that k.Sign wraps, written as a caller
// of go-tpm would write it: TPM2_Sign on k's loaded handle, over the same
// connection, given the digest. It bypasses the TPM's lock: call it only
// while nothing else uses the TPM.
func RawSigner(k tpm.Key) func(digest []byte) (*tpm2.SignResponse, error) {
	kk := k.(*key)
	tr := rawTransport{kk.t.link}
	return func(digest []byte) (*tpm2.SignResponse, error) {
		return tpm2.Sign{
			KeyHandle: tpm2.AuthHandle{Handle: kk.obj.handle, Name: kk.obj.name, Auth: tpm2.PasswordAuth(nil)},
			Digest:    tpm2.TPM2BDigest{Buffer: digest},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
			},
			Validation: tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull},
		}.Execute(tr)
	}
}

// rawTransport is the bare transport.TPM over a link: no lock, no retry,
// no reconnect.
type rawTransport struct{ l link }

func (r rawTransport) Send(cmd []byte) ([]byte, error) {
	return r.l.send(context.Background(), time.Now().Add(DefaultTimeout), cmd)
}

// DERSignature exposes the DER encoder for its unit test.
var DERSignature = derSignature

// DropLink closes tp's connection behind its back, as a timeout mid-command
// does.
func DropLink(tp *TPM) {
	tp.mu.Lock()
	defer tp.mu.Unlock()
	tp.dropLocked()
}

// FlushBehindBack flushes k's object from the TPM without k knowing, as
// another TPM user (tpm2_flushcontext -t) might.
func FlushBehindBack(k tpm.Key) error {
	kk := k.(*key)
	kk.t.mu.Lock()
	defer kk.t.mu.Unlock()
	_, err := tpm2.FlushContext{FlushHandle: kk.obj.handle}.Execute(rawTransport{kk.t.link})
	return err
}

// Handle returns the TPM handle k is loaded under (0 if none).
func Handle(k tpm.Key) uint32 {
	kk := k.(*key)
	kk.t.mu.Lock()
	defer kk.t.mu.Unlock()
	return uint32(kk.obj.handle)
}

// RawTransport returns a bare go-tpm transport over tp's connection, for
// tests that set the TPM up with commands this package never sends.
func RawTransport(tp *TPM) transport.TPM { return rawTransport{tp.link} }
