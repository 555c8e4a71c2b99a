package blocks

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"blocktree.dev/bt/internal/canon"
)

// Sealing parameters. See docs/blocks.md for the full format.
const (
	// KeySize is the size of a file key.
	KeySize = 32
	// FileIDSize is the size of the random per-file ID.
	FileIDSize = 16
	// DefaultChunkSize is the plaintext size of every chunk but the last.
	DefaultChunkSize = 256 << 10
	// MaxChunkSize keeps a sealed chunk (plaintext plus tag) within
	// MaxBlockSize.
	MaxChunkSize = MaxBlockSize - tagSize
	// MaxChunks bounds one manifest (the canonical CBOR decoder's array
	// limit): 1 GiB at the default chunk size.
	MaxChunks = 4096
	// ManifestVersion is the manifest format this package writes and reads.
	ManifestVersion = 1

	tagSize  = 16
	keyInfo  = "blocktree.dev/bt blocks v1 chunk key"
	adPrefix = "blocktree.dev/bt blocks v1 chunk"
)

// ErrBadManifest: an encoded manifest is malformed, not canonical, or of an
// unknown version.
var ErrBadManifest = errors.New("bad manifest")

// FileID is the random per-file ID that salts the file's subkey and binds
// every chunk to the file.
type FileID [FileIDSize]byte

// Manifest lists a sealed file's blocks in order. It holds no secret, but
// it is what Unseal trusts for the order and number of blocks and for the
// size; every edit to it is detected as ErrIntegrity by Unseal.
type Manifest struct {
	Version   uint64    // ManifestVersion
	ID        FileID    // the file's random ID
	Size      uint64    // plaintext bytes
	ChunkSize uint64    // plaintext bytes of every chunk but the last
	Blocks    []cid.Cid // the sealed chunks' CIDs, in order
}

// wireManifest is Manifest's canonical CBOR form; CIDs as their binary bytes.
type wireManifest struct {
	V      uint64   `cbor:"v"`
	ID     []byte   `cbor:"id"`
	Size   uint64   `cbor:"size"`
	Chunk  uint64   `cbor:"chunk"`
	Blocks [][]byte `cbor:"blocks"`
}

// Encode returns the manifest's canonical CBOR encoding.
func (m Manifest) Encode() ([]byte, error) {
	w := wireManifest{V: m.Version, ID: m.ID[:], Size: m.Size, Chunk: m.ChunkSize, Blocks: make([][]byte, len(m.Blocks))}
	for i, c := range m.Blocks {
		w.Blocks[i] = c.Bytes()
	}
	b, err := canon.Marshal(w)
	if err != nil {
		return nil, fmt.Errorf("blocks: encode manifest: %w", err)
	}
	return b, nil
}

// DecodeManifest parses a canonical manifest encoding. Errors wrap
// ErrBadManifest. It checks the form only (version, field sizes, CID
// form); Unseal checks the rest.
func DecodeManifest(data []byte) (Manifest, error) {
	bad := func(format string, a ...any) (Manifest, error) {
		return Manifest{}, fmt.Errorf("blocks: decode manifest: %s: %w", fmt.Sprintf(format, a...), ErrBadManifest)
	}
	if v, err := canon.Version(data); err != nil {
		return bad("%v", err)
	} else if v != ManifestVersion {
		return bad("unknown version %d", v)
	}
	var w wireManifest
	if err := canon.Unmarshal(data, &w); err != nil {
		return bad("%v", err)
	}
	if len(w.ID) != FileIDSize {
		return bad("file ID of %d bytes", len(w.ID))
	}
	if len(w.Blocks) > MaxChunks {
		return bad("%d blocks", len(w.Blocks))
	}
	m := Manifest{Version: w.V, Size: w.Size, ChunkSize: w.Chunk, Blocks: make([]cid.Cid, len(w.Blocks))}
	copy(m.ID[:], w.ID)
	for i, b := range w.Blocks {
		c, err := cid.Cast(b)
		if err != nil {
			return bad("block %d: %v", i, err)
		}
		if c.Version() != 1 || c.Type() != cid.Raw || c.Prefix().MhType != mh.SHA2_256 || !bytesEqualCID(c, b) {
			return bad("block %d: not a canonical CIDv1 raw sha2-256 CID", i)
		}
		m.Blocks[i] = c
	}
	return m, nil
}

// bytesEqualCID reports whether b is exactly c's binary form (no trailing
// or non-minimal bytes), so decoding is one-to-one.
func bytesEqualCID(c cid.Cid, b []byte) bool {
	return c.KeyString() == string(b) && c.Prefix().MhLength == sha256.Size
}

// Sealer seals streams into encrypted, content-addressed blocks under one
// file key. A Sealer is safe for concurrent use; it keeps no per-file state.
//
// # Format
//
// Every Seal call draws a fresh random 16-byte file ID and derives the
// file's subkey as HKDF-SHA256(key, salt = file ID, info = "blocktree.dev/bt
// blocks v1 chunk key"). The stream is cut into chunks of ChunkSize bytes
// (the last may be shorter; an empty stream is one empty chunk). Chunk i is
// sealed with AES-256-GCM under the subkey, with the nonce 4 zero bytes ‖
// uint64be(i) and the associated data
//
//	"blocktree.dev/bt blocks v1 chunk" ‖ file ID ‖ uint64be(chunk size) ‖ uint64be(i) ‖ last
//
// where last is 1 for the final chunk and 0 otherwise. The block is the
// ciphertext with its tag, named by its CID.
//
// # Nonces
//
// A nonce never repeats under one (sub)key: within a file the chunk index
// is unique, and across files the subkeys differ, since each file has its
// own random 128-bit salt (a collision has probability about 2⁻⁶⁵ after 2³² files).
// The file key itself never encrypts.
//
// # What is detected
//
// The CID check catches any change to a block's bytes before decryption.
// The AD catches a block moved to another index (swap, duplicate), a block
// from another file under the same key (other file ID, other subkey), a
// dropped last block (the new last chunk has last = 0), an appended block
// and a changed chunk size; an all-zero or any forged block fails the tag.
// Unseal also checks the manifest's size against the chunk count and the
// plaintext lengths.
type Sealer struct {
	key       [KeySize]byte
	chunkSize int
	rand      io.Reader
}

// Option configures a Sealer.
type Option func(*Sealer) error

// WithChunkSize sets the plaintext chunk size, 1..MaxChunkSize bytes
// (default DefaultChunkSize).
func WithChunkSize(n int) Option {
	return func(s *Sealer) error {
		if n < 1 || n > MaxChunkSize {
			return fmt.Errorf("blocks: chunk size %d outside 1..%d", n, MaxChunkSize)
		}
		s.chunkSize = n
		return nil
	}
}

// WithRandom sets the source of file IDs (default crypto/rand). Only tests
// that need reproducible output should use it: a repeating source repeats
// nonces.
func WithRandom(r io.Reader) Option {
	return func(s *Sealer) error {
		s.rand = r
		return nil
	}
}

// NewSealer returns a Sealer for a 32-byte file key.
func NewSealer(key []byte, opts ...Option) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("blocks: file key of %d bytes, want %d", len(key), KeySize)
	}
	s := &Sealer{chunkSize: DefaultChunkSize, rand: rand.Reader}
	copy(s.key[:], key)
	for _, o := range opts {
		if err := o(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// fileAEAD derives a file's subkey and returns its AES-256-GCM.
func fileAEAD(key []byte, id FileID) (cipher.AEAD, error) {
	sub, err := hkdf.Key(sha256.New, key, id[:], keyInfo, 32)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(sub)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

type chunkCtx struct {
	nonce [12]byte
	ad    [len(adPrefix) + FileIDSize + 8 + 8 + 1]byte
}

func newChunkCtx(id FileID, chunkSize uint64) *chunkCtx {
	c := &chunkCtx{}
	n := copy(c.ad[:], adPrefix)
	n += copy(c.ad[n:], id[:])
	binary.BigEndian.PutUint64(c.ad[n:], chunkSize)
	return c
}

func (c *chunkCtx) set(i uint64, last bool) {
	binary.BigEndian.PutUint64(c.nonce[4:], i)
	n := len(adPrefix) + FileIDSize + 8
	binary.BigEndian.PutUint64(c.ad[n:], i)
	c.ad[n+8] = 0
	if last {
		c.ad[n+8] = 1
	}
}

// Seal reads r to its end, seals it chunk by chunk and calls emit with each
// block in order, then returns the manifest. It holds at most two chunks in
// memory. It stops at the first error from r, emit or ctx, and fails if the
// stream needs more than MaxChunks chunks (ErrTooLarge). Safe for
// concurrent use.
func (s *Sealer) Seal(ctx context.Context, r io.Reader, emit func(Block) error) (Manifest, error) {
	var id FileID
	if _, err := io.ReadFull(s.rand, id[:]); err != nil {
		return Manifest{}, fmt.Errorf("blocks: seal: file ID: %w", err)
	}
	aead, err := fileAEAD(s.key[:], id)
	if err != nil {
		return Manifest{}, fmt.Errorf("blocks: seal: %w", err)
	}
	m := Manifest{Version: ManifestVersion, ID: id, ChunkSize: uint64(s.chunkSize)}
	cc := newChunkCtx(id, m.ChunkSize)
	read := func(buf []byte) (int, error) {
		n, err := io.ReadFull(r, buf)
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			err = nil
		}
		return n, err
	}
	cur, next := make([]byte, s.chunkSize), make([]byte, s.chunkSize)
	n, err := read(cur)
	if err != nil {
		return Manifest{}, fmt.Errorf("blocks: seal: read: %w", err)
	}
	for i := uint64(0); ; i++ {
		if err := ctx.Err(); err != nil {
			return Manifest{}, fmt.Errorf("blocks: seal: %w", err)
		}
		// Look one chunk ahead to know whether this one is the last.
		var nn int
		if n == s.chunkSize {
			if nn, err = read(next); err != nil {
				return Manifest{}, fmt.Errorf("blocks: seal: read: %w", err)
			}
		}
		last := nn == 0
		if i >= MaxChunks {
			return Manifest{}, fmt.Errorf("blocks: seal: more than %d chunks: %w", MaxChunks, ErrTooLarge)
		}
		cc.set(i, last)
		ct := aead.Seal(make([]byte, 0, n+tagSize), cc.nonce[:], cur[:n], cc.ad[:])
		b := Block{CID: Sum(ct), Data: ct}
		if err := emit(b); err != nil {
			return Manifest{}, fmt.Errorf("blocks: seal: chunk %d: %w", i, err)
		}
		m.Blocks = append(m.Blocks, b.CID)
		m.Size += uint64(n)
		if last {
			return m, nil
		}
		cur, next, n = next, cur, nn
	}
}

// check validates the manifest's shape for Unseal.
func (m Manifest) check() error {
	switch {
	case m.Version != ManifestVersion:
		return fmt.Errorf("unknown manifest version %d", m.Version)
	case m.ChunkSize < 1 || m.ChunkSize > MaxChunkSize:
		return fmt.Errorf("chunk size %d", m.ChunkSize)
	case len(m.Blocks) < 1 || len(m.Blocks) > MaxChunks:
		return fmt.Errorf("%d blocks", len(m.Blocks))
	}
	want := m.Size / m.ChunkSize // without overflow for any Size
	if m.Size%m.ChunkSize != 0 || want == 0 {
		want++
	}
	if uint64(len(m.Blocks)) != want {
		return fmt.Errorf("%d blocks for %d bytes in chunks of %d", len(m.Blocks), m.Size, m.ChunkSize)
	}
	return nil
}

// Unseal fetches m's blocks in order, verifies each against its CID before
// decrypting it, decrypts it under key and writes the plaintext to w, one
// chunk at a time. It writes only authenticated plaintext, in order: when
// it fails, w has received a prefix of the true plaintext. Errors wrap
// ErrIntegrity for a block or manifest that does not check, or the error
// from fetch, w or ctx. Safe for concurrent use.
func Unseal(ctx context.Context, m Manifest, key []byte, fetch func(context.Context, cid.Cid) ([]byte, error), w io.Writer) error {
	if len(key) != KeySize {
		return fmt.Errorf("blocks: unseal: file key of %d bytes, want %d", len(key), KeySize)
	}
	if err := m.check(); err != nil {
		return fmt.Errorf("blocks: unseal: %v: %w", err, ErrIntegrity)
	}
	aead, err := fileAEAD(key, m.ID)
	if err != nil {
		return fmt.Errorf("blocks: unseal: %w", err)
	}
	cc := newChunkCtx(m.ID, m.ChunkSize)
	buf := make([]byte, 0, m.ChunkSize)
	remaining := m.Size
	for i, c := range m.Blocks {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("blocks: unseal: %w", err)
		}
		data, err := fetch(ctx, c)
		if err != nil {
			return fmt.Errorf("blocks: unseal: fetch chunk %d %s: %w", i, c, err)
		}
		if err := Verify(c, data); err != nil {
			if errors.Is(err, ErrTooLarge) {
				err = fmt.Errorf("%w: %w", ErrIntegrity, err)
			}
			return fmt.Errorf("blocks: unseal: chunk %d: %w", i, err)
		}
		last := i == len(m.Blocks)-1
		want := min(remaining, m.ChunkSize)
		if uint64(len(data)) != want+tagSize {
			return fmt.Errorf("blocks: unseal: chunk %d %s: %d bytes, want %d: %w", i, c, len(data), want+tagSize, ErrIntegrity)
		}
		cc.set(uint64(i), last)
		pt, err := aead.Open(buf[:0], cc.nonce[:], data, cc.ad[:])
		if err != nil {
			return fmt.Errorf("blocks: unseal: chunk %d %s: does not authenticate: %w", i, c, ErrIntegrity)
		}
		if _, err := w.Write(pt); err != nil {
			return fmt.Errorf("blocks: unseal: write: %w", err)
		}
		remaining -= want
	}
	if remaining != 0 { // unreachable after check; kept as a guard
		return fmt.Errorf("blocks: unseal: %d bytes missing: %w", remaining, ErrIntegrity)
	}
	return nil
}
