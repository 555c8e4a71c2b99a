package leveldb

import (
	"bytes"
	"testing"

	"blocktree.dev/bt/blocks"
)

// FuzzParseRecord: an index record read from disk (version 1 or 2) never
// panics the decoder; what it accepts has a known version and kind, an
// inline record holds exactly its size in bytes, and re-encoding an
// accepted version-2 record gives the same bytes.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte{recordV1, recordInline, 3, 'a', 'b', 'c'})
	f.Add([]byte{recordV1, recordFile, 0x80, 0x80, 0x10})
	f.Add(appendRecord(nil, record{kind: recordInline, putAt: 1_900_000_000_000_000_000, size: 3, inline: []byte("abc")}))
	f.Add(appendRecord(nil, record{kind: recordFile, putAt: 42, size: 1 << 20}))
	f.Add([]byte{recordV2, recordFile, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, rec []byte) {
		r, err := parseRecord(rec)
		if err != nil {
			return
		}
		if r.version != recordV1 && r.version != recordV2 {
			t.Fatalf("accepted version %d", r.version)
		}
		if r.kind != recordInline && r.kind != recordFile {
			t.Fatalf("accepted kind %d", r.kind)
		}
		if r.kind == recordFile && r.inline != nil {
			t.Fatal("a file record with inline bytes")
		}
		if r.kind == recordInline && uint64(len(r.inline)) != r.size {
			t.Fatalf("inline record of size %d holds %d bytes", r.size, len(r.inline))
		}
		if r.version == recordV1 && r.putAt != 0 {
			t.Fatal("a version-1 record with a time")
		}
		enc := appendRecord(nil, r)
		if r.version == recordV2 && !bytes.Equal(enc, rec) {
			// Only a non-minimal uvarint size may differ.
			if r2, err := parseRecord(enc); err != nil || r2.size != r.size || r2.putAt != r.putAt || !bytes.Equal(r2.inline, r.inline) {
				t.Fatalf("re-encoding %x gave %x (%v)", rec, enc, err)
			}
		}
	})
}

// FuzzPinKey: a pin key or reference count read from disk never panics its
// decoder, and an accepted pin key is the encoding of what it decoded to.
func FuzzPinKey(f *testing.F) {
	c := blocks.Sum([]byte("x")).KeyString()
	f.Add(append(pinPrefix("photos"), c...), []byte{1})
	f.Add(append(pinPrefix("日本/a b"), c...), []byte{0x80, 0x01})
	f.Add([]byte("p/\x00"), []byte{0})
	f.Add([]byte("p/a\x00\x01\x55\x12\x20"), []byte{0x80})
	f.Fuzz(func(t *testing.T, key, ref []byte) {
		if n, err := parseRef(ref); err == nil && n == 0 {
			t.Fatal("accepted a zero reference count")
		}
		name, c, err := splitPinKey(key)
		if err != nil {
			return
		}
		if !validName(name) {
			t.Fatalf("accepted bad name %q", name)
		}
		if enc := append(pinPrefix(name), c.KeyString()...); !bytes.Equal(enc, key) {
			t.Fatalf("key %x decoded to %q %s, which encodes as %x", key, name, c, enc)
		}
	})
}
