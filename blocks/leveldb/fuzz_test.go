package leveldb

import (
	"bytes"
	"testing"

	"blocktree.dev/bt/blocks"
)

// FuzzParseRecord: an index record read from disk (version 1 or 2; kind
// inline, file or pack) never panics the decoder; what it accepts has a
// known version and kind, an inline record holds exactly its size in
// bytes, and re-encoding an accepted version-2 record gives the same bytes.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte{recordV1, recordInline, 3, 'a', 'b', 'c'})
	f.Add([]byte{recordV1, recordFile, 0x80, 0x80, 0x10})
	f.Add(appendRecord(nil, record{kind: recordInline, putAt: 1_900_000_000_000_000_000, size: 3, inline: []byte("abc")}))
	f.Add(appendRecord(nil, record{kind: recordFile, putAt: 42, size: 1 << 20}))
	f.Add([]byte{recordV2, recordFile, 0, 0, 0, 0, 0, 0, 0})
	f.Add(appendRecord(nil, record{kind: recordPack, putAt: 7, size: 256 << 10, pack: 3, off: 1 << 30}))
	f.Add(appendRecord(nil, record{kind: recordPack, putAt: 7, size: 0, pack: 1<<32 - 1, off: 1<<63 - 1}))
	f.Add([]byte{recordV1, recordPack, 1, 1, 1})
	f.Add([]byte{recordV2, recordPack, 0, 0, 0, 0, 0, 0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x10, 0})
	f.Fuzz(func(t *testing.T, rec []byte) {
		r, err := parseRecord(rec)
		if err != nil {
			return
		}
		if r.version != recordV1 && r.version != recordV2 {
			t.Fatalf("accepted version %d", r.version)
		}
		if r.kind != recordInline && r.kind != recordFile && r.kind != recordPack {
			t.Fatalf("accepted kind %d", r.kind)
		}
		if r.kind != recordInline && r.inline != nil {
			t.Fatal("a file or pack record with inline bytes")
		}
		if r.kind == recordPack && (r.version != recordV2 || r.off < 0) {
			t.Fatalf("accepted pack record %+v", r)
		}
		if r.kind != recordPack && (r.pack != 0 || r.off != 0) {
			t.Fatalf("a location in a record of kind %d", r.kind)
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
			if r2, err := parseRecord(enc); err != nil || r2.size != r.size || r2.putAt != r.putAt || !bytes.Equal(r2.inline, r.inline) || r2.pack != r.pack || r2.off != r.off {
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

// FuzzPackEntry: a pack entry header read from disk never panics its
// decoder; an accepted header is within bounds and is exactly the encoding
// of what it decoded to, so a pack is walked the same way by every reader.
func FuzzPackEntry(f *testing.F) {
	c := blocks.Sum([]byte("x"))
	f.Add(appendEntryHeader(nil, c, 3))
	f.Add(append(appendEntryHeader(nil, c, blocks.MaxBlockSize), "data"...))
	h := appendEntryHeader(nil, c, 0)
	h[len(h)-1] ^= 1 // bad CRC
	f.Add(h)
	f.Add([]byte("BTpk\x01\x00\x00\x00\x00\x00"))
	f.Add([]byte("BTpk\x02\x24\x00\x10\x00\x00"))
	f.Add(appendEntryHeader(nil, c, 1)[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		c, size, hl, err := parseEntryHeader(b)
		if err != nil {
			return
		}
		if size > blocks.MaxBlockSize || hl > len(b) || hl > maxPackHeader || hl != entryHeaderLen(c) {
			t.Fatalf("accepted size %d, header %d of %d bytes", size, hl, len(b))
		}
		if enc := appendEntryHeader(nil, c, int(size)); !bytes.Equal(enc, b[:hl]) {
			t.Fatalf("header %x decoded to %s %d, which encodes as %x", b[:hl], c, size, enc)
		}
	})
}
