package tpm2key_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"blocktree.dev/bt/internal/canon"
	"blocktree.dev/bt/tpm/swtpmtest"
	"blocktree.dev/bt/tpm/tpm2key"
)

// The frozen example of blob format version 1: a swtpm state, a key blob
// created in it, and the key's public half. Released formats never change,
// so these files never change either; every build must load them.
//
// To make them again (only ever for a new format version, into new files):
//
//	go test ./tpm/tpm2key -run TestFrozenV1 -args -regen
var regen = flag.Bool("regen", false, "rewrite the frozen v1 example and fuzz seeds under testdata (needs swtpm)")

const (
	frozenState  = "testdata/swtpm-v1"       // tpm2-00.permall
	frozenBlob   = "testdata/blob-v1.cbor"   // Blob.Encode()
	frozenPubKey = "testdata/blob-v1.pubkey" // crypto.MarshalPublicKey
	frozenPeerID = "testdata/blob-v1.peerid" // peer.ID text
	fuzzSeeds    = "testdata/fuzz/FuzzDecodeBlob"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readFileErr(name string) ([]byte, error) { return os.ReadFile(name) }

// TestFrozenV1 starts swtpm on a copy of the frozen state, loads the frozen
// blob, and checks that the key is the frozen one and signs.
func TestFrozenV1(t *testing.T) {
	if *regen {
		regenerate(t)
	}
	blob := readFile(t, frozenBlob)
	wantPub, err := crypto.UnmarshalPublicKey(readFile(t, frozenPubKey))
	if err != nil {
		t.Fatal(err)
	}
	wantID := strings.TrimSpace(string(readFile(t, frozenPeerID)))

	sim := swtpmtest.StartWithState(t, frozenState)
	tp := openTPM(t, sim)
	k, err := tp.Load(testCtx(t), blob)
	if err != nil {
		t.Fatalf("Load(frozen blob) in the frozen TPM: %v", err)
	}
	defer k.Close()
	if !k.PublicKey().Equals(wantPub) {
		t.Fatal("the frozen blob loads as another public key")
	}
	id, err := peer.IDFromPublicKey(k.PublicKey())
	if err != nil || id.String() != wantID {
		t.Fatalf("peer ID %v (%v), want %s", id, err, wantID)
	}
	msg := []byte("frozen v1")
	mustVerify(t, wantPub, msg, mustSign(t, k, msg))
}

// TestFrozenV1Offline reads the frozen blob without a TPM: it decodes, it is
// canonical, and its public key is the frozen one.
func TestFrozenV1Offline(t *testing.T) {
	blob := readFile(t, frozenBlob)
	b, err := tpm2key.DecodeBlob(blob)
	if err != nil {
		t.Fatalf("DecodeBlob(frozen): %v", err)
	}
	if !bytes.Equal(encode(t, b), blob) {
		t.Fatal("the frozen blob does not re-encode to itself")
	}
	pub, err := b.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	want, err := crypto.UnmarshalPublicKey(readFile(t, frozenPubKey))
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equals(want) {
		t.Fatal("the frozen blob holds another public key")
	}
	if fi, err := os.Stat(filepath.Join(frozenState, "tpm2-00.permall")); err != nil || fi.Size() > 16<<10 {
		t.Fatalf("frozen swtpm state: %v (want one small tpm2-00.permall)", err)
	}
}

// regenerate makes a new TPM, creates a key in it, and writes the frozen
// files and the fuzz seeds.
func regenerate(t *testing.T) {
	sim := swtpmtest.Start(t)
	tp := openTPM(t, sim)
	k, blob, err := tp.Create(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.MarshalPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(k.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	tp.Close()
	sim.Stop()

	if err := os.MkdirAll(frozenState, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(frozenState, "tpm2-00.permall"), readFile(t, filepath.Join(sim.StateDir(), "tpm2-00.permall")))
	write(frozenBlob, blob)
	write(frozenPubKey, pub)
	write(frozenPeerID, []byte(id.String()+"\n"))

	if err := os.MkdirAll(fuzzSeeds, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := tpm2key.DecodeBlob(blob)
	if err != nil {
		t.Fatal(err)
	}
	v2, _ := canon.Marshal(map[string]any{"v": 2, "pub": b.Public})
	seeds := map[string][]byte{
		"valid":     blob,
		"truncated": blob[:len(blob)/2],
		"trailing":  append(bytes.Clone(blob), 0),
		"v2":        v2,
		"garbage":   []byte("garbage"),
		"empty":     {},
	}
	for name, data := range seeds {
		write(filepath.Join(fuzzSeeds, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data))
	}
	t.Logf("wrote %s, %s, %s, %s and %d fuzz seeds", frozenState, frozenBlob, frozenPubKey, frozenPeerID, len(seeds))
}
