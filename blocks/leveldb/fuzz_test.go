package leveldb

import "testing"

// FuzzParseRecord: an index record read from disk never panics the
// decoder, and what it accepts has a known kind.
func FuzzParseRecord(f *testing.F) {
	f.Add([]byte{formatVersion, recordInline, 3, 'a', 'b', 'c'})
	f.Add([]byte{formatVersion, recordFile, 0x80, 0x80, 0x10})
	f.Fuzz(func(t *testing.T, rec []byte) {
		kind, _, inline, err := parseRecord(rec)
		if err != nil {
			return
		}
		if kind != recordInline && kind != recordFile {
			t.Fatalf("accepted kind %d", kind)
		}
		if kind == recordFile && inline != nil {
			t.Fatal("a file record with inline bytes")
		}
	})
}
