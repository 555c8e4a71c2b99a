package tpm2key_test

import (
	"context"
	"crypto/sha256"
	"testing"

	"blocktree.dev/bt/internal/benchcmp"
	"blocktree.dev/bt/tpm/tpm2key"
)

// BenchmarkSignVsRawTPM2 compares Key.Sign against the go-tpm call it wraps
// (tpm2.Sign{…}.Execute) on the same swtpm, the same connection and the
// same loaded key. The anchor gets the digest ready-made, so the ratio
// charges ours for everything it adds: hashing, locking, the handle check,
// the DER encoding. Run with -benchtime=1x.
func BenchmarkSignVsRawTPM2(b *testing.B) {
	k, _, _, _ := newTestKey(b)
	ctx := context.Background()
	msg := []byte("blocktree: a message to sign, as long as a typical certificate link")
	digest := sha256.Sum256(msg)
	raw := tpm2key.RawSigner(k)
	benchcmp.Compare(b, "tpm-sign", benchcmp.Options{Rounds: 7, Ops: 30},
		func() error {
			_, err := k.Sign(ctx, msg)
			return err
		},
		func() error {
			_, err := raw(digest[:])
			return err
		})
}
