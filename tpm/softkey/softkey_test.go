package softkey

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/tpm"
	"blocktree.dev/bt/tpm/keytest"
)

// cheap KDF costs keep the tests fast; the format is the same.
var cheap = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

func newTestKey(t *testing.T) *Key {
	t.Helper()
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestConformance(t *testing.T) {
	keytest.Run(t, func(t *testing.T) tpm.Key { return newTestKey(t) })
}

func TestMarshalRoundTrip(t *testing.T) {
	k := newTestKey(t)
	for _, tc := range []struct {
		name       string
		passphrase []byte
	}{
		{"clear", nil},
		{"sealed", []byte("correct horse battery staple")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data, err := k.MarshalWithKDF(tc.passphrase, cheap)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(data, k.priv.Seed()) != (tc.passphrase == nil) {
				t.Fatalf("seed in the clear: %v, want %v", !(tc.passphrase == nil), tc.passphrase == nil)
			}
			got, err := Unmarshal(data, tc.passphrase)
			if err != nil {
				t.Fatal(err)
			}
			if !got.PublicKey().Equals(k.PublicKey()) {
				t.Fatal("public key changed across Marshal/Unmarshal")
			}
			sealedGot, err := Sealed(data)
			if err != nil || sealedGot != (tc.passphrase != nil) {
				t.Fatalf("Sealed = %v, %v", sealedGot, err)
			}
		})
	}
}

func TestUnmarshalErrors(t *testing.T) {
	k := newTestKey(t)
	sealedData, err := k.MarshalWithKDF([]byte("pw"), cheap)
	if err != nil {
		t.Fatal(err)
	}
	clear, _ := k.Marshal(nil)
	v2, _ := canon.Marshal(map[string]any{"v": 2, "alg": "ed25519", "seed": make([]byte, 32)})
	flipped := bytes.Clone(sealedData)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name       string
		data, pass []byte
		want       error
	}{
		{"wrong passphrase", sealedData, []byte("wrong"), tpm.ErrWrongPassphrase},
		{"no passphrase", sealedData, nil, tpm.ErrNeedPassphrase},
		{"tampered ciphertext", flipped, []byte("pw"), tpm.ErrWrongPassphrase},
		{"unknown version", v2, nil, tpm.ErrUnknownVersion},
		{"empty", nil, nil, tpm.ErrMalformed},
		{"garbage", []byte("not a key"), nil, tpm.ErrMalformed},
		{"trailing bytes", append(bytes.Clone(clear), 0), nil, tpm.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unmarshal(tc.data, tc.pass)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Unmarshal: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	k := newTestKey(t)
	if err := Save(path, k, nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	got, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !got.PublicKey().Equals(k.PublicKey()) {
		t.Fatal("loaded another key")
	}
	os.Chmod(path, 0o644)
	if _, err := Load(path, nil); !errors.Is(err, ErrPermissions) {
		t.Fatalf("Load of a 0644 key file: %v, want ErrPermissions", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.key"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v", err)
	}
}

// Frozen key files of format version 1; every build must still open them.
// The sealed one's passphrase is "blocktree".
func TestFrozenKeyFiles(t *testing.T) {
	want, err := os.ReadFile("testdata/key-v1.peerid")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ file, pass string }{
		{"testdata/key-v1-clear.cbor", ""},
		{"testdata/key-v1-sealed.cbor", "blocktree"},
	} {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			k, err := Unmarshal(data, []byte(tc.pass))
			if err != nil {
				t.Fatal(err)
			}
			id, _ := peer.IDFromPublicKey(k.PublicKey())
			if id.String() != string(bytes.TrimSpace(want)) {
				t.Fatalf("frozen key opened as %s, want %s", id, want)
			}
		})
	}
}

// TestWriteFrozen regenerates the frozen files; run it by hand only when a
// new format version is released: BT_REGEN=1 go test -run TestWriteFrozen.
func TestWriteFrozen(t *testing.T) {
	if os.Getenv("BT_REGEN") == "" {
		t.Skip("regenerates testdata; set BT_REGEN=1")
	}
	seed, _ := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	k, err := FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	clear, _ := k.Marshal(nil)
	sealed, _ := k.MarshalWithKDF([]byte("blocktree"), cheap)
	id, _ := peer.IDFromPublicKey(k.PublicKey())
	os.MkdirAll("testdata", 0o755)
	os.WriteFile("testdata/key-v1-clear.cbor", clear, 0o644)
	os.WriteFile("testdata/key-v1-sealed.cbor", sealed, 0o644)
	os.WriteFile("testdata/key-v1.peerid", []byte(id.String()+"\n"), 0o644)
}

func FuzzUnmarshal(f *testing.F) {
	for _, name := range []string{"testdata/key-v1-clear.cbor", "testdata/key-v1-sealed.cbor"} {
		if data, err := os.ReadFile(name); err == nil {
			f.Add(data, []byte("blocktree"))
		}
	}
	f.Fuzz(func(t *testing.T, data, pass []byte) {
		// Keep the fuzzer fast: try a passphrase only on cheap KDF costs.
		if kf, err := decodeFile(data); err == nil && kf.Sealed != nil && kf.Sealed.MemoryKiB*kf.Sealed.Time > 1024 {
			pass = nil
		}
		k, err := Unmarshal(data, pass)
		if err != nil {
			return
		}
		// Whatever opens must be a usable key.
		if _, err := k.Sign(t.Context(), []byte("x")); err != nil {
			t.Fatal(err)
		}
	})
}
