package blocks_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/ipfs/go-cid"

	"blocktree.dev/bt/blocks"
	"blocktree.dev/bt/internal/benchcmp"
)

func testKey(seed byte) []byte {
	k := make([]byte, blocks.KeySize)
	for i := range k {
		k[i] = seed + byte(i)
	}
	return k
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// sealed is a sealed file with its blocks held in a map.
type sealed struct {
	plain []byte
	m     blocks.Manifest
	data  map[cid.Cid][]byte
}

func seal(t testing.TB, s *blocks.Sealer, r io.Reader, plain []byte) sealed {
	t.Helper()
	f := sealed{plain: plain, data: map[cid.Cid][]byte{}}
	m, err := s.Seal(context.Background(), r, func(b blocks.Block) error {
		if len(b.Data) > blocks.MaxBlockSize {
			t.Fatalf("block of %d bytes", len(b.Data))
		}
		if err := blocks.Verify(b.CID, b.Data); err != nil {
			t.Fatalf("emitted block does not verify: %v", err)
		}
		f.data[b.CID] = b.Data
		return nil
	})
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	f.m = m
	return f
}

func (f sealed) fetch(_ context.Context, c cid.Cid) ([]byte, error) {
	d, ok := f.data[c]
	if !ok {
		return nil, fmt.Errorf("fetch %s: %w", c, blocks.ErrNotFound)
	}
	return d, nil
}

func TestRoundTrip(t *testing.T) {
	const chunk = blocks.DefaultChunkSize
	s, err := blocks.NewSealer(testKey(1))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, chunk - 1, chunk, chunk + 1, chunk*3 + chunk/2} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			plain := randBytes(r, n)
			// HalfReader makes Seal cope with short reads.
			f := seal(t, s, iotest.HalfReader(bytes.NewReader(plain)), plain)
			wantBlocks := max(1, (n+chunk-1)/chunk)
			if len(f.m.Blocks) != wantBlocks || f.m.Size != uint64(n) {
				t.Fatalf("manifest: %d blocks, size %d; want %d, %d", len(f.m.Blocks), f.m.Size, wantBlocks, n)
			}
			enc, err := f.m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			m, err := blocks.DecodeManifest(enc)
			if err != nil {
				t.Fatalf("DecodeManifest: %v", err)
			}
			w := &countingWriter{}
			if err := blocks.Unseal(context.Background(), m, testKey(1), f.fetch, w); err != nil {
				t.Fatalf("Unseal: %v", err)
			}
			if !bytes.Equal(w.buf.Bytes(), plain) {
				t.Fatal("plaintext differs")
			}
			if n > 0 && w.writes != wantBlocks {
				t.Fatalf("%d writes for %d chunks; want one write per chunk", w.writes, wantBlocks)
			}
			if w.largest > chunk {
				t.Fatalf("a write of %d bytes", w.largest)
			}
		})
	}
}

type countingWriter struct {
	buf             bytes.Buffer
	writes, largest int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	w.largest = max(w.largest, len(p))
	return w.buf.Write(p)
}

func TestSealFreshFileIDs(t *testing.T) {
	s, err := blocks.NewSealer(testKey(2), blocks.WithChunkSize(16))
	if err != nil {
		t.Fatal(err)
	}
	plain := []byte("the same plaintext, sealed twice")
	a := seal(t, s, bytes.NewReader(plain), plain)
	b := seal(t, s, bytes.NewReader(plain), plain)
	if a.m.ID == b.m.ID {
		t.Fatal("two Seals drew the same file ID")
	}
	for i := range a.m.Blocks {
		if a.m.Blocks[i] == b.m.Blocks[i] {
			t.Fatalf("chunk %d has the same ciphertext in both files", i)
		}
	}
}

func TestSealerOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  []byte
		opts []blocks.Option
	}{
		{"short key", make([]byte, 16), nil},
		{"zero chunk", testKey(1), []blocks.Option{blocks.WithChunkSize(0)}},
		{"chunk over block", testKey(1), []blocks.Option{blocks.WithChunkSize(blocks.MaxChunkSize + 1)}},
	} {
		if _, err := blocks.NewSealer(tc.key, tc.opts...); err == nil {
			t.Errorf("%s: NewSealer succeeded", tc.name)
		}
	}
	if _, err := blocks.NewSealer(testKey(1), blocks.WithChunkSize(blocks.MaxChunkSize)); err != nil {
		t.Errorf("max chunk size: %v", err)
	}
}

func TestSealErrors(t *testing.T) {
	s, _ := blocks.NewSealer(testKey(1), blocks.WithChunkSize(8))
	boom := errors.New("boom")
	_, err := s.Seal(context.Background(), bytes.NewReader(make([]byte, 100)), func(blocks.Block) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("emit error: got %v", err)
	}
	_, err = s.Seal(context.Background(), iotest.ErrReader(boom), func(blocks.Block) error { return nil })
	if !errors.Is(err, boom) {
		t.Errorf("read error: got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Seal(ctx, bytes.NewReader(make([]byte, 100)), func(blocks.Block) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
	_, err = s.Seal(context.Background(), bytes.NewReader(make([]byte, 8*blocks.MaxChunks+1)), func(blocks.Block) error { return nil })
	if !errors.Is(err, blocks.ErrTooLarge) {
		t.Errorf("too many chunks: got %v", err)
	}
}

func TestUnsealWrongKey(t *testing.T) {
	s, _ := blocks.NewSealer(testKey(1), blocks.WithChunkSize(32))
	plain := bytes.Repeat([]byte("x"), 100)
	f := seal(t, s, bytes.NewReader(plain), plain)
	var buf bytes.Buffer
	err := blocks.Unseal(context.Background(), f.m, testKey(9), f.fetch, &buf)
	if !errors.Is(err, blocks.ErrIntegrity) || buf.Len() != 0 {
		t.Fatalf("wrong key: %v, %d bytes written", err, buf.Len())
	}
}

func TestUnsealFetchError(t *testing.T) {
	s, _ := blocks.NewSealer(testKey(1), blocks.WithChunkSize(10))
	plain := []byte("0123456789abcdefghij0123")
	f := seal(t, s, bytes.NewReader(plain), plain)
	delete(f.data, f.m.Blocks[1])
	var buf bytes.Buffer
	err := blocks.Unseal(context.Background(), f.m, testKey(1), f.fetch, &buf)
	if !errors.Is(err, blocks.ErrNotFound) || buf.String() != "0123456789" {
		t.Fatalf("missing block 1: %v, wrote %q", err, buf.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := blocks.Unseal(ctx, f.m, testKey(1), f.fetch, io.Discard); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// TestTamperMatrix applies seeded random mutations to sealed files and
// their manifests and checks that Unseal detects every one as ErrIntegrity
// and writes nothing but a prefix of the true plaintext.
func TestTamperMatrix(t *testing.T) {
	const chunk = 64
	n := 12000
	if testing.Short() {
		n = 1000
	}
	key := testKey(3)
	s, err := blocks.NewSealer(key, blocks.WithChunkSize(chunk))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(20261127, 1))
	// A pool of files sealed under the same key: the victims and the
	// sources of replayed blocks.
	var files []sealed
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 3*chunk + chunk/2, 7*chunk + 5, 10 * chunk} {
		for range 2 {
			p := randBytes(r, size)
			files = append(files, seal(t, s, bytes.NewReader(p), p))
		}
	}
	type mutation func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool)
	// put replaces block i by data, naming it by its CID, as an attacker who
	// also controls the manifest would.
	put := func(m blocks.Manifest, d map[cid.Cid][]byte, i int, data []byte) {
		c := blocks.Sum(data)
		m.Blocks[i] = c
		d[c] = data
	}
	kinds := []struct {
		name string
		f    mutation
	}{
		{"flip-same-cid", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			i := r.IntN(len(m.Blocks))
			data := slices.Clone(d[m.Blocks[i]])
			data[r.IntN(len(data))] ^= 1 << r.IntN(8)
			d[m.Blocks[i]] = data
			return m, d, true
		}},
		{"flip-new-cid", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			i := r.IntN(len(m.Blocks))
			data := slices.Clone(d[m.Blocks[i]])
			data[r.IntN(len(data))] ^= 1 << r.IntN(8)
			put(m, d, i, data)
			return m, d, true
		}},
		{"truncate", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			i := r.IntN(len(m.Blocks))
			data := d[m.Blocks[i]]
			data = slices.Clone(data[:r.IntN(len(data))])
			if r.IntN(2) == 0 {
				d[m.Blocks[i]] = data
			} else {
				put(m, d, i, data)
			}
			return m, d, true
		}},
		{"extend", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			i := r.IntN(len(m.Blocks))
			data := append(slices.Clone(d[m.Blocks[i]]), randBytes(r, 1+r.IntN(32))...)
			if r.IntN(2) == 0 {
				d[m.Blocks[i]] = data
			} else {
				put(m, d, i, data)
			}
			return m, d, true
		}},
		{"swap", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			if len(m.Blocks) < 2 {
				return m, d, false
			}
			i := r.IntN(len(m.Blocks))
			j := (i + 1 + r.IntN(len(m.Blocks)-1)) % len(m.Blocks)
			m.Blocks[i], m.Blocks[j] = m.Blocks[j], m.Blocks[i]
			return m, d, true
		}},
		{"duplicate", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			if len(m.Blocks) < 2 {
				return m, d, false
			}
			i := r.IntN(len(m.Blocks))
			j := (i + 1 + r.IntN(len(m.Blocks)-1)) % len(m.Blocks)
			m.Blocks[i] = m.Blocks[j]
			return m, d, true
		}},
		{"replay-other-file", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			o := files[r.IntN(len(files))]
			if o.m.ID == m.ID {
				return m, d, false
			}
			i := r.IntN(len(m.Blocks))
			j := min(i, len(o.m.Blocks)-1)
			if r.IntN(2) == 0 {
				j = r.IntN(len(o.m.Blocks))
			}
			c := o.m.Blocks[j]
			m.Blocks[i] = c
			d[c] = o.data[c]
			return m, d, true
		}},
		{"replay-other-manifest-id", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			// Another file's blocks under this file's manifest header.
			m, d := cloneFile(f)
			o := files[r.IntN(len(files))]
			if o.m.ID == m.ID || len(o.m.Blocks) != len(m.Blocks) {
				return m, d, false
			}
			m.Blocks = slices.Clone(o.m.Blocks)
			m.Size = o.m.Size
			maps(d, o.data)
			return m, d, true
		}},
		{"all-zero", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			i := r.IntN(len(m.Blocks))
			put(m, d, i, make([]byte, len(d[m.Blocks[i]])))
			return m, d, true
		}},
		{"drop-last", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			if len(m.Blocks) < 2 {
				return m, d, false
			}
			m.Blocks = m.Blocks[:len(m.Blocks)-1]
			if r.IntN(2) == 0 { // make the size agree with the shorter list
				m.Size = uint64(len(m.Blocks)) * m.ChunkSize
			}
			return m, d, true
		}},
		{"drop-middle", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			if len(m.Blocks) < 2 {
				return m, d, false
			}
			i := r.IntN(len(m.Blocks) - 1)
			m.Blocks = slices.Delete(m.Blocks, i, i+1)
			m.Size -= m.ChunkSize
			return m, d, true
		}},
		{"append", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			src := m.Blocks[r.IntN(len(m.Blocks))]
			if r.IntN(2) == 0 {
				o := files[r.IntN(len(files))]
				src = o.m.Blocks[r.IntN(len(o.m.Blocks))]
				d[src] = o.data[src]
			}
			m.Size = uint64(len(m.Blocks))*m.ChunkSize + uint64(r.IntN(chunk)) + 1
			m.Blocks = append(m.Blocks, src)
			return m, d, true
		}},
		{"manifest-size", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			delta := uint64(1 + r.IntN(2*chunk))
			if r.IntN(8) == 0 {
				m.Size = ^uint64(0) - uint64(r.IntN(2*chunk))
				return m, d, true
			}
			if r.IntN(2) == 0 && m.Size >= delta {
				m.Size -= delta
			} else {
				m.Size += delta
			}
			return m, d, true
		}},
		{"manifest-id", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			m.ID[r.IntN(len(m.ID))] ^= 1 << r.IntN(8)
			return m, d, true
		}},
		{"manifest-chunk-size", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			cs := uint64(1 + r.IntN(4*chunk))
			if cs == m.ChunkSize {
				cs++
			}
			m.ChunkSize = cs
			return m, d, true
		}},
		{"manifest-version", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			m.Version = uint64(2 + r.IntN(100))
			if r.IntN(2) == 0 {
				m.Version = 0
			}
			return m, d, true
		}},
		{"manifest-empty", func(f sealed) (blocks.Manifest, map[cid.Cid][]byte, bool) {
			m, d := cloneFile(f)
			m.Blocks = nil
			return m, d, true
		}},
	}
	counts := make([]int, len(kinds))
	for done := 0; done < n; {
		k := r.IntN(len(kinds))
		f := files[r.IntN(len(files))]
		m, d, ok := kinds[k].f(f)
		if !ok {
			continue
		}
		var out bytes.Buffer
		fetch := func(_ context.Context, c cid.Cid) ([]byte, error) {
			b, ok := d[c]
			if !ok {
				return nil, blocks.ErrNotFound
			}
			return b, nil
		}
		err := blocks.Unseal(context.Background(), m, key, fetch, &out)
		if !errors.Is(err, blocks.ErrIntegrity) {
			t.Fatalf("mutation %d (%s) of a %d-byte file: Unseal = %v, want ErrIntegrity", done, kinds[k].name, len(f.plain), err)
		}
		if !bytes.HasPrefix(f.plain, out.Bytes()) {
			t.Fatalf("mutation %d (%s): wrote %d bytes that are not a prefix of the plaintext", done, kinds[k].name, out.Len())
		}
		counts[k]++
		done++
	}
	for k, c := range counts {
		t.Logf("%-26s %d", kinds[k].name, c)
	}
	t.Logf("%d mutations, all detected", n)
}

func maps(dst, src map[cid.Cid][]byte) {
	for k, v := range src {
		dst[k] = v
	}
}

func cloneFile(f sealed) (blocks.Manifest, map[cid.Cid][]byte) {
	m := f.m
	m.Blocks = slices.Clone(f.m.Blocks)
	d := make(map[cid.Cid][]byte, len(f.data))
	maps(d, f.data)
	return m, d
}

func TestDecodeManifestRefuses(t *testing.T) {
	s, _ := blocks.NewSealer(testKey(1), blocks.WithChunkSize(4))
	f := seal(t, s, bytes.NewReader([]byte("0123456789")), []byte("0123456789"))
	good, err := f.m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := blocks.DecodeManifest(good); err != nil {
		t.Fatalf("good manifest: %v", err)
	}
	v2 := f.m
	v2.Version = 2
	enc2, _ := v2.Encode()
	for name, data := range map[string][]byte{
		"empty":    nil,
		"garbage":  []byte("not cbor"),
		"trailing": append(slices.Clone(good), 0),
		"v2":       enc2,
	} {
		if _, err := blocks.DecodeManifest(data); !errors.Is(err, blocks.ErrBadManifest) {
			t.Errorf("%s: DecodeManifest = %v, want ErrBadManifest", name, err)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	s, _ := blocks.NewSealer(testKey(1), blocks.WithChunkSize(4))
	for _, p := range []string{"", "a", "0123456789"} {
		var m blocks.Manifest
		m, _ = s.Seal(context.Background(), bytes.NewReader([]byte(p)), func(blocks.Block) error { return nil })
		enc, err := m.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
	}
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := blocks.DecodeManifest(data)
		if err != nil {
			if !errors.Is(err, blocks.ErrBadManifest) {
				t.Fatalf("error does not wrap ErrBadManifest: %v", err)
			}
			return
		}
		again, err := m.Encode()
		if err != nil {
			t.Fatalf("Encode of a decoded manifest: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("decode/encode is not the identity:\n%x\n%x", data, again)
		}
	})
}

// BenchmarkSealVsStdlib compares chunk → seal → CID over 64 MiB with the
// standard library's AES-GCM Seal plus sha256.Sum256 over the same chunks.
// Run with -benchtime=1x.
func BenchmarkSealVsStdlib(b *testing.B) {
	const total, chunk = 64 << 20, blocks.DefaultChunkSize
	buf := randBytes(rand.New(rand.NewPCG(1, 1)), total)
	key := testKey(4)
	s, err := blocks.NewSealer(key)
	if err != nil {
		b.Fatal(err)
	}
	blk, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(blk)
	nonce := make([]byte, gcm.NonceSize())
	var sink byte
	ours := func() error {
		_, err := s.Seal(context.Background(), bytes.NewReader(buf), func(b blocks.Block) error {
			sink ^= b.Data[0]
			return nil
		})
		return err
	}
	anchor := func() error {
		for off := 0; off < total; off += chunk {
			nonce[11]++
			ct := gcm.Seal(make([]byte, 0, chunk+16), nonce, buf[off:off+chunk], nil)
			d := sha256.Sum256(ct)
			sink ^= d[0]
		}
		return nil
	}
	r := benchcmp.Compare(b, "blocks seal 64MiB", benchcmp.Options{Rounds: 5, Ops: 2}, ours, anchor)
	if r.Ratio() < 0.8 {
		b.Logf("ratio %.3f below the 0.8 target", r.Ratio())
	}
	_ = sink
}
