package blocks_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/benchcmp"
)

// The 1 GiB benchmarks compare chunk → seal → CID against the standard
// library doing the least that the same work needs, in the same run, and
// print the ratio (anchor/ours, so 1.0 is parity). Run with -benchtime=1x:
//
//	go test ./blocks -run '^$' -bench 'Seal1GiB' -benchtime=1x
//
// BT_BENCH_BYTES sets the input size (default and most 1 GiB, which is
// MaxChunks chunks; rounded down to whole chunks) for quick runs.

// sealBenchBytes is the input size, from BT_BENCH_BYTES.
func sealBenchBytes(b *testing.B) int {
	b.Helper()
	const def, chunk = blocks.MaxChunks * blocks.DefaultChunkSize, blocks.DefaultChunkSize
	n := def
	if s := os.Getenv("BT_BENCH_BYTES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 2*chunk || v > def {
			b.Fatalf("BT_BENCH_BYTES=%q: want %d..%d", s, 2*chunk, def)
		}
		n = v
	}
	return n / (2 * chunk) * (2 * chunk) // whole chunks, split evenly in halves
}

// sealBenchInput is n random bytes, the same on every run.
func sealBenchInput(n int) []byte {
	buf := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{'s', 'e', 'a', 'l'}).Read(buf)
	return buf
}

// sealOurs seals in as one file and returns the ciphertext bytes emitted,
// keeping no block.
func sealOurs(s *blocks.Sealer, in []byte) (int64, error) {
	var n int64
	_, err := s.Seal(context.Background(), bytes.NewReader(in), func(b blocks.Block) error {
		n += int64(len(b.Data))
		return nil
	})
	return n, err
}

// stdlibSealer is the anchor: AES-256-GCM Seal of each 256 KiB chunk into
// one reused buffer, then SHA-256 of the ciphertext; no key derivation, no
// associated data, no CID, no copy of the input.
type stdlibSealer struct {
	gcm   cipher.AEAD
	nonce []byte
	out   []byte
}

func newStdlibSealer(b *testing.B, key []byte) *stdlibSealer {
	b.Helper()
	blk, err := aes.NewCipher(key)
	if err != nil {
		b.Fatal(err)
	}
	gcm, err := cipher.NewGCM(blk)
	if err != nil {
		b.Fatal(err)
	}
	return &stdlibSealer{gcm: gcm, nonce: make([]byte, gcm.NonceSize()), out: make([]byte, 0, blocks.DefaultChunkSize+16)}
}

func (a *stdlibSealer) seal(in []byte) (n int64, sink byte) {
	const chunk = blocks.DefaultChunkSize
	for off := 0; off < len(in); off += chunk {
		a.nonce[11]++
		if a.nonce[11] == 0 {
			a.nonce[10]++
		}
		ct := a.gcm.Seal(a.out[:0], a.nonce, in[off:min(off+chunk, len(in))], nil)
		d := sha256.Sum256(ct)
		n += int64(len(ct))
		sink ^= d[0]
	}
	return n, sink
}

// wantCiphertext is the ciphertext bytes of sealing n bytes in whole chunks.
func wantCiphertext(n int) int64 {
	return int64(n) + int64(n/blocks.DefaultChunkSize)*16
}

// BenchmarkSeal1GiB: Sealer.Seal over a bytes.Reader (default chunk size,
// counting the emitted bytes) against bare AES-256-GCM + SHA-256 per chunk
// over the same buffer. Target ratio ≥ 0.8: the bound is about
// 1/(1/AEAD + 1/hash) per core, and both sides pay both.
func BenchmarkSeal1GiB(b *testing.B) {
	size := sealBenchBytes(b)
	in := sealBenchInput(size)
	key := testKey(9)
	s, err := blocks.NewSealer(key)
	if err != nil {
		b.Fatal(err)
	}
	a := newStdlibSealer(b, key)
	want := wantCiphertext(size)
	var sink byte
	ours := func() error {
		n, err := sealOurs(s, in)
		if err == nil && n != want {
			err = fmt.Errorf("emitted %d bytes, want %d", n, want)
		}
		return err
	}
	anchor := func() error {
		n, x := a.seal(in)
		sink ^= x
		if n != want {
			return fmt.Errorf("sealed %d bytes, want %d", n, want)
		}
		return nil
	}
	r := benchcmp.Compare(b, fmt.Sprintf("blocks seal %d MiB vs stdlib AES-GCM+SHA-256 (target ≥ 0.8)", size>>20),
		benchcmp.Options{Rounds: 5, Ops: 1}, ours, anchor)
	fmt.Printf("bench blocks seal %d MiB: ours %.0f MB/s anchor %.0f MB/s\n", size>>20, mbps(size, r.Ours.Seconds()), mbps(size, r.Anchor.Seconds()))
	_ = sink
}

// BenchmarkSeal1GiBScaling: the same input cut in two halves, sealed as
// two files (two Sealers) by two goroutines at once against one goroutine
// sealing both in turn; likewise for the anchor. The printed ratio
// (anchor/ours = 1 goroutine / 2 goroutines in time) is the throughput
// gained from the second core: 2.0 is perfect scaling.
func BenchmarkSeal1GiBScaling(b *testing.B) {
	size := sealBenchBytes(b)
	in := sealBenchInput(size)
	halves := [2][]byte{in[:size/2], in[size/2:]}
	var ss [2]*blocks.Sealer
	var as [2]*stdlibSealer
	for i := range 2 {
		s, err := blocks.NewSealer(testKey(byte(10 + i)))
		if err != nil {
			b.Fatal(err)
		}
		ss[i], as[i] = s, newStdlibSealer(b, testKey(byte(10+i)))
	}
	want := wantCiphertext(size / 2)
	oursHalf := func(i int) error {
		n, err := sealOurs(ss[i], halves[i])
		if err == nil && n != want {
			err = fmt.Errorf("emitted %d bytes, want %d", n, want)
		}
		return err
	}
	var sink [2]byte
	anchorHalf := func(i int) error {
		n, x := as[i].seal(halves[i])
		sink[i] ^= x
		if n != want {
			return fmt.Errorf("sealed %d bytes, want %d", n, want)
		}
		return nil
	}
	seq := func(f func(int) error) func() error {
		return func() error {
			for i := range 2 {
				if err := f(i); err != nil {
					return err
				}
			}
			return nil
		}
	}
	par := func(f func(int) error) func() error {
		return func() error {
			var wg sync.WaitGroup
			var errs [2]error
			for i := range 2 {
				wg.Go(func() { errs[i] = f(i) })
			}
			wg.Wait()
			for _, err := range errs {
				if err != nil {
					return err
				}
			}
			return nil
		}
	}
	o := benchcmp.Options{Rounds: 5, Ops: 1}
	mib := size >> 20
	ro := benchcmp.Compare(b, fmt.Sprintf("blocks seal %d MiB scaling: 2 goroutines(ours) vs 1 goroutine(anchor)", mib), o, par(oursHalf), seq(oursHalf))
	ra := benchcmp.Compare(b, fmt.Sprintf("stdlib AES-GCM+SHA-256 %d MiB scaling: 2 goroutines(ours) vs 1 goroutine(anchor)", mib), o, par(anchorHalf), seq(anchorHalf))
	r2 := benchcmp.Compare(b, fmt.Sprintf("blocks seal %d MiB on 2 goroutines vs stdlib AES-GCM+SHA-256 on 2 goroutines (target ≥ 0.8)", mib), o, par(oursHalf), par(anchorHalf))
	fmt.Printf("bench blocks seal %d MiB: throughput 2 goroutines / 1: ours %.2f anchor %.2f; on 2 goroutines ours %.0f MB/s anchor %.0f MB/s\n",
		mib, ro.Ratio(), ra.Ratio(), mbps(size, r2.Ours.Seconds()), mbps(size, r2.Anchor.Seconds()))
	_ = sink
}

func mbps(n int, sec float64) float64 {
	if sec <= 0 {
		return 0
	}
	return float64(n) / 1e6 / sec
}
