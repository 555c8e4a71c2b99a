package tpm2key

import (
	"context"
	"crypto/ecdh"
	"crypto/sha256"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/libp2p/go-libp2p/core/crypto"

	"blocktree.dev/bt/tpm"
)

// key is a tpm.Key held by a TPM. Its public halves are fixed at load; its
// handle and state are guarded by t.mu.
type key struct {
	t *TPM
	l *loadable // immutable

	// Guarded by t.mu.
	obj    obj
	closed bool
}

var _ tpm.Key = (*key)(nil)

// ecdsaSHA256 is the scheme Sign asks for, the key's own being TPM_ALG_NULL.
var ecdsaSHA256 = tpm2.TPMTSigScheme{
	Scheme:  tpm2.TPMAlgECDSA,
	Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
}

// nullTicket is the validation ticket for an unrestricted signing key: a
// NULL ticket (TPM_ST_HASHCHECK, TPM_RH_NULL, empty digest).
var nullTicket = tpm2.TPMTTKHashCheck{Tag: tpm2.TPMSTHashCheck, Hierarchy: tpm2.TPMRHNull}

// PublicKey returns the key as a libp2p ECDSA public key. Safe for
// concurrent use; never fails.
func (k *key) PublicKey() crypto.PubKey { return k.l.pub }

// ECDHPublicKey returns the same P-256 point for key agreement. Safe for
// concurrent use; never fails.
func (k *key) ECDHPublicKey() *ecdh.PublicKey { return k.l.ecdhPub }

// Info says where the key lives. Safe for concurrent use.
func (k *key) Info() tpm.Info { return k.t.info }

// Sign signs SHA-256(msg) in the TPM with ECDSA and returns the signature in
// ASN.1 DER, as PublicKey().Verify(msg, sig) expects. Errors wrap
// tpm.ErrClosed, tpm.ErrUnavailable, tpm.ErrKeyLost (the TPM restarted
// and can no longer load the key), or the context's error. Safe for
// concurrent use.
func (k *key) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	t := k.t
	t.mu.Lock()
	defer t.mu.Unlock()
	var sig *tpm2.TPMSSignatureECC
	err := k.runLocked(ctx, func() error {
		rsp, err := tpm2.Sign{
			KeyHandle:  tpm2.AuthHandle{Handle: k.obj.handle, Name: k.obj.name, Auth: emptyAuth},
			Digest:     tpm2.TPM2BDigest{Buffer: digest[:]},
			InScheme:   ecdsaSHA256,
			Validation: nullTicket,
		}.Execute(&t.tr)
		if err != nil {
			return err
		}
		sig, err = rsp.Signature.Signature.ECDSA()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm2key: sign: %w", err)
	}
	return derSignature(sig.SignatureR.Buffer, sig.SignatureS.Buffer), nil
}

// ECDH returns the shared secret of the key and remote, which must be a
// P-256 key (else tpm.ErrCurveMismatch, also for nil): the X coordinate of
// the product, 32 bytes, as crypto/ecdh returns it. It runs TPM2_ECDH_ZGen.
// Other errors as for Sign. Safe for concurrent use.
func (k *key) ECDH(ctx context.Context, remote *ecdh.PublicKey) ([]byte, error) {
	if remote == nil || remote.Curve() != ecdh.P256() {
		return nil, fmt.Errorf("tpm2key: ecdh: %w", tpm.ErrCurveMismatch)
	}
	b := remote.Bytes() // 0x04 ‖ X ‖ Y, on the curve
	return k.zgen(ctx, b[1:33], b[33:65])
}

// zgen runs TPM2_ECDH_ZGen with the point (x, y) as given, unchecked: the
// TPM refuses a point that is not on the curve.
func (k *key) zgen(ctx context.Context, x, y []byte) ([]byte, error) {
	t := k.t
	t.mu.Lock()
	defer t.mu.Unlock()
	var z []byte
	err := k.runLocked(ctx, func() error {
		rsp, err := tpm2.ECDHZGen{
			KeyHandle: tpm2.AuthHandle{Handle: k.obj.handle, Name: k.obj.name, Auth: emptyAuth},
			InPoint: tpm2.New2B(tpm2.TPMSECCPoint{
				X: tpm2.TPM2BECCParameter{Buffer: x},
				Y: tpm2.TPM2BECCParameter{Buffer: y},
			}),
		}.Execute(&t.tr)
		if err != nil {
			return err
		}
		p, err := rsp.OutPoint.Contents()
		if err != nil {
			return err
		}
		z = p.X.Buffer
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm2key: ecdh: %w", err)
	}
	if len(z) > 32 || len(z) == 0 {
		return nil, fmt.Errorf("tpm2key: ecdh: the TPM returned an X coordinate of %d bytes", len(z))
	}
	if len(z) < 32 { // a TPM may drop leading zeros
		z = append(make([]byte, 32-len(z)), z...)
	}
	return z, nil
}

// runLocked checks that k and its TPM are open and runs op with k loaded.
func (k *key) runLocked(ctx context.Context, op func() error) error {
	if k.closed || k.t.closed {
		return tpm.ErrClosed
	}
	return k.t.runLocked(ctx, k, op)
}

// Close flushes the key from the TPM. It is idempotent; later calls to the
// key fail with tpm.ErrClosed. Closing the key does not close its TPM.
// Safe for concurrent use.
func (k *key) Close() error {
	t := k.t
	t.mu.Lock()
	defer t.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	delete(t.keys, k)
	if t.closed {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	t.beginLocked(ctx)
	defer t.endLocked()
	if err := t.flushLocked(&k.obj); err != nil {
		return fmt.Errorf("tpm2key: close: %w", err)
	}
	return nil
}

// derSignature encodes an ECDSA signature as the ASN.1 DER
// SEQUENCE { r INTEGER, s INTEGER } from the unsigned big-endian r and s
// the TPM returns (each at most 32 bytes for P-256, so every length fits
// in one byte).
func derSignature(r, s []byte) []byte {
	r, s = trimZeros(r), trimZeros(s)
	rl, sl := intLen(r), intLen(s)
	out := make([]byte, 0, 2+2+rl+2+sl)
	out = append(out, 0x30, byte(2+rl+2+sl))
	out = appendInt(out, r, rl)
	return appendInt(out, s, sl)
}

func trimZeros(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

// intLen is the DER content length of the non-negative integer b: a zero
// byte goes in front when the top bit is set, and zero is one zero byte.
func intLen(b []byte) int {
	if len(b) == 0 {
		return 1
	}
	if b[0]&0x80 != 0 {
		return len(b) + 1
	}
	return len(b)
}

func appendInt(out, b []byte, n int) []byte {
	out = append(out, 0x02, byte(n))
	for range n - len(b) {
		out = append(out, 0)
	}
	return append(out, b...)
}
