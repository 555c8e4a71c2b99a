package p2p

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"

	"blocktree.dev/bt/caps"
	"blocktree.dev/bt/internal/canon"
)

// Fuzz targets for every decoder of this package. Seed corpora live in
// testdata/fuzz/<Name>/; the frozen examples are added as seeds too.

func frozenSeed(f *testing.F, name string) []byte {
	f.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		f.Fatal(err)
	}
	return b
}

// FuzzDecodeRecord: DecodeRecord never panics, and what it accepts is
// canonical: the record's encoding is the input, and it decodes again to
// the same record.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(frozenSeed(f, "record-v1.cbor"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRecord(data)
		if err != nil {
			return
		}
		if !bytes.Equal(r.Marshal(), data) {
			t.Fatalf("accepted input differs from the record's encoding")
		}
		r2, err := DecodeRecord(r.Marshal())
		if err != nil || r2.Path != r.Path || r2.Peer != r.Peer || r2.Seq != r.Seq || !r2.Expiry.Equal(r.Expiry) || len(r2.Addrs) != len(r.Addrs) {
			t.Fatalf("re-decode: %+v, %v", r2, err)
		}
		var b recordBody
		if err := canon.Unmarshal(r.body, &b); err != nil || b.Path != r.Path.String() {
			t.Fatalf("body does not re-decode: %v", err)
		}
	})
}

// FuzzValidate: the DHT validator never panics on any key and value, and
// accepts only values that decode.
func FuzzValidate(f *testing.F) {
	rec := frozenSeed(f, "record-v1.cbor")
	r, err := DecodeRecord(rec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(RecordKey(r.Path), rec)
	f.Add("/bt/", rec)
	f.Add("/pk/x", []byte{0xa0})
	clock := func() time.Time { return frozenT0 }
	v := NewValidator(caps.NewVerifier(caps.WithClock(clock)), clock)
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		got, err := v.Check(key, value)
		if err != nil {
			return
		}
		if RecordKey(got.Path) != key {
			t.Fatalf("accepted a record for %s under key %q", got.Path, key)
		}
		if _, err := DecodeRecord(value); err != nil {
			t.Fatalf("accepted a value that does not decode: %v", err)
		}
		if _, err := v.Select(key, [][]byte{value, value}); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzDecodeProof: decodeProof never panics, and what it accepts
// re-encodes to the input.
func FuzzDecodeProof(f *testing.F) {
	f.Add(frozenSeed(f, "proof-v1.cbor"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := decodeProof(data)
		if err != nil {
			return
		}
		again, err := canon.Marshal(&wireProof{V: ProofVersion, Path: p.Path.String(), HostCert: p.HostCert.Marshal(), Writecap: p.Writecap.Marshal()})
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted proof does not re-encode to the input: %v", err)
		}
	})
}

// FuzzAuthStream: what the auth handler does with the bytes of a stream —
// read a frame, verify the proof in it against a connection key — never
// panics, and accepts only the frozen proof's own host key.
func FuzzAuthStream(f *testing.F) {
	proof := frozenSeed(f, "proof-v1.cbor")
	id := frozenIdentity(f)
	frame := func(b []byte) []byte { return append(binary.AppendUvarint(nil, uint64(len(b))), b...) }
	f.Add(frame(proof))
	f.Add([]byte{0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	clock := func() time.Time { return frozenT0 }
	v := caps.NewVerifier(caps.WithClock(clock))
	certs := newCertCache()
	remote := id.HostKey.GetPublic()
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := readFrame(bufio.NewReader(bytes.NewReader(data)), MaxProofSize)
		if err != nil {
			return
		}
		p, _, err := verifyProof(certs, v, remote, b, frozenT0)
		if err != nil {
			return
		}
		if p != id.Path {
			t.Fatalf("verified a proof for %s with the frozen host key", p)
		}
	})
}
