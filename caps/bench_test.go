package caps

import (
	"testing"

	"blocktree.dev/bt/internal/benchcmp"
)

// The benchmarks compare against named anchors in the same run and print
// the ratio (anchor/ours); run with -benchtime=1x.

// BenchmarkVerifyColdVsRawSignatures: a cold verification of a three-link
// chain (no cache) against the three raw signature checks it performs.
// Target: ratio ≥ 0.8.
func BenchmarkVerifyColdVsRawSignatures(b *testing.B) {
	d := newTestDomain(b, newSigner(b), newSigner(b), newSigner(b))
	cold := testVerifier(t0, WithCacheSize(0))
	links := d.appCap.links
	msgs := make([][]byte, len(links))
	for i := range links {
		msgs[i] = signedMessage(ctxWritecap, links[i].body)
	}
	raw := func() error {
		for i := range links {
			if ok, err := links[i].Issuer.Verify(msgs[i], links[i].sig); !ok || err != nil {
				b.Fatal("raw verify failed")
			}
		}
		return nil
	}
	benchcmp.Compare(b, "writecap-verify-cold-vs-raw-sigs", benchcmp.Options{Rounds: 7, Ops: 200},
		func() error { return cold.Verify(d.appCap, d.appPath) }, raw)
	enc := d.appCap.Marshal()
	benchcmp.Compare(b, "writecap-decode+verify-cold-vs-raw-sigs", benchcmp.Options{Rounds: 7, Ops: 200},
		func() error { _, err := cold.VerifyBytes(enc, d.appPath); return err }, raw)
}

// BenchmarkVerifyWarmVsCold: a cached verification against a cold one.
// Target: ratio ≥ 10.
func BenchmarkVerifyWarmVsCold(b *testing.B) {
	d := newTestDomain(b, newSigner(b), newSigner(b), newSigner(b))
	cold := testVerifier(t0, WithCacheSize(0))
	warm := testVerifier(t0)
	benchcmp.Compare(b, "writecap-verify-warm-vs-cold", benchcmp.Options{Rounds: 7, Ops: 200},
		func() error { return warm.Verify(d.appCap, d.appPath) },
		func() error { return cold.Verify(d.appCap, d.appPath) })
	enc := d.appCap.Marshal()
	benchcmp.Compare(b, "writecap-verify-bytes-warm-vs-cold", benchcmp.Options{Rounds: 7, Ops: 200},
		func() error { _, err := warm.VerifyBytes(enc, d.appPath); return err },
		func() error { _, err := cold.VerifyBytes(enc, d.appPath); return err })
}
