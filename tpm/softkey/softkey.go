package softkey

import (
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/crypto"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"blocktree.dev/bt/internal/atomicfile"
	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/tpm"
)

// Key is an Ed25519 key in process memory. It implements tpm.Key; its key
// agreement key is the X25519 key derived from the same seed (RFC 8032
// scalar, as age and libsodium derive it). Safe for concurrent use.
type Key struct {
	priv   ed25519.PrivateKey
	pub    crypto.PubKey
	x      *ecdh.PrivateKey
	closed atomic.Bool
}

var _ tpm.Key = (*Key)(nil)

// Generate returns a new random key.
func Generate() (*Key, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("softkey: generate: %w", err)
	}
	return FromSeed(seed)
}

// FromSeed returns the key for a 32-byte Ed25519 seed.
func FromSeed(seed []byte) (*Key, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("softkey: seed is %d bytes, want %d: %w", len(seed), ed25519.SeedSize, tpm.ErrMalformed)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub, err := crypto.UnmarshalEd25519PublicKey(priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("softkey: %w", err)
	}
	h := sha512.Sum512(seed)
	x, err := ecdh.X25519().NewPrivateKey(h[:32]) // clamped by X25519 itself
	if err != nil {
		return nil, fmt.Errorf("softkey: %w", err)
	}
	return &Key{priv: priv, pub: pub, x: x}, nil
}

// PublicKey implements tpm.Key.
func (k *Key) PublicKey() crypto.PubKey { return k.pub }

// Sign implements tpm.Key: an Ed25519 signature over msg.
func (k *Key) Sign(ctx context.Context, msg []byte) ([]byte, error) {
	if k.closed.Load() {
		return nil, fmt.Errorf("softkey: sign: %w", tpm.ErrClosed)
	}
	return ed25519.Sign(k.priv, msg), nil
}

// ECDHPublicKey implements tpm.Key.
func (k *Key) ECDHPublicKey() *ecdh.PublicKey { return k.x.PublicKey() }

// ECDH implements tpm.Key.
func (k *Key) ECDH(ctx context.Context, remote *ecdh.PublicKey) ([]byte, error) {
	if k.closed.Load() {
		return nil, fmt.Errorf("softkey: ecdh: %w", tpm.ErrClosed)
	}
	if remote == nil || remote.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("softkey: ecdh: %w", tpm.ErrCurveMismatch)
	}
	s, err := k.x.ECDH(remote)
	if err != nil {
		return nil, fmt.Errorf("softkey: ecdh: %w", err)
	}
	return s, nil
}

// Info implements tpm.Key.
func (k *Key) Info() tpm.Info { return tpm.Info{Kind: tpm.KindSoftware, Algorithm: "ed25519"} }

// Close implements tpm.Key. The key material stays in memory until
// collected; Go offers no reliable way to wipe it.
func (k *Key) Close() error {
	k.closed.Store(true)
	return nil
}

// File format, version 1 (docs/keys.md). Field order is fixed by the
// canonical encoding, not by this declaration.
type keyFile struct {
	V      uint    `cbor:"v"`
	Alg    string  `cbor:"alg"`
	Seed   []byte  `cbor:"seed,omitempty"`
	Sealed *sealed `cbor:"sealed,omitempty"`
}

type sealed struct {
	KDF        string `cbor:"kdf"`
	Salt       []byte `cbor:"salt"`
	Time       uint32 `cbor:"t"`
	MemoryKiB  uint32 `cbor:"m"`
	Threads    uint8  `cbor:"p"`
	Nonce      []byte `cbor:"nonce"`
	Ciphertext []byte `cbor:"ct,omitempty"`
}

const (
	fileVersion = 1
	algEd25519  = "ed25519"
	kdfArgon2id = "argon2id"
)

// KDFParams are the argon2id costs used to seal a key file.
type KDFParams struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultKDF is RFC 9106's second recommended argon2id setting (64 MiB,
// three passes), about a quarter of a second on a small machine.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 2}

// Limits on what a key file may ask of the KDF, so a crafted file cannot make
// opening it take minutes or gigabytes.
const (
	maxKDFTime      = 16
	maxKDFMemoryKiB = 1 << 20 // 1 GiB
	maxKDFThreads   = 16
)

// Marshal returns the key file contents. With a non-empty passphrase the
// seed is sealed with XChaCha20-Poly1305 under an argon2id key; otherwise it
// is stored in the clear and the file's mode is its only protection.
func (k *Key) Marshal(passphrase []byte) ([]byte, error) {
	return k.marshal(passphrase, DefaultKDF)
}

// MarshalWithKDF is Marshal with explicit KDF costs (tests use cheap ones).
func (k *Key) MarshalWithKDF(passphrase []byte, p KDFParams) ([]byte, error) {
	return k.marshal(passphrase, p)
}

func (k *Key) marshal(passphrase []byte, p KDFParams) ([]byte, error) {
	f := keyFile{V: fileVersion, Alg: algEd25519}
	seed := k.priv.Seed()
	if len(passphrase) == 0 {
		f.Seed = seed
		return canon.Marshal(&f)
	}
	s := &sealed{KDF: kdfArgon2id, Salt: make([]byte, 16), Time: p.Time, MemoryKiB: p.MemoryKiB, Threads: p.Threads,
		Nonce: make([]byte, chacha20poly1305.NonceSizeX)}
	if _, err := rand.Read(s.Salt); err != nil {
		return nil, err
	}
	if _, err := rand.Read(s.Nonce); err != nil {
		return nil, err
	}
	f.Sealed = s
	ad, err := canon.Marshal(&f) // everything but the ciphertext is authenticated
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(deriveKey(passphrase, s))
	if err != nil {
		return nil, err
	}
	s.Ciphertext = aead.Seal(nil, s.Nonce, seed, ad)
	return canon.Marshal(&f)
}

func deriveKey(passphrase []byte, s *sealed) []byte {
	return argon2.IDKey(passphrase, s.Salt, s.Time, s.MemoryKiB, s.Threads, chacha20poly1305.KeySize)
}

// Sealed reports whether key file contents need a passphrase.
func Sealed(data []byte) (bool, error) {
	f, err := decodeFile(data)
	if err != nil {
		return false, err
	}
	return f.Sealed != nil, nil
}

func decodeFile(data []byte) (*keyFile, error) {
	var f keyFile
	if err := canon.Unmarshal(data, &f); err != nil {
		// Read the version alone, so a newer file gets the right error.
		if v, verr := canon.Version(data); verr == nil && v != fileVersion {
			return nil, fmt.Errorf("softkey: key file version %d: %w", v, tpm.ErrUnknownVersion)
		}
		return nil, fmt.Errorf("softkey: %w: %v", tpm.ErrMalformed, err)
	}
	if f.V != fileVersion {
		return nil, fmt.Errorf("softkey: key file version %d: %w", f.V, tpm.ErrUnknownVersion)
	}
	if f.Alg != algEd25519 {
		return nil, fmt.Errorf("softkey: algorithm %q: %w", f.Alg, tpm.ErrMalformed)
	}
	switch {
	case (f.Seed == nil) == (f.Sealed == nil):
		return nil, fmt.Errorf("softkey: want exactly one of seed and sealed: %w", tpm.ErrMalformed)
	case f.Seed != nil && len(f.Seed) != ed25519.SeedSize:
		return nil, fmt.Errorf("softkey: seed of %d bytes: %w", len(f.Seed), tpm.ErrMalformed)
	case f.Sealed != nil:
		s := f.Sealed
		if s.KDF != kdfArgon2id || len(s.Salt) < 16 || len(s.Nonce) != chacha20poly1305.NonceSizeX ||
			s.Time == 0 || s.Time > maxKDFTime || s.MemoryKiB < 8*uint32(s.Threads) || s.MemoryKiB > maxKDFMemoryKiB ||
			s.Threads == 0 || s.Threads > maxKDFThreads ||
			len(s.Ciphertext) != ed25519.SeedSize+chacha20poly1305.Overhead {
			return nil, fmt.Errorf("softkey: sealing parameters out of range: %w", tpm.ErrMalformed)
		}
	}
	return &f, nil
}

// Unmarshal opens key file contents. A sealed file needs its passphrase
// (else tpm.ErrNeedPassphrase; a wrong one gives tpm.ErrWrongPassphrase);
// a passphrase given for an unsealed file is ignored.
func Unmarshal(data, passphrase []byte) (*Key, error) {
	f, err := decodeFile(data)
	if err != nil {
		return nil, err
	}
	if f.Sealed == nil {
		return FromSeed(f.Seed)
	}
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("softkey: %w", tpm.ErrNeedPassphrase)
	}
	s := f.Sealed
	ct := s.Ciphertext
	s.Ciphertext = nil
	ad, err := canon.Marshal(f)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(deriveKey(passphrase, s))
	if err != nil {
		return nil, err
	}
	seed, err := aead.Open(nil, s.Nonce, ct, ad)
	if err != nil {
		return nil, fmt.Errorf("softkey: %w", tpm.ErrWrongPassphrase)
	}
	return FromSeed(seed)
}

// ErrPermissions: a key file can be read by others than its owner.
var ErrPermissions = errors.New("key file is readable by group or others")

// Save writes the key file at path with mode 0600, durably: a temporary
// file is written and synced, then renamed over path, and the directory is
// synced. An existing file at path is replaced.
func Save(path string, k *Key, passphrase []byte) error {
	data, err := k.Marshal(passphrase)
	if err != nil {
		return fmt.Errorf("softkey: save %s: %w", path, err)
	}
	return atomicfile.Write(path, data, 0o600)
}

// Load reads and opens the key file at path. It refuses a file that group
// or others may read (ErrPermissions), as ssh does.
func Load(path string, passphrase []byte) (*Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("softkey: load: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("softkey: load %s: mode %v: %w (run chmod 600 %s)", path, st.Mode().Perm(), ErrPermissions, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("softkey: load: %w", err)
	}
	k, err := Unmarshal(data, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return k, nil
}
